package blobs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// TestUmociSkopeo opens an image made by real tools: umoci builds an OCI
// layout (gzip layer, index.json without platforms), skopeo converts it to
// oci-archive and docker-archive (uncompressed <hex>.tar layers plus
// <id>/layer.tar symlinks). All three must give the same config and DiffIDs.
func TestUmociSkopeo(t *testing.T) {
	for _, bin := range []string{"umoci", "skopeo"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	layer := tarOf(t, map[string]string{"etc/hello": "hello\n", "usr/bin/tool": "#!/bin/sh\n"})
	if err := os.WriteFile(filepath.Join(dir, "layer.tar"), layer, 0o644); err != nil {
		t.Fatal(err)
	}
	run("umoci", "init", "--layout", "img")
	run("umoci", "new", "--image", "img:v1")
	run("umoci", "raw", "add-layer", "--image", "img:v1", "layer.tar")
	run("umoci", "raw", "add-layer", "--image", "img:v1", "layer.tar")
	// --insecure-policy: no signature policy is needed to copy local files,
	// and the test must not depend on /etc/containers/policy.json.
	run("skopeo", "--insecure-policy", "copy", "oci:img:v1", "oci-archive:img-oci.tar:v1")
	run("skopeo", "--insecure-policy", "copy", "oci:img:v1", "docker-archive:img-docker.tar:example.com/test/img:v1")

	p := func(name string) string { return filepath.Join(dir, name) }
	var ref *Image
	for _, tc := range []struct {
		spec string
		tr   Transport
	}{
		{"oci:" + p("img") + ":v1", TransportOCI},
		{p("img"), TransportOCI},
		{"oci-archive:" + p("img-oci.tar") + ":v1", TransportOCIArchive},
		{p("img-oci.tar"), TransportOCIArchive},
		{"docker-archive:" + p("img-docker.tar") + ":example.com/test/img:v1", TransportDockerArchive},
		{"docker-archive:" + p("img-docker.tar") + ":@0", TransportDockerArchive},
		{p("img-docker.tar"), TransportDockerArchive},
	} {
		src, err := ParseSource(tc.spec)
		if err != nil || src.Transport != tc.tr {
			t.Fatalf("ParseSource(%s) = %+v, %v", tc.spec, src, err)
		}
		im := mustOpen(t, src, nil)
		if len(im.Layers) != 2 {
			t.Fatalf("%s: %d layers", tc.spec, len(im.Layers))
		}
		for _, ly := range im.Layers {
			if ly.DiffID != digest.FromBytes(layer) {
				t.Errorf("%s: layer %d DiffID %s", tc.spec, ly.Index, ly.DiffID)
			}
		}
		if ref == nil {
			ref = im
			if f := formatOf(t, im.Layers[0]); f != "tar+gzip" {
				t.Errorf("umoci layer format %v", f)
			}
			continue
		}
		if im.ConfigDigest != ref.ConfigDigest {
			t.Errorf("%s: config %s, want %s", tc.spec, im.ConfigDigest, ref.ConfigDigest)
		}
		if im.Platform.OS != ref.Platform.OS || im.Platform.Architecture != ref.Platform.Architecture {
			t.Errorf("%s: platform %+v, want %+v", tc.spec, im.Platform, ref.Platform)
		}
		if tc.tr == TransportDockerArchive {
			if f := formatOf(t, im.Layers[1]); f != "tar" {
				t.Errorf("%s: skopeo docker-archive layers are uncompressed, got %v", tc.spec, f)
			}
			if !bytes.Equal(readBlob(t, im.Layers[1].Blob), layer) {
				t.Errorf("%s: layer bytes differ from the tar given to umoci", tc.spec)
			}
		} else if im.ManifestDigest != ref.ManifestDigest {
			t.Errorf("%s: manifest %s, want %s", tc.spec, im.ManifestDigest, ref.ManifestDigest)
		}
	}
}
