package forensics

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// syntheticLayer is an index without a tar behind it: dirs × files
// entries (listing and diffing never read contents of files that differ in
// size or come from the same layer place).
func syntheticLayer(dirs, files int, sizeOf func(d, f int) int64, diffID string) overlay.Layer {
	ix := &layerindex.Index{DiffID: digest.Digest(diffID)}
	off := int64(0)
	for d := 0; d < dirs; d++ {
		dn := fmt.Sprintf("dir%04d", d)
		ix.Entries = append(ix.Entries, layerindex.Entry{Name: dn, Kind: layerindex.KindDir, Mode: 0o755})
		for f := 0; f < files; f++ {
			sz := sizeOf(d, f)
			if sz < 0 {
				continue
			}
			off += 512
			ix.Entries = append(ix.Entries, layerindex.Entry{Name: fmt.Sprintf("%s/file-%06d.txt", dn, f), Kind: layerindex.KindReg,
				Mode: 0o644, Size: sz, Offset: off, ModSec: 1600000000})
			off += (sz + 511) &^ 511
		}
	}
	return overlay.Layer{Index: ix}
}

// probe is the writer a streaming command writes to: it records when the
// first bytes came, and the live heap (after a GC) every few writes.
type probe struct {
	writes, bytes, firstWrite int64
	base, peakLive            uint64
}

func (p *probe) Write(b []byte) (int, error) {
	if p.writes == 0 {
		p.firstWrite = int64(len(b))
	}
	p.writes++
	p.bytes += int64(len(b))
	if p.writes%25 == 1 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if m.HeapAlloc > p.peakLive {
			p.peakLive = m.HeapAlloc
		}
	}
	return len(b), nil
}

func newProbe() *probe {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return &probe{base: m.HeapAlloc}
}

func (p *probe) check(t *testing.T, what string) {
	t.Helper()
	grew := int64(p.peakLive) - int64(p.base)
	t.Logf("%s: %d bytes in %d writes; first write %d bytes (%.3f%% of the output); live heap %d KiB before, at most %d KiB during (%+d KiB)",
		what, p.bytes, p.writes, p.firstWrite, 100*float64(p.firstWrite)/float64(p.bytes), p.base>>10, p.peakLive>>10, grew>>10)
	if p.writes < 50 || p.firstWrite > p.bytes/50 {
		t.Errorf("%s: output not streamed: %d writes, first %d of %d bytes", what, p.writes, p.firstWrite, p.bytes)
	}
	if grew > 4<<20 {
		t.Errorf("%s: live heap grew %d bytes while writing %d: not bounded", what, grew, p.bytes)
	}
}

// TestStreaming200k lists and diffs a 200,000-file image: the output must
// start long before the walk ends and the memory kept while walking must
// not grow with the tree (the trees themselves are allocated before).
func TestStreaming200k(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 entries")
	}
	const dirs, files = 200, 1000
	base := syntheticLayer(dirs, files, func(d, f int) int64 { return int64(f % 97) }, "sha256:base")
	// The change layer: every 5th file grows, 1% of files are new.
	change := syntheticLayer(dirs, files+files/100, func(d, f int) int64 {
		switch {
		case f >= files:
			return 7
		case f%5 == 0:
			return int64(f%97) + 1
		}
		return -1
	}, "sha256:change")
	a, err := overlay.Merge([]overlay.Layer{base})
	if err != nil {
		t.Fatal(err)
	}
	b, err := overlay.Merge([]overlay.Layer{base, change})
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() < 200_000 {
		t.Fatalf("only %d entries", a.Len())
	}

	p := newProbe()
	if err := List(p, a, "/", ListOptions{Recursive: true, Long: true}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "ls -lR")

	p = newProbe()
	if err := List(p, a, "/", ListOptions{Recursive: true, JSON: true}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "ls -R --json")

	p = newProbe()
	sum, err := DiffTrees(p, a, b, DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.check(t, "diff")
	if sum.Modified != dirs*files/5 || sum.Added != dirs*files/100 || sum.Removed != 0 {
		t.Errorf("diff summary %+v", sum)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}
