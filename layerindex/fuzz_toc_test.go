package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/internal/tartest"
)

// tocEncoder is shared: building one per fuzz input cost most of the
// input's time (EncodeAll is safe for concurrent use).
var tocEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// tocBlob assembles a TOC layer from file data and a TOC JSON: eStargz
// (the TOC member and the footer after data) or zstd:chunked (the
// compressed TOC and a footer in skippable frames), with the annotations
// that match. It is what a hostile manifest and layer can present.
func tocBlob(tb testing.TB, zstdChunked bool, data, js []byte) ([]byte, map[string]string) {
	var b bytes.Buffer
	b.Write(data)
	off := int64(len(data))
	if !zstdChunked {
		zw := gzip.NewWriter(&b)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: estargzTOCName, Size: int64(len(js))})
		tw.Write(js)
		tw.Close()
		zw.Close()
		// The footer: an empty gzip member with the STARGZ extra field
		// and one empty stored block, 51 bytes as stargz's writer makes
		// it (gzip.Writer ends an empty member with a fixed block: 48
		// bytes, which is no footer, and no TOC of this helper loaded).
		b.Write([]byte{0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, 'S', 'G', 22, 0})
		b.WriteString(fmt.Sprintf("%016xSTARGZ", off))
		b.Write([]byte{1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
		return b.Bytes(), map[string]string{annotationStargzTOC: digest.FromBytes(js).String()}
	}
	z := bytes.NewBuffer(tocEncoder.EncodeAll(js, nil))
	frame := func(p []byte) {
		var h [8]byte
		binary.LittleEndian.PutUint32(h[:], 0x184D2A50)
		binary.LittleEndian.PutUint32(h[4:], uint32(len(p)))
		b.Write(h[:])
		b.Write(p)
	}
	frame(z.Bytes())
	foot := make([]byte, 40)
	le := binary.LittleEndian
	le.PutUint64(foot, uint64(off+8))
	le.PutUint64(foot[8:], uint64(z.Len()))
	le.PutUint64(foot[16:], uint64(len(js)))
	le.PutUint64(foot[24:], zstdChunkedTypeTOC)
	copy(foot[32:], zstdChunkedMagic)
	frame(foot)
	return b.Bytes(), map[string]string{
		zstdChunkedChecksum[0]: digest.FromBytes(z.Bytes()).String(),
		zstdChunkedPosition[0]: fmt.Sprintf("%d:%d:%d:1", off+8, z.Len(), len(js)),
	}
}

// splitTOC takes a layer written by stargz-snapshotter's writer apart into
// its file data and TOC JSON, for seeds.
func splitTOC(tb testing.TB, zstdChunked bool, l tartest.TOCLayer) (data, js []byte) {
	if !zstdChunked {
		off, err := parseEstargzFooter(l.Blob[len(l.Blob)-estargzFooterSize:])
		if err != nil {
			tb.Fatal(err)
		}
		_, _, js, err := parseEstargzTOCMember(l.Blob[off : len(l.Blob)-estargzFooterSize])
		if err != nil {
			tb.Fatal(err)
		}
		return l.Blob[:off], js
	}
	_, pos, _ := zstdChunkedAnnotations(l.Annotations)
	p, err := parseZstdChunkedPos(pos)
	if err != nil {
		tb.Fatal(err)
	}
	js, err = decodeZstdTOC(l.Blob[p.off:p.off+p.n], p.raw)
	if err != nil {
		tb.Fatal(err)
	}
	return l.Blob[:p.off-8], js
}

