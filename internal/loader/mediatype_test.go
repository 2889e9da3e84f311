package loader

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

// The published index media type names the index file format it carries;
// blobs spells it out (it cannot import layerindex), so a format bump
// must bump it too, or old clients would misparse new blobs.
func TestMediaTypeFollowsFormat(t *testing.T) {
	if want := fmt.Sprintf("application/vnd.ocimount.layer.index.v%d", layerindex.FormatVersion); blobs.MediaTypeLayerIndex != want {
		t.Fatalf("blobs.MediaTypeLayerIndex = %q, want %q", blobs.MediaTypeLayerIndex, want)
	}
}

// A layer whose media type names no format we read fails the load before
// any layer is read, naming the layer, its blob and the media type.
func TestUnknownLayerMediaType(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	const mt = "application/vnd.oci.image.layer.v1.tar+encrypted"
	info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "v1", Layers: []tartest.ImageLayer{
		{Compression: tartest.Uncompressed, Tar: tartest.Tar(t, tartest.File("a", "A", 0o644))},
		{Compression: tartest.Uncompressed, MediaType: mt, Tar: tartest.Tar(t, tartest.File("b", "B", 0o644))},
	}})
	_, err := Load(context.Background(), blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"}, blobs.Options{}, Options{})
	if !errors.Is(err, layerindex.ErrUnknownMediaType) {
		t.Fatalf("load: %v, want ErrUnknownMediaType", err)
	}
	for _, want := range []string{"layer 1", string(info[0].Layers[1].Digest), mt} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}
