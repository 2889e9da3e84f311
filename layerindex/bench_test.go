package layerindex_test

// Benchmarks (run with `go test ./layerindex -run '^$' -bench . -benchtime 5x`):
//
//   - BenchmarkBuild indexes a generated ~64 MiB (uncompressed) gzip layer of
//     ~20k files; BenchmarkBuildBaseline is the floor it is compared with: a
//     plain klauspost gzip decode plus an archive/tar walk of the same bytes
//     (no hashing, no checkpoints). b.SetBytes is the uncompressed size, so
//     MB/s compare directly.
//   - BenchmarkSpanRead* read the same layer through Checkpoints.NewReaderAt,
//     4 KiB at random offsets and 128 KiB sequentially (FUSE's max_read
//     pattern), with and without a SpanCache.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

var benchLayer struct {
	once sync.Once
	tar  []byte // uncompressed
	gz   []byte
	ix   *layerindex.Index
}

// benchGzipLayer returns a deterministic ~64 MiB tar (20k files of 0–6 KiB
// of word-like, compressible text in 400 directories) and its gzip encoding.
func benchGzipLayer(b *testing.B) ([]byte, []byte) {
	b.Helper()
	benchLayer.once.Do(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		words := make([]string, 512)
		for i := range words {
			w := make([]byte, 2+rng.IntN(9))
			for j := range w {
				w[j] = byte('a' + rng.IntN(26))
			}
			words[i] = string(w)
		}
		var entries []tartest.Entry
		var body bytes.Buffer
		total := 0
		for d := 0; total < 64<<20; d++ {
			dir := fmt.Sprintf("usr/share/pkg%03d/sub%02d", d/20, d%20)
			entries = append(entries, tartest.Dir(dir, 0o755))
			for f := 0; f < 50 && total < 64<<20; f++ {
				body.Reset()
				n := rng.IntN(6 << 10)
				for body.Len() < n {
					body.WriteString(words[rng.IntN(len(words))])
					body.WriteByte(" \n"[rng.IntN(2)])
				}
				entries = append(entries, tartest.FileBytes(fmt.Sprintf("%s/file%04d.txt", dir, f), bytes.Clone(body.Bytes()), 0o644))
				total += body.Len()
			}
		}
		benchLayer.tar = tartest.Tar(b, entries...)
		benchLayer.gz = tartest.Compress(b, tartest.Gzip, benchLayer.tar)
	})
	return benchLayer.tar, benchLayer.gz
}

func benchIndex(b *testing.B) (*layerindex.Index, []byte) {
	_, gz := benchGzipLayer(b)
	if benchLayer.ix == nil {
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(gz), layerindex.Gzip, layerindex.Options{})
		if err != nil {
			b.Fatal(err)
		}
		benchLayer.ix = ix
	}
	return benchLayer.ix, gz
}

func BenchmarkBuild(b *testing.B) {
	tarball, gz := benchGzipLayer(b)
	b.SetBytes(int64(len(tarball)))
	b.ReportAllocs()
	var entries int
	for b.Loop() {
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(gz), layerindex.Gzip, layerindex.Options{})
		if err != nil {
			b.Fatal(err)
		}
		entries = len(ix.Entries)
	}
	b.ReportMetric(float64(entries), "entries")
	b.ReportMetric(float64(len(gz))/float64(len(tarball)), "gz-ratio")
}

// BenchmarkBuildBaseline: what any reader of the layer pays at least.
func BenchmarkBuildBaseline(b *testing.B) {
	tarball, gz := benchGzipLayer(b)
	b.SetBytes(int64(len(tarball)))
	b.ReportAllocs()
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			_, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSpanRead(b *testing.B, cache *layerindex.SpanCache, size int, sequential bool) {
	ix, gz := benchIndex(b)
	cps := ix.Checkpoints
	ra := cps.NewReaderAt(bytes.NewReader(gz), cache, "bench")
	total := ix.UncompressedSize
	buf := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	var off int64
	if cache != nil {
		// Steady state: one sequential pass first, so the cache is full.
		warm := make([]byte, 1<<20)
		for o := int64(0); o < total; o += int64(len(warm)) {
			if _, err := ra.ReadAt(warm, o); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if sequential {
			if off+int64(size) > total {
				off = 0
			}
		} else {
			off = rng.Int64N(total - int64(size))
		}
		if _, err := ra.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if sequential {
			off += int64(size)
		}
	}
	b.ReportMetric(float64(cps.NumSpans()), "spans")
	if cache != nil {
		hits, misses, _ := cache.Stats() // includes the warm-up pass
		if hits+misses > 0 {
			b.ReportMetric(float64(hits)/float64(hits+misses), "hit-ratio")
		}
	}
}

func BenchmarkSpanReadRandom4KNoCache(b *testing.B) { benchSpanRead(b, nil, 4<<10, false) }

// Cache large enough for the whole layer: after warm-up every read hits.
func BenchmarkSpanReadRandom4KCache(b *testing.B) {
	benchSpanRead(b, layerindex.NewSpanCache(128<<20), 4<<10, false)
}

// Cache holding a quarter of the layer: random reads mostly miss.
func BenchmarkSpanReadRandom4KSmallCache(b *testing.B) {
	benchSpanRead(b, layerindex.NewSpanCache(16<<20), 4<<10, false)
}

func BenchmarkSpanReadSeq128KNoCache(b *testing.B) { benchSpanRead(b, nil, 128<<10, true) }

func BenchmarkSpanReadSeq128KCache(b *testing.B) {
	benchSpanRead(b, layerindex.NewSpanCache(64<<20), 128<<10, true)
}

// BenchmarkStreamFirstPass: one sequential pass over a layer nobody has
// read yet, in 1 MiB reads (the FUSE read size), through a span cache
// smaller than the layer — what `cat` of a big file costs. Compare with
// BenchmarkStreamBaseline, a plain gzip decode of the same blob.
func BenchmarkStreamFirstPass(b *testing.B) {
	ix, gz := benchIndex(b)
	total := ix.UncompressedSize
	buf := make([]byte, 1<<20)
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		ra := ix.Checkpoints.NewReaderAt(bytes.NewReader(gz), layerindex.NewSpanCache(16<<20), "bench")
		for o := int64(0); o < total; o += int64(len(buf)) {
			if _, err := ra.ReadAt(buf, o); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkStreamBaseline(b *testing.B) {
	ix, gz := benchIndex(b)
	b.SetBytes(ix.UncompressedSize)
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}
