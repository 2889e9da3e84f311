package tartest

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is a layer encoding.
type Compression string

const (
	Uncompressed Compression = "tar"
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
)

// Compress encodes tarball with c as one gzip member or one zstd frame
// ("tar" or "" returns it unchanged).
func Compress(t testing.TB, c Compression, tarball []byte) []byte {
	t.Helper()
	return CompressMulti(t, c, tarball, 0)
}

// CompressMulti encodes tarball as consecutive gzip members or zstd frames of
// at most chunk input bytes each (chunk <= 0: one member), as pigz
// --independent or parallel zstd writers can produce. Decoders must treat the
// concatenation as one stream.
func CompressMulti(t testing.TB, c Compression, tarball []byte, chunk int) []byte {
	t.Helper()
	if chunk <= 0 {
		chunk = len(tarball) + 1
	}
	var out bytes.Buffer
	for off := 0; off < len(tarball) || off == 0; off += chunk {
		part := tarball[off:min(off+chunk, len(tarball))]
		switch c {
		case Uncompressed, "":
			return append([]byte{}, tarball...)
		case Gzip:
			zw := gzip.NewWriter(&out)
			if _, err := zw.Write(part); err != nil {
				t.Fatalf("tartest: gzip: %v", err)
			}
			if err := zw.Close(); err != nil {
				t.Fatalf("tartest: gzip: %v", err)
			}
		case Zstd:
			zw, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1))
			if err != nil {
				t.Fatalf("tartest: zstd: %v", err)
			}
			if _, err := zw.Write(part); err != nil {
				t.Fatalf("tartest: zstd: %v", err)
			}
			if err := zw.Close(); err != nil {
				t.Fatalf("tartest: zstd: %v", err)
			}
		default:
			t.Fatalf("tartest: unknown compression %q", c)
		}
		if len(tarball) == 0 {
			break
		}
	}
	return out.Bytes()
}

// ZstdSkippable prepends a zstd skippable frame (magic 0x184D2A50) holding
// payload to a zstd stream, as zstd:chunked and seekable-zstd writers do.
func ZstdSkippable(payload, stream []byte) []byte {
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint32(hdr[0:4], 0x184D2A50)
	binary.LittleEndian.PutUint32(hdr[4:8], uint32(len(payload)))
	out := append(hdr, payload...)
	return append(out, stream...)
}

// Decompress decodes a gzip (all members) or zstd (all frames, skippable
// ones skipped) blob.
func Decompress(t testing.TB, c Compression, blob []byte) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatalf("tartest: gunzip: %v", err)
		}
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatalf("tartest: zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return append([]byte{}, blob...)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("tartest: decompress %s: %v", c, err)
	}
	return out
}