// FuzzTOC loads arbitrary TOCs over arbitrary file data (with annotations
// that match: the TOC's digest proves nothing about its sense) and reads
// every file. Nothing may panic; a refused TOC wraps ErrBadTOC,
// ErrUnsafePath or ErrFormat; a loaded one has contiguous chunks inside
// the data, and a read either fails or returns bytes whose chunks match
// their digests.
func FuzzTOC(f *testing.F) {
	tarb := tartest.Tar(f,
		tartest.Dir("d", 0o755),
		tartest.File("d/f", "hello", 0o644, tartest.Xattr("user.a", "b")),
		tartest.FileBytes("big", testData(3, 5000), 0o600),
		tartest.Hardlink("h", "d/f"),
		tartest.Symlink("s", "d/f"),
		tartest.Whiteout("gone"),
	)
	for _, zc := range []bool{false, true} {
		var l tartest.TOCLayer
		if zc {
			l = tartest.ZstdChunked(f, tarb, 1024)
		} else {
			l = tartest.EStargz(f, tarb, 1024)
		}
		data, js := splitTOC(f, zc, l)
		f.Add(zc, data, js)
	}
	f.Add(false, []byte("x"), []byte(`{"version":1,"entries":[{"name":"a","type":"reg","size":3,"offset":0,"chunkDigest":"sha256:00"}]}`))
	f.Add(true, []byte{}, []byte(`{"version":1,"entries":[{"name":"z","type":"reg","size":9,"chunkType":"zeros"}]}`))
	f.Fuzz(func(t *testing.T, zc bool, data, js []byte) {
		blob, ann := tocBlob(t, zc, data, js)
		tf := TOCFormatOf(&gzipFormat, ann)
		if zc {
			tf = TOCFormatOf(&zstdFormat, ann)
		}
		if tf == nil {
			t.Fatal("annotations not recognised")
		}
		ix, err := tf.Load(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob), "", ann)
		if err != nil {
			if !errors.Is(err, ErrBadTOC) && !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrFormat) {
				t.Fatalf("error wraps no TOC sentinel: %v", err)
			}
			return
		}
		var out int64
		for _, c := range ix.TOC.Chunks {
			if c.Out != out || c.Len <= 0 {
				t.Fatalf("chunk at %d+%d, want at %d", c.Out, c.Len, out)
			}
			if !c.Zeros && (c.In < 0 || c.InEnd <= c.In || c.InEnd > int64(len(blob))) {
				t.Fatalf("chunk reads compressed bytes %d-%d of %d", c.In, c.InEnd, len(blob))
			}
			out += c.Len
		}
		if out != ix.TOC.Size || out != ix.UncompressedSize {
			t.Fatalf("chunks cover %d, stream is %d", out, ix.TOC.Size)
		}
		cache := NewSpanCache(1 << 20)
		defer cache.Close()
		r := ix.TOC.NewReaderAt(bytes.NewReader(blob), cache, "k", ChunkCache{})
		for i := range ix.Entries {
			e := &ix.Entries[i]
			if e.Kind != KindReg || e.Size > 1<<20 {
				continue
			}
			p := make([]byte, e.Size)
			if _, err := Content(r, e).ReadAt(p, 0); err != nil && err != io.EOF {
				continue
			}
			// Served: every chunk of it matches its digest.
			for _, c := range ix.TOC.Chunks {
				if c.Out >= e.Offset && c.Out+c.Len <= e.Offset+e.Size && !c.Zeros {
					if sha256.Sum256(p[c.Out-e.Offset:c.Out-e.Offset+c.Len]) != c.Sum {
						t.Fatalf("%s: served bytes that do not match chunk digest", e.Name)
					}
				}
			}
		}
	})
}

// FuzzTOCFooter parses arbitrary eStargz and zstd:chunked footers and
// zstd:chunked position annotations: nothing may panic, and what parses
// is in range.
func FuzzTOCFooter(f *testing.F) {
	blob, ann := tocBlob(f, false, []byte("data"), []byte("{}"))
	f.Add(blob[len(blob)-estargzFooterSize:], "4:2:2:1")
	blob, ann = tocBlob(f, true, []byte("data"), []byte("{}"))
	f.Add(blob[len(blob)-48:], ann[zstdChunkedPosition[0]])
	f.Add(make([]byte, 64), "1:2:3")
	f.Fuzz(func(t *testing.T, p []byte, pos string) {
		if off, err := parseEstargzFooter(p); err == nil && off < 0 {
			t.Fatalf("negative TOC offset %d", off)
		} else if err != nil && !errors.Is(err, ErrBadTOC) {
			t.Fatalf("error is not ErrBadTOC: %v", err)
		}
		zp, err := parseZstdChunkedPos(pos)
		if err != nil {
			if !errors.Is(err, ErrBadTOC) {
				t.Fatalf("error is not ErrBadTOC: %v", err)
			}
			return
		}
		if zp.off < 0 || zp.n < 0 || zp.raw < 0 {
			t.Fatalf("negative position %+v", zp)
		}
		if err := checkZstdChunkedFooter(p, zp); err != nil && !errors.Is(err, ErrBadTOC) {
			t.Fatalf("error is not ErrBadTOC: %v", err)
		}
	})
}
