package overlay_test

// Benchmarks (run with `go test ./overlay -run '^$' -bench .`):
//
//   - BenchmarkMerge merges three generated layers of 100k entries in all
//     (a 70k-entry base, a 20k-entry update that replaces files, adds new
//     ones and whites some out, a 10k-entry layer with opaque directories),
//     reporting ns/entry.
//   - BenchmarkTreeLookup looks up every name of the merged tree in its
//     parent directory (binary search over the sorted children).
//   - BenchmarkTreeWalk resolves full paths with Tree.Walk.

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

var benchMerge struct {
	once    sync.Once
	layers  []overlay.Layer
	entries int
}

func benchLayers(b *testing.B) ([]overlay.Layer, int) {
	b.Helper()
	benchMerge.once.Do(func() {
		dirPath := func(d int) string { return fmt.Sprintf("usr/lib/pkg%03d/d%02d", d/50, d%50) }
		// Layer 1: 2,000 dirs × 34 files + dirs ≈ 70k entries.
		var l1 []tartest.Entry
		for d := 0; d < 2000; d++ {
			l1 = append(l1, tartest.Dir(dirPath(d), 0o755))
			for f := 0; f < 34; f++ {
				l1 = append(l1, tartest.File(fmt.Sprintf("%s/f%03d.so", dirPath(d), f), "x", 0o644))
			}
		}
		// Layer 2: for 1,000 dirs: replace 10 files, add 8, white out 2 ≈ 20k.
		var l2 []tartest.Entry
		for d := 0; d < 2000; d += 2 {
			l2 = append(l2, tartest.Dir(dirPath(d), 0o755))
			for f := 0; f < 10; f++ {
				l2 = append(l2, tartest.File(fmt.Sprintf("%s/f%03d.so", dirPath(d), f), "y", 0o644))
			}
			for f := 0; f < 7; f++ {
				l2 = append(l2, tartest.File(fmt.Sprintf("%s/new%03d.so", dirPath(d), f), "n", 0o644))
			}
			l2 = append(l2, tartest.Whiteout(fmt.Sprintf("%s/f%03d.so", dirPath(d), 20)),
				tartest.Whiteout(fmt.Sprintf("%s/f%03d.so", dirPath(d), 21)))
		}
		// Layer 3: 500 opaque dirs with 19 files each ≈ 10k.
		var l3 []tartest.Entry
		for d := 1; d < 2000; d += 4 {
			l3 = append(l3, tartest.Dir(dirPath(d), 0o755), tartest.Opaque(dirPath(d)))
			for f := 0; f < 18; f++ {
				l3 = append(l3, tartest.File(fmt.Sprintf("%s/g%03d", dirPath(d), f), "z", 0o644))
			}
		}
		for _, es := range [][]tartest.Entry{l1, l2, l3} {
			ix, err := layerindex.Build(context.Background(), bytes.NewReader(tartest.Tar(b, es...)), layerindex.None, layerindex.Options{})
			if err != nil {
				b.Fatal(err)
			}
			benchMerge.layers = append(benchMerge.layers, overlay.Layer{Index: ix})
			benchMerge.entries += len(ix.Entries)
		}
	})
	return benchMerge.layers, benchMerge.entries
}

func BenchmarkMerge(b *testing.B) {
	layers, n := benchLayers(b)
	b.ReportAllocs()
	var nodes int
	for b.Loop() {
		t, err := overlay.Merge(layers)
		if err != nil {
			b.Fatal(err)
		}
		nodes = t.Len()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
	b.ReportMetric(float64(n), "entries")
	b.ReportMetric(float64(nodes), "nodes")
}

func benchTree(b *testing.B) *overlay.Tree {
	layers, _ := benchLayers(b)
	t, err := overlay.Merge(layers)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

func BenchmarkTreeLookup(b *testing.B) {
	t := benchTree(b)
	type q struct {
		dir  overlay.NodeID
		name string
	}
	var qs []q
	for id := overlay.RootID + 1; t.Valid(id); id++ {
		qs = append(qs, q{t.Parent(id), t.Name(id)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		x := qs[i%len(qs)]
		if _, ok := t.Lookup(x.dir, x.name); !ok {
			b.Fatalf("lookup %q failed", x.name)
		}
		i++
	}
	b.ReportMetric(float64(len(qs)), "names")
}

func BenchmarkTreeWalk(b *testing.B) {
	t := benchTree(b)
	var paths []string
	for id := overlay.RootID + 1; t.Valid(id); id += 7 {
		paths = append(paths, t.Path(id))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := t.Walk(paths[i%len(paths)]); !ok {
			b.Fatalf("walk %q failed", paths[i%len(paths)])
		}
		i++
	}
}
