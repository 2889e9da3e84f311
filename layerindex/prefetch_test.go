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
