package layerindex

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
)

// A sequential reader in kernel-sized requests gets the right bytes, and
// read-ahead never decodes a span twice.
func TestSequentialReadAhead(t *testing.T) {
	data := make([]byte, 6<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.IntN(8) + 'a')
	}
	blob := tartest.Compress(t, tartest.Gzip, data)
	ir, err := NewIndexingReader(Gzip, bytes.NewReader(blob), 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, ir); err != nil {
		t.Fatal(err)
	}
	cps := ir.Checkpoints()
	if cps.NumSpans() < 3 {
		t.Fatalf("only %d spans", cps.NumSpans())
	}
	cache := NewSpanCache(64 << 20)
	ra := cps.NewReaderAt(bytes.NewReader(blob), cache, "k")
	got := make([]byte, len(data))
	for off := 0; off < len(data); off += 128 << 10 {
		end := min(off+128<<10, len(data))
		if _, err := ra.ReadAt(got[off:end], int64(off)); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("sequential read returned wrong bytes")
	}
	// Wait for a read-ahead still in flight, then count decodes.
	for i := 0; ra.(*spanReaderAt).prefetching.Load() > 0 && i < 5000; i++ {
		time.Sleep(time.Millisecond)
	}
	if _, misses, _ := cache.Stats(); misses > int64(cps.NumSpans()) {
		t.Errorf("%d decodes for %d spans: a span was decoded twice", misses, cps.NumSpans())
	}
}

// A thinned index (what index --push publishes) has deflate checkpoints
// at least minSpan apart, keeps every windowless one, and reads back the
// same bytes, also after a marshal round trip.
func TestThinned(t *testing.T) {
	data := make([]byte, 3<<20)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(r.IntN(16) + 'a')
	}
	blob := tartest.Compress(t, tartest.Gzip, data)
	ir, err := NewIndexingReader(Gzip, bytes.NewReader(blob), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, ir); err != nil {
		t.Fatal(err)
	}
	ix := &Index{Compression: Gzip, CompressedSize: int64(len(blob)), UncompressedSize: int64(len(data)), Checkpoints: ir.Checkpoints()}
	const minSpan = 256 << 10
	th := ix.Thinned(minSpan)
	before, after := len(ix.Checkpoints.Points), len(th.Checkpoints.Points)
	if after >= before || after < 3 {
		t.Fatalf("%d checkpoints thinned to %d", before, after)
	}
	for i, p := range th.Checkpoints.Points[1:] {
		if prev := th.Checkpoints.Points[i]; p.Kind == CheckpointDeflate && p.Out-prev.Out < minSpan {
			t.Fatalf("checkpoints %d and %d are %d bytes apart, want >= %d", i, i+1, p.Out-prev.Out, minSpan)
		}
	}
	b, err := th.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Index{th, back} {
		got := make([]byte, len(data))
		if _, err := x.Checkpoints.NewReaderAt(bytes.NewReader(blob), NewSpanCache(8<<20), "t").ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("a thinned index reads back different bytes")
		}
	}
	if len(ix.Checkpoints.Points) != before {
		t.Fatal("Thinned changed the original index")
	}
}
