package loader

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

// TestTOCAndBuiltIndexShareSpanCache: one eStargz blob served under its
// TOC and under a built index (--no-toc), through one shared span cache
// (the snapshotter's): TOC chunk i and gzip span i are different bytes of
// one blob, so their keys must differ, or one reader is served the
// other's bytes from the cache.
func TestTOCAndBuiltIndexShareSpanCache(t *testing.T) {
	var big bytes.Buffer
	for i := 0; big.Len() < 3<<20; i++ {
		big.WriteString("line ")
		big.WriteByte(byte('a' + i%26))
		big.WriteString(string(rune('0' + i%10)))
	}
	tb := tartest.Tar(t, tartest.Dir("opt", 0o755), tartest.FileBytes("opt/big", big.Bytes(), 0o644),
		tartest.FileBytes("opt/rnd", pseudoRandom(700<<10), 0o644), tartest.File("etc", "x", 0o644))
	l := tartest.EStargz(t, tb, 128<<10)
	dir := filepath.Join(t.TempDir(), "img")
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "v1", Layers: []tartest.ImageLayer{l.Layer(tartest.Gzip)}})
	src := blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"}

	want := dump(t, load(t, src, Options{Span: 128 << 10}).Tree) // a cache of its own
	shared := layerindex.NewSpanCache(64 << 20)
	t.Cleanup(func() { shared.Close() })
	built := load(t, src, Options{Span: 128 << 10, NoTOC: true, SpanCache: shared})
	toc := load(t, src, Options{Span: 128 << 10, SpanCache: shared})
	if built.Indexes[0].TOC != nil || toc.Indexes[0].TOC == nil {
		t.Fatalf("fixture: want one built and one TOC index (built TOC %v, toc TOC %v)", built.Indexes[0].TOC != nil, toc.Indexes[0].TOC != nil)
	}
	for round := range 2 { // the second round reads from the warm shared cache
		for name, im := range map[string]*Image{"built": built, "toc": toc} {
			if got := dump(t, im.Tree); got != want {
				t.Fatalf("round %d, %s index through the shared span cache:\n%s\nwant\n%s", round, name, got, want)
			}
		}
	}
}

func pseudoRandom(n int) []byte {
	b := make([]byte, n)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
