package loader

import (
	"archive/tar"
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/tartest"
)

// A legacy docker-archive layer has no blob digest (its member is
// <id>/layer.tar), and docker load accepts compressed ones. One that is a
// single zstd frame is served from a decoded copy: buildIndex asked the
// cache for the copy's directory by the (empty) digest, and go-digest
// panicked — the server crashed on a valid archive.
func TestDockerArchiveZstdLayer(t *testing.T) {
	big := make([]byte, 10<<20)
	rand.New(rand.NewSource(3)).Read(big)
	layer := tartest.Tar(t, tartest.Dir("d", 0o755), tartest.FileBytes("d/big", big, 0o644))
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromBytes(layer).String() + `"]}}`)
	cdg := digest.FromBytes(cfg)
	manifest := `[{"Config":"` + cdg.Encoded() + `.json","RepoTags":["x:1"],"Layers":["aaa/layer.tar"]}]`
	var ab bytes.Buffer
	tw := tar.NewWriter(&ab)
	for _, m := range []struct {
		name string
		data []byte
	}{{"aaa/layer.tar", tartest.Compress(t, tartest.Zstd, layer)}, {cdg.Encoded() + ".json", cfg}, {"manifest.json", []byte(manifest)}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg})
		tw.Write(m.data)
	}
	tw.Close()
	arch := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(arch, ab.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	src := blobs.Source{Transport: blobs.TransportDockerArchive, Path: arch, Ref: "x:1"}
	for _, cacheDir := range []string{"", t.TempDir()} {
		for range 2 { // cold, then again (nothing cached can be found by digest)
			im, err := Load(context.Background(), src, blobs.Options{}, Options{CacheDir: cacheDir})
			if err != nil {
				t.Fatalf("cache %q: %v", cacheDir, err)
			}
			got, err := readTreeFile(im.Tree, "d/big")
			im.Close()
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("cache %q: d/big: %v", cacheDir, err)
			}
		}
	}
}
