package blobs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"oci:/x:y", "oci-archive:a.tar:latest", "docker-archive:a:@1", "docker://alpine",
		"alpine:3.20", "host:5000/a/b@sha256:" + hex64, "[::1]:5000/a", "containers-storage:x", "", ":", "a::b", "docker://:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		src, err := ParseSource(s)
		if err == nil {
			_ = src.String()
			if src.Transport == TransportDocker {
				// Registry references must survive String.
				back, err := ParseSource(src.String())
				if err != nil || back != src {
					t.Fatalf("%q → %q → %+v, %v", s, src.String(), back, err)
				}
			}
		}
		_, _ = ParsePlatform(s)
	})
}

// FuzzResolve writes arbitrary bytes as index.json next to a valid image
// (whose blobs include a nested index) and resolves it. It must never
// panic, hang or escape the layout; when it succeeds the image must be the
// one in the layout.
func FuzzResolve(f *testing.F) {
	seed := newLayout(f)
	b := seed.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(f, layerA)}})
	nested := seed.blob(ocispec.MediaTypeImageIndex, mustJSON(f, indexOf(b.manifest)))
	f.Add(mustJSON(f, indexOf(b.manifest)))
	f.Add(mustJSON(f, indexOf(withRef(nested, "x"))))
	f.Add(mustJSON(f, indexOf(noPlatform(b.manifest), nested)))
	f.Add([]byte(`{"manifests":[{"digest":"sha256:../../x","size":1}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"","digest":"` + string(nested.Digest) + `","size":-1}]}`))
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"config":{},"layers":[]}`))
	// Each fuzz worker is a separate process running inputs one at a time,
	// so rewriting the seed layout's index.json in place is safe, and much
	// faster than a fresh layout per input.
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(seed.dir, "index.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		l := seed
		for _, ref := range []string{"", "x"} {
			im, err := OpenImage(context.Background(), Source{Transport: TransportOCI, Path: l.dir, Ref: ref}, Options{Platform: &linuxAmd64})
			if err != nil {
				continue
			}
			if im.ConfigDigest != b.config.Digest || len(im.Layers) != 1 {
				t.Fatalf("resolved to an unexpected image: %+v", im)
			}
			im.Close()
		}
	})
}

// FuzzArchive opens arbitrary bytes as oci-archive and docker-archive
// files: the in-place tar indexing and the docker manifest.json handling
// must never panic, and every opened blob must lie inside the file.
func FuzzArchive(f *testing.F) {
	l := newLayout(f)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(f, layerA)}})
	l.index(indexOf(b.manifest))
	l.write("manifest.json", []byte(`[{"Config":"blobs/sha256/`+b.config.Digest.Encoded()+`","Layers":["blobs/sha256/`+b.layers[0].Digest.Encoded()+`"]}]`))
	arch, err := os.ReadFile(tarDir(f, l.dir, "./"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(arch)
	f.Add(arch[:len(arch)/2])
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	p := filepath.Join(f.TempDir(), "a.tar")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tr := range []Transport{TransportOCIArchive, TransportDockerArchive} {
			im, err := OpenImage(context.Background(), Source{Transport: tr, Path: p}, Options{Platform: &linuxAmd64})
			if err != nil {
				continue
			}
			for _, ly := range im.Layers {
				_, base := ly.Blob.(FileBlob).File()
				if base < 0 || base+ly.Blob.Size() > int64(len(data)) {
					t.Fatalf("layer %d region [%d,+%d) outside a %d-byte file", ly.Index, base, ly.Blob.Size(), len(data))
				}
			}
			im.Close()
		}
	})
}
