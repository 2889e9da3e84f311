package layerindex_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/ocimount/ocimount/layerindex"
)

// FuzzBuild feeds arbitrary bytes to Build as a plain tar, as a gzip-wrapped
// tar, and as a gzip and a zstd blob. Build must never panic; when it
// succeeds, every regular entry's content must read exactly Size bytes or
// fail cleanly, Offsets must lie inside the stream, and the Tee must have
// seen exactly the stream that was hashed.
func FuzzBuild(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.tar"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds in testdata/*.tar")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(data)
		zw.Close()
		for _, in := range []struct {
			c    layerindex.Compression
			blob []byte
			tar  []byte // the uncompressed stream when known
		}{
			{layerindex.None, data, data},
			{layerindex.Gzip, gz.Bytes(), data},
			{layerindex.Gzip, data, nil},
			{layerindex.Zstd, data, nil},
		} {
			var tee bytes.Buffer
			ix, err := layerindex.Build(context.Background(), bytes.NewReader(in.blob), in.c, layerindex.Options{Span: 4096, Tee: &tee})
			if err != nil {
				continue
			}
			stream := tee.Bytes()
			if in.tar != nil && !bytes.Equal(stream, in.tar) {
				t.Fatalf("%v: Tee saw %d bytes, want the %d-byte tar", in.c, len(stream), len(in.tar))
			}
			if ix.UncompressedSize != int64(len(stream)) || ix.CompressedSize != int64(len(in.blob)) {
				t.Fatalf("%v: sizes %d/%d, want %d/%d", in.c, ix.CompressedSize, ix.UncompressedSize, len(in.blob), len(stream))
			}
			for i := range ix.Entries {
				e := &ix.Entries[i]
				if e.Offset < 0 || e.Offset > int64(len(stream)) {
					t.Fatalf("%v: %q: Offset %d outside the %d-byte stream", in.c, e.Name, e.Offset, len(stream))
				}
				if e.Kind != layerindex.KindReg {
					continue
				}
				if e.Size < 0 {
					t.Fatalf("%v: %q: negative Size", in.c, e.Name)
				}
				if !e.Sparse && e.Offset+e.Size > int64(len(stream)) {
					t.Fatalf("%v: %q: data [%d,+%d) past the end of the %d-byte stream", in.c, e.Name, e.Offset, e.Size, len(stream))
				}
				// Sparse files can be huge and mostly holes: read the first
				// and the last 64 KiB.
				ra := layerindex.Content(bytes.NewReader(stream), e)
				for _, off := range []int64{0, max(0, e.Size-64<<10)} {
					n := min(e.Size-off, 64<<10)
					buf := make([]byte, n)
					got, err := ra.ReadAt(buf, off)
					if err == nil && int64(got) != n {
						t.Fatalf("%v: %q: ReadAt(%d, %d) = %d bytes and no error", in.c, e.Name, n, off, got)
					}
					if err == io.EOF && int64(got) != n {
						// io.EOF is only fine once all n bytes came back.
						t.Fatalf("%v: %q: ReadAt(%d, %d) = %d, EOF: short read of an indexed entry", in.c, e.Name, n, off, got)
					}
				}
			}
		}
	})
}
