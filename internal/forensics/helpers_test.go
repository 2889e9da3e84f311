package forensics

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// layersOf indexes plain tar layers built from entries.
func layersOf(t testing.TB, layers ...[]tartest.Entry) []overlay.Layer {
	t.Helper()
	var ls []overlay.Layer
	for i, l := range layers {
		b := tartest.Tar(t, l...)
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(b), layerindex.None, layerindex.Options{})
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		ls = append(ls, overlay.Layer{Index: ix, Content: bytes.NewReader(b)})
	}
	return ls
}

func merged(t testing.TB, ls []overlay.Layer) *overlay.Tree {
	t.Helper()
	tree, err := overlay.Merge(ls)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// ociImage writes the layers as an OCI layout (gzip and plain tar
// alternating) and loads it the way the commands do, entry tables kept.
func ociImage(t testing.TB, img tartest.Image) *Image {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	img.Ref = "v1"
	tartest.WriteOCILayout(t, dir, img)
	im, err := loader.Load(context.Background(), blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"},
		blobs.Options{}, loader.Options{CacheDir: t.TempDir(), KeepEntries: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return &Image{Meta: im.Image, Layers: im.Tree.Layers(), Tree: im.Tree}
}

func tarLayers(t testing.TB, layers ...[]tartest.Entry) []tartest.ImageLayer {
	var out []tartest.ImageLayer
	for i, l := range layers {
		c := tartest.Gzip
		if i%2 == 1 {
			c = tartest.Uncompressed
		}
		out = append(out, tartest.ImageLayer{Compression: c, Tar: tartest.Tar(t, l...)})
	}
	return out
}

// goldenLayersOnly is n empty layers (for tests of image metadata only).
func goldenLayersOnly(n int) *Image {
	im := &Image{}
	for range n {
		im.Layers = append(im.Layers, overlay.Layer{Index: &layerindex.Index{}})
	}
	return im
}
