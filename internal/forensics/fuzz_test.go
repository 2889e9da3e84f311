package forensics

import (
	"encoding/json"
	"io"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/blobs"
)

// FuzzInspectConfig feeds arbitrary image configs (untrusted: they come
// with the image) through history alignment and both inspect formats.
func FuzzInspectConfig(f *testing.F) {
	f.Add([]byte(`{"history":[{"created_by":"a"},{"empty_layer":true},{"created_by":"b\n\u0000x"}]}`), uint8(2))
	f.Add([]byte(`{"config":{"Labels":{"k":"v"},"ExposedPorts":{"80/tcp":{}}},"history":[{"empty_layer":true}]}`), uint8(0))
	f.Add([]byte(`{"created":"2020-01-02T03:04:05Z","history":[{},{},{},{}]}`), uint8(1))
	f.Fuzz(func(t *testing.T, cfg []byte, layers uint8) {
		var c ocispec.Image
		if json.Unmarshal(cfg, &c) != nil {
			return
		}
		n := int(layers % 8)
		per, extra := AlignHistory(c.History, n)
		nonEmpty := 0
		for _, h := range c.History {
			if !h.EmptyLayer {
				nonEmpty++
			}
		}
		if len(per) != n || extra != max(nonEmpty-n, 0) {
			t.Fatalf("aligned %d to %d layers, %d extra (non-empty %d)", len(per), n, extra, nonEmpty)
		}
		for _, h := range per {
			if h != nil && h.EmptyLayer {
				t.Fatal("empty_layer entry attributed to a layer")
			}
		}
		im := goldenLayersOnly(n)
		im.Meta = &blobs.Image{Config: c}
		r, err := Inspect(im)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteInspect(io.Discard, r, false); err != nil {
			t.Fatal(err)
		}
		if err := WriteInspect(io.Discard, r, true); err != nil {
			t.Fatal(err)
		}
	})
}
