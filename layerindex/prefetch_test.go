package layerindex

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
)

// gzipSpans makes size bytes of pseudo-random text over letters letters
// (seeded), compresses it as one gzip member, and indexes it with
// checkpoints span bytes apart.
func gzipSpans(t *testing.T, size, letters int, seed uint64, span int64) (data, blob []byte, cps *Checkpoints) {
	t.Helper()
	data = make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range data {
		data[i] = byte(r.IntN(letters) + 'a')
	}
	blob = tartest.Compress(t, tartest.Gzip, data)
	ir, err := NewIndexingReader(Gzip, bytes.NewReader(blob), span)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, ir); err != nil {
		t.Fatal(err)
	}
	return data, blob, ir.Checkpoints()
}

// A sequential reader in kernel-sized requests gets the right bytes, and
// read-ahead never decodes a span twice.
func TestSequentialReadAhead(t *testing.T) {
	data, blob, cps := gzipSpans(t, 6<<20, 8, 3, 256<<10)
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
	// Close waits for a read-ahead still in flight; then count decodes.
	cache.Close()
	if n := ra.(*spanReaderAt).prefetching.Load(); n != 0 {
		t.Errorf("%d read-ahead decodes still counted after Close", n)
	}
	if _, misses, _ := cache.Stats(); misses > int64(cps.NumSpans()) {
		t.Errorf("%d decodes for %d spans: a span was decoded twice", misses, cps.NumSpans())
	}
}

// A thinned index (what index --push publishes) has deflate checkpoints
// at least minSpan apart, keeps every windowless one, and reads back the
// same bytes, also after a marshal round trip.
func TestThinned(t *testing.T) {
	data, blob, cps := gzipSpans(t, 3<<20, 16, 5, 64<<10)
	ix := &Index{Compression: Gzip, CompressedSize: int64(len(blob)), UncompressedSize: int64(len(data)), Checkpoints: cps}
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

// Reads of every size at random offsets, from several goroutines, through
// a cache too small for the layer (so spans are evicted and their buffers
// recycled while prefix readers may hold them), return the right bytes:
// the prefix path (reads returning before their span is decoded) must
// never hand out bytes of another span or of a recycled buffer.
func TestRandomReadsPrefix(t *testing.T) {
	data, blob, cps := gzipSpans(t, 6<<20, 12, 7, 256<<10)
	var progressive int
	for i := range cps.Points {
		if cps.progressive(i) {
			progressive++
		}
	}
	if last := len(cps.Points) - 1; cps.progressive(last) || progressive != last {
		t.Fatalf("%d of %d spans progressive; want all but the last (which ends at the member's CRC)", progressive, len(cps.Points))
	}
	cache := NewSpanCache(1 << 20) // about 3 spans
	ra := cps.NewReaderAt(bytes.NewReader(blob), cache, "k")
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			rr := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, 700<<10)
			for range 150 {
				n := 1 + rr.IntN(len(buf))
				off := rr.Int64N(int64(len(data)))
				m, err := ra.ReadAt(buf[:n], off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if want := data[off:min(off+int64(n), int64(len(data)))]; !bytes.Equal(buf[:m], want) {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d): wrong bytes", n, off)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// One read that follows another is not a stream (a tar header check is
// followed by the file's first read, which can be 1 MiB); a third
// contiguous read after a run of seqRun is.
func TestSequentialDetection(t *testing.T) {
	r := &spanReaderAt{}
	if r.sequential(0, 512) || r.sequential(512, 1<<20) {
		t.Fatal("a header check and one large read count as streaming")
	}
	if !r.sequential(512+1<<20, 128<<10) {
		t.Fatal("a third contiguous read after a 1 MiB run is not streaming")
	}
	if r.sequential(5<<20, 1<<20) {
		t.Fatal("a read elsewhere is streaming")
	}
}

// The cache owns its goroutines: Close waits for every decode and
// read-ahead it started, and reads after Close still work, with none
// started.
func TestSpanCacheCloseWaits(t *testing.T) {
	data, blob, cps := gzipSpans(t, 6<<20, 8, 3, 256<<10)
	before := runtime.NumGoroutine()
	cache := NewSpanCache(64 << 20)
	ra := cps.NewReaderAt(bytes.NewReader(blob), cache, "k")
	got := make([]byte, 1<<20)
	for off := 0; off < 2<<20; off += 128 << 10 { // sequential: starts read-ahead
		if _, err := ra.ReadAt(got[:128<<10], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	cache.Close()
	if n := settledGoroutines(before); n > before {
		t.Errorf("%d goroutines after Close, %d before the cache:\n%s", n, before, goroutineDump())
	}
	off := int64(len(data) - len(got))
	if _, err := ra.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:]) {
		t.Fatalf("read after Close: %v", err)
	}
	if n := settledGoroutines(before); n > before {
		t.Errorf("%d goroutines after a read on a closed cache, %d before:\n%s", n, before, goroutineDump())
	}
}

// settledGoroutines is the goroutine count once it is at most want, or
// after 2 s. Close returns when the decodes have called Done, which is a
// moment before their goroutines have exited (a deferred Done runs first):
// a leak stays, a goroutine on its way out does not.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutineDump is every goroutine's stack, for a leak's message.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
