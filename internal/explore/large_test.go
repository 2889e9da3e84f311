package explore

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// synthetic is an index of dirs×files regular files (sizes from sizeOf,
// negative: absent), no content behind it: the tree pane reads none.
func synthetic(dirs, files int, sizeOf func(d, f int) int64, diffID string) overlay.Layer {
	ix := &layerindex.Index{DiffID: digest.Digest(diffID), Digest: digest.Digest(diffID)}
	off := int64(0)
	for d := range dirs {
		dn := fmt.Sprintf("dir%04d", d)
		ix.Entries = append(ix.Entries, layerindex.Entry{Name: dn, Kind: layerindex.KindDir, Mode: 0o755})
		for f := range files {
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

// large200k is a 200,000-file image and a layer that grows every 5th
// file (to a new size: no content is compared) and adds 1%.
func large200k(t testing.TB) *Model {
	const dirs, files = 200, 1000
	base := synthetic(dirs, files, func(d, f int) int64 { return int64(f % 97) }, "sha256:base")
	change := synthetic(dirs, files+files/100, func(d, f int) int64 {
		switch {
		case f >= files:
			return 7
		case f%5 == 0:
			return int64(f%97) + 100
		}
		return -1
	}, "sha256:change")
	layers := []overlay.Layer{base, change}
	full, err := overlay.Merge(layers)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(&Image{Image: &forensics.Image{Meta: &blobs.Image{}, Layers: layers, Tree: full}, Source: "synthetic"},
		Options{NoColor: true, Output: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	drive(t, m, m.Init())
	drive(t, m, func() tea.Msg { return tea.WindowSizeMsg{Width: 120, Height: 40} })
	return m
}

// A 200,000-entry image opens, opens fully and pages to the end with
// every screen exactly the terminal's size; the diff marks are the
// change layer's.
func TestLarge200k(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 entries")
	}
	m := large200k(t)
	v := m.LayerView()
	if v == nil || v.Summary.Modified != 200*1000/5 || v.Summary.Added != 200*10 {
		t.Fatalf("layer view %+v", v)
	}
	press(t, m, "tab", "x")
	if n := len(m.Rows()); n != 200+200*1010 {
		t.Fatalf("%d rows", n)
	}
	for range 50 {
		press(t, m, "pgdown")
		if l := strings.Count(m.View(), "\n") + 1; l != 40 {
			t.Fatalf("%d lines", l)
		}
	}
	press(t, m, "end")
	if !strings.Contains(m.View(), "A -rw-r--r--") || !strings.Contains(m.View(), "file-001009.txt") {
		t.Fatalf("end of the tree:\n%s", m.View())
	}
	// Moving to layer 0 and back keeps the open directories open.
	press(t, m, "tab", "up", "down")
	if n := len(m.Rows()); n != 200+200*1010 {
		t.Fatalf("after moving layers: %d rows", n)
	}
}

// BenchmarkScroll200k is one keystroke and one full render in the fully
// open 200,000-entry tree: what scrolling costs per step.
func BenchmarkScroll200k(b *testing.B) {
	m := large200k(b)
	press(b, m, "tab", "x")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := "down"
		if i%50 == 49 {
			k = "pgdown"
		}
		press(b, m, k)
		_ = m.View()
	}
}

// BenchmarkLayerView200k is what selecting a layer of the 200,000-entry
// image costs before its tree shows (merge of the layers below, diff).
func BenchmarkLayerView200k(b *testing.B) {
	m := large200k(b)
	for i := 0; i < b.N; i++ {
		if _, err := ComputeLayer(m.im.Layers, m.im.Tree, 1); err != nil {
			b.Fatal(err)
		}
	}
}
