package loader

import (
	"fmt"
	"testing"

	"github.com/ocimount/ocimount/blobs"
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
