package layerindex

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzIndexingReader feeds arbitrary bytes to the indexing pass as gzip or
// zstd with a small span. Nothing may panic; errors must wrap ErrCorrupt,
// or ErrUnsupported for a valid stream over a limit (a zstd window); and
// when indexing succeeds, every span must decode (through DecodeSpan
// and through a cached and an uncached ReaderAt) to exactly the bytes the
// sequential pass produced.
func FuzzIndexingReader(f *testing.F) {
	data := testData(20, 40<<10)
	small := []byte("hello, hello, hello world\n")
	f.Add(uint8(Gzip), uint16(0), kgzipBytes(f, small, 6))
	f.Add(uint8(Gzip), uint16(1), kgzipBytes(f, data, 6))
	f.Add(uint8(Gzip), uint16(0), kgzipBytes(f, data, 0))
	f.Add(uint8(Gzip), uint16(2), append(kgzipBytes(f, data[:9000], 1), kgzipBytes(f, data[9000:], 9)...))
	f.Add(uint8(Gzip), uint16(0), gzipMember(f, data[:20000], 6, 3000, gzHeaderOpts{extra: []byte("ab"), name: []byte("n"), comment: []byte("c"), hcrc: true}))
	f.Add(uint8(Gzip), uint16(0), append(kgzipBytes(f, small, 6), 0, 0, 0))
	f.Add(uint8(Zstd), uint16(0), zstdFrames(f, [][]byte{small}))
	f.Add(uint8(Zstd), uint16(1), zstdFrames(f, chunks(data, 5000), zstd.WithEncoderCRC(true)))
	f.Add(uint8(Zstd), uint16(0), append(append(skippable(4, 0), zstdFrames(f, chunks(data[:9000], 3000))...), skippable(1, 3)...))
	f.Add(uint8(None), uint16(0), small)
	f.Fuzz(func(t *testing.T, comp uint8, spanSel uint16, blob []byte) {
		c := Compression(comp % 3)
		// 512 B to 64 KiB: small enough for many spans in small inputs,
		// large enough that a checkpoint per tiny deflate block (each
		// with its window) cannot blow up memory.
		span := int64(512) << (spanSel % 8)
		out, cps, err := tryIndex(c, blob, span)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error wraps neither ErrCorrupt nor ErrUnsupported: %v", err)
			}
			return
		}
		if cps.UncompressedSize != int64(len(out)) || cps.CompressedSize != int64(len(blob)) {
			t.Fatalf("sizes %d/%d, want %d/%d", cps.CompressedSize, cps.UncompressedSize, len(blob), len(out))
		}
		for i := range cps.NumSpans() {
			start, end := cps.Span(i)
			if start > end || (i > 0 && start == end) {
				t.Fatalf("span %d is [%d,%d)", i, start, end)
			}
			b, err := cps.DecodeSpan(bytes.NewReader(blob), i, nil)
			if err != nil {
				t.Fatalf("span %d of a blob that indexed: %v", i, err)
			}
			if !bytes.Equal(b, out[start:end]) {
				t.Fatalf("span %d differs from the sequential pass", i)
			}
		}
		for _, cache := range []*SpanCache{NewSpanCache(1 << 20), nil} {
			ra := cps.NewReaderAt(bytes.NewReader(blob), cache, "f")
			got := make([]byte, len(out)+1)
			n, err := ra.ReadAt(got, 0)
			if n != len(out) || err != io.EOF || !bytes.Equal(got[:n], out) {
				t.Fatalf("ReadAt of everything: %d bytes, %v", n, err)
			}
		}
	})
}
