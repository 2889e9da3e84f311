package snapshotter

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
)

// FuzzRegistrySource: the image labels of a Prepare name what to fetch.
// Whatever they hold, the result is an error or a registry source pinned
// to a valid manifest digest (never a tag, never a local path).
func FuzzRegistrySource(f *testing.F) {
	d := "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	f.Add("127.0.0.1:5000/app:v1", d)
	f.Add("docker.io/library/busybox:latest", d)
	f.Add("oci:/etc", d)
	f.Add("/etc/passwd", "sha256:xyz")
	f.Add("app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", d)
	f.Fuzz(func(t *testing.T, ref, manifest string) {
		src, err := registrySource(ref, manifest)
		if err != nil {
			return
		}
		if src.Transport != blobs.TransportDocker {
			t.Fatalf("%q → transport %q", ref, src.Transport)
		}
		if _, err := digest.Parse(src.Ref); err != nil || src.Ref != manifest {
			t.Fatalf("%q, %q → ref %q", ref, manifest, src.Ref)
		}
	})
}

// FuzzReadSpec: remote.json is the snapshotter's own state, but a damaged
// one must be an error, never a panic or a spec whose layer list does not
// cover its layer.
func FuzzReadSpec(f *testing.F) {
	good, _ := json.Marshal(remoteSpec{Source: "docker://h/r@sha256:00", Layer: 1, Layers: []string{"a", "b"}, Chain: "sha256:00"})
	f.Add(good)
	f.Add([]byte(`{"layer": -1, "layers": []}`))
	f.Add([]byte(`{"layer": 3, "layers": ["a"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, remoteFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		spec, err := readSpec(dir)
		if err != nil {
			return
		}
		if spec.Layer < 0 || len(spec.Layers) != spec.Layer+1 {
			t.Fatalf("accepted layer %d with %d layers", spec.Layer, len(spec.Layers))
		}
	})
}
