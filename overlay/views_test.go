package overlay_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

func TestMergeRaw(t *testing.T) {
	ls, err := buildLayers(t, tartest.Tar(t,
		tartest.Dir("a", 0o755), tartest.Whiteout("a/gone"), tartest.Opaque("a"), tartest.File("a/f", "data", 0o644),
		tartest.Hardlink("a/g", "a/f"), tartest.Hardlink("lower", "not/in/this/layer"),
		tartest.File(".wh..wh.plnk/123.4", "aufs", 0o644), tartest.File("dup", "1", 0o644), tartest.File("dup", "22", 0o600),
	))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := overlay.MergeRaw(ls[0])
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]struct {
		kind layerindex.Kind
		size int64
	}{
		"a/.wh.gone": {layerindex.KindReg, 0}, "a/.wh..wh..opq": {layerindex.KindReg, 0}, "a/f": {layerindex.KindReg, 4},
		"a/g": {layerindex.KindReg, 4}, "lower": {layerindex.KindReg, 0}, ".wh..wh.plnk/123.4": {layerindex.KindReg, 4},
		"dup": {layerindex.KindReg, 2},
	} {
		id, ok := tree.Walk(p)
		if !ok {
			t.Errorf("raw tree lacks %s", p)
			continue
		}
		if a := tree.Attr(id); a.Kind != want.kind || a.Size != want.size {
			t.Errorf("%s: kind %v size %d, want %v %d", p, a.Kind, a.Size, want.kind, want.size)
		}
	}
	f, _ := tree.Walk("a/f")
	g, _ := tree.Walk("a/g")
	if tree.InodeIndex(f) != tree.InodeIndex(g) || tree.Attr(f).Nlink != 2 {
		t.Errorf("hardlink inside the layer not shared")
	}
}

func TestMergeSteps(t *testing.T) {
	ls, err := buildLayers(t,
		tartest.Tar(t, tartest.File("x", "1", 0o644)),
		tartest.Tar(t, tartest.Whiteout("x")),
		tartest.Tar(t, tartest.File("x", "22", 0o600)),
	)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	err = overlay.MergeSteps(ls, func(li int, look func(string) (overlay.Inode, bool)) error {
		in, ok := look("/x")
		if !ok {
			got = append(got, -1)
		} else {
			got = append(got, in.Size)
		}
		return nil
	})
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != -1 || got[2] != 2 {
		t.Errorf("steps: %v %v", got, err)
	}
}

// A hardlink whose target name was whited out keeps the data of the
// target's tar entry: the header check must not compare its name with
// that entry's, or every read of it would fail.
func TestCheckHeadersRenamedHardlink(t *testing.T) {
	l0 := tartest.Tar(t, tartest.File("a", "data", 0o644), tartest.Hardlink("b", "a"))
	l1 := tartest.Tar(t, tartest.Whiteout("a"))
	var layers []overlay.Layer
	for _, tb := range [][]byte{l0, l1} {
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(tb), layerindex.None, layerindex.Options{})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, overlay.Layer{Index: ix, Content: bytes.NewReader(tb), CheckHeaders: true})
	}
	tree, err := overlay.Merge(layers)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := tree.Walk("b")
	if !ok {
		t.Fatal("b missing")
	}
	ra, err := tree.Open(id)
	if err != nil {
		t.Fatalf("open b: %v", err)
	}
	p := make([]byte, 4)
	if _, err := ra.ReadAt(p, 0); err != nil || string(p) != "data" {
		t.Fatalf("read b: %q, %v", p, err)
	}
}
