package tartest

import (
	"bytes"
	"io"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
)

// TOCLayer is a layer converted by stargz-snapshotter's own writer
// (github.com/containerd/stargz-snapshotter/estargz), the independent
// producer of eStargz and zstd:chunked layers that ocimount reads.
type TOCLayer struct {
	Blob []byte // the layer blob
	// Tar is the blob decompressed (the writer rewrites the tar: its
	// sha256 is the layer's DiffID).
	Tar []byte
	// Annotations are what the layer descriptor must carry for a reader
	// to find the TOC.
	Annotations map[string]string
}

// Layer is the ImageLayer of l.
func (l TOCLayer) Layer(c Compression) ImageLayer {
	return ImageLayer{Compression: c, Tar: l.Tar, Blob: l.Blob, Annotations: l.Annotations}
}

// EStargz converts a tar stream to eStargz, chunkSize bytes per chunk of
// a large file (0: the writer's 4 MiB).
func EStargz(t testing.TB, tarb []byte, chunkSize int) TOCLayer {
	t.Helper()
	opts := []estargz.Option{}
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	blob := build(t, tarb, opts...)
	l := TOCLayer{Blob: blob.data, Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: blob.toc}}
	l.Tar = Decompress(t, Gzip, l.Blob)
	return l
}

// EStargzPacked is EStargz with small files packed into shared gzip
// members (the writer's min chunk size: entries then carry innerOffset).
func EStargzPacked(t testing.TB, tarb []byte, chunkSize, minChunkSize int) TOCLayer {
	t.Helper()
	opts := []estargz.Option{estargz.WithMinChunkSize(minChunkSize)}
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	blob := build(t, tarb, opts...)
	l := TOCLayer{Blob: blob.data, Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: blob.toc}}
	l.Tar = Decompress(t, Gzip, l.Blob)
	return l
}

// EStargzPrioritized is EStargz with files listed first and marked for
// prefetch (the .prefetch.landmark entry follows them).
func EStargzPrioritized(t testing.TB, tarb []byte, chunkSize int, files ...string) TOCLayer {
	t.Helper()
	opts := []estargz.Option{estargz.WithPrioritizedFiles(files)}
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	blob := build(t, tarb, opts...)
	l := TOCLayer{Blob: blob.data, Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: blob.toc}}
	l.Tar = Decompress(t, Gzip, l.Blob)
	return l
}

// ZstdChunked converts a tar stream to zstd:chunked (the writer's
// annotations are the io.containers.zstd-chunked.* names).
func ZstdChunked(t testing.TB, tarb []byte, chunkSize int) TOCLayer {
	t.Helper()
	ann := map[string]string{}
	opts := []estargz.Option{estargz.WithCompression(zstdChunked{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: ann}, &zstdchunked.Decompressor{}})}
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	blob := build(t, tarb, opts...)
	l := TOCLayer{Blob: blob.data, Annotations: ann}
	l.Tar = Decompress(t, Zstd, l.Blob)
	return l
}

type built struct {
	data []byte
	toc  string
}

func build(t testing.TB, tarb []byte, opts ...estargz.Option) built {
	t.Helper()
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarb), 0, int64(len(tarb))), opts...)
	if err != nil {
		t.Fatalf("tartest: estargz.Build: %v", err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("tartest: estargz.Build: %v", err)
	}
	return built{data: data, toc: b.TOCDigest().String()}
}

// zstdChunked is the compressor and decompressor pair estargz.Build wants.
type zstdChunked struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}
