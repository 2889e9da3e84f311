package loader

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/blobs"

	"github.com/ocimount/ocimount/overlay"
)

func names(tree *overlay.Tree) string {
	var out []string
	fs.WalkDir(tree.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if p != "." {
			out = append(out, p)
		}
		return nil
	})
	return strings.Join(out, " ")
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestViews: a prefix view is the image after layer N, a raw view one
// layer as stored; each view's tree is cached under its own key, so views
// and the image never see each other's trees, and a view indexes only
// the layers it needs.
func TestViews(t *testing.T) {
	src, _ := image(t)
	want := map[View]string{
		{Kind: ViewPrefix, Layer: 0}: "big etc etc/a",
		{Kind: ViewPrefix, Layer: 1}: "big big2 etc etc/b",
		{}:                           "big big2 c etc etc/b",
		{Kind: ViewPrefix, Layer: 2}: "big big2 c etc etc/b",
		{Kind: ViewRaw, Layer: 1}:    "big2 etc etc/.wh.a etc/b",
		{Kind: ViewRaw, Layer: 2}:    "c",
	}
	order := []View{{Kind: ViewRaw, Layer: 1}, {Kind: ViewPrefix, Layer: 0}, {}, {Kind: ViewPrefix, Layer: 1}, {Kind: ViewPrefix, Layer: 2}, {Kind: ViewRaw, Layer: 2}}
	cacheDir := t.TempDir()
	for pass := 0; pass < 2; pass++ {
		for i, v := range order {
			im := load(t, src, Options{CacheDir: cacheDir, View: v})
			if got := names(im.Tree); got != want[v] {
				t.Errorf("pass %d, view %s: %q, want %q", pass, v, got, want[v])
			}
			if pass == 0 && i == 0 {
				// The raw view of layer 1 indexes layer 1 only.
				if n := countFiles(t, filepath.Join(cacheDir, "index")); n != 1 {
					t.Errorf("raw view of layer 1 cached %d indexes, want 1", n)
				}
			}
			if pass == 1 {
				lo, hi, _ := v.span(3)
				for l := lo; l < hi; l++ {
					if !im.FromCache[l] {
						t.Errorf("second load of view %s: layer %d not from the cache", v, l)
					}
				}
			}
		}
	}
	// Six trees: ..2 has the same content as the image but its own key.
	if n := countFiles(t, filepath.Join(cacheDir, "tree")); n != 6 {
		t.Errorf("%d cached trees, want 6 (one per view)", n)
	}
	// Raw: the whiteout is an empty regular file; the hardlink to a lower
	// layer's file is an empty regular file; xattrs kept.
	im := load(t, src, Options{View: View{Kind: ViewRaw, Layer: 1}})
	for p, wantSize := range map[string]int64{"etc/.wh.a": 0, "big2": 0, "etc/b": 1} {
		id, ok := im.Tree.Walk(p)
		if !ok {
			t.Fatalf("raw view lacks %s", p)
		}
		if a := im.Tree.Attr(id); a.Size != wantSize || a.Kind.String() != "file" {
			t.Errorf("raw %s: %+v", p, a)
		}
	}
	full := load(t, src, Options{})
	pre := load(t, src, Options{View: View{Kind: ViewPrefix, Layer: 2}})
	if d := cmp.Diff(dump(t, full.Tree), dump(t, pre.Tree)); d != "" {
		t.Errorf("..2 differs from the image:\n%s", d)
	}
}

func TestViewOutOfRange(t *testing.T) {
	src, _ := image(t)
	for _, v := range []View{{Kind: ViewPrefix, Layer: 3}, {Kind: ViewRaw, Layer: 3}, {Kind: ViewPrefix, Layer: -1}} {
		_, err := Load(t.Context(), src, blobsOptions(), Options{View: v})
		if !errors.Is(err, ErrLayerRange) || !strings.Contains(err.Error(), "3 layers (0..2)") {
			t.Errorf("view %s: %v", v, err)
		}
	}
}

func blobsOptions() blobs.Options { return blobs.Options{} }
