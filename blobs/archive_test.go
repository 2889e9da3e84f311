package blobs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestOCIArchive(t *testing.T) {
	l := newLayout(t)
	la, lb := tarOf(t, layerA), tarOf(t, layerB)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{la, gzipOf(t, lb)}, diffs: [][]byte{la, lb},
		mts: []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip}})
	l.index(indexOf(withRef(b.manifest, "v1")))
	for _, prefix := range []string{"", "./", "/"} {
		arch := tarDir(t, l.dir, prefix)
		im := mustOpen(t, Source{Transport: TransportOCIArchive, Path: arch, Ref: "v1"}, nil)
		if im.ManifestDigest != b.manifest.Digest || im.ConfigDigest != b.config.Digest {
			t.Fatalf("prefix %q: digests", prefix)
		}
		for i, ly := range im.Layers {
			want, _ := os.ReadFile(l.path(b.layers[i].Digest))
			if got := readBlob(t, ly.Blob); !bytes.Equal(got, want) {
				t.Errorf("prefix %q layer %d: bytes differ", prefix, i)
			}
			f, base := ly.Blob.(FileBlob).File()
			if f.Name() != arch || base <= 0 || base%512 != 0 {
				t.Errorf("layer %d: File() = %s @%d", i, f.Name(), base)
			}
			// Reading past the member must not leak the next member.
			buf := make([]byte, ly.Blob.Size()+100)
			n, err := ly.Blob.ReadAt(buf, 0)
			if int64(n) != ly.Blob.Size() || err == nil {
				t.Errorf("over-long ReadAt: n=%d err=%v", n, err)
			}
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCompressedArchive(t *testing.T) {
	l := newLayout(t)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
	l.index(indexOf(b.manifest))
	arch := tarDir(t, l.dir, "")
	data, _ := os.ReadFile(arch)
	gz := filepath.Join(t.TempDir(), "image.tar.gz")
	os.WriteFile(gz, gzipOf(t, data), 0o644)
	for _, tr := range []Transport{TransportOCIArchive, TransportDockerArchive} {
		_, err := open(t, Source{Transport: tr, Path: gz}, nil)
		if !errors.Is(err, ErrUnsupported) {
			t.Fatal(err)
		}
		mustContain(t, err, "compressed archive", "decompress it first", gz)
	}
	if _, err := ParseSource(gz); !errors.Is(err, ErrUnsupported) {
		t.Fatal("bare path:", err)
	}
}

func TestTruncatedArchive(t *testing.T) {
	l := newLayout(t)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{bytes.Repeat([]byte("x"), 100000)}})
	l.index(indexOf(b.manifest))
	arch := tarDir(t, l.dir, "")
	data, _ := os.ReadFile(arch)
	os.WriteFile(arch, data[:len(data)/2], 0o644)
	if _, err := open(t, Source{Transport: TransportOCIArchive, Path: arch}, nil); err == nil {
		t.Fatal("truncated archive opened")
	}
	os.WriteFile(arch, []byte("this is not a tar file at all, not even close......"), 0o644)
	if _, err := open(t, Source{Transport: TransportOCIArchive, Path: arch}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}

// legacyConfig returns a docker config for the given uncompressed layers.
func legacyConfig(t *testing.T, author string, diffs ...[]byte) ([]byte, digest.Digest) {
	var ids []digest.Digest
	for _, d := range diffs {
		ids = append(ids, digest.FromBytes(d))
	}
	cfg := mustJSON(t, ocispec.Image{Author: author, Platform: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: ids}})
	return cfg, digest.FromBytes(cfg)
}

// TestDockerArchiveLegacy: the classic docker save format: <hex>.json
// configs, <id>/layer.tar layers (one a symlink, as skopeo writes them,
// one gzip-compressed), two images with RepoTags.
func TestDockerArchiveLegacy(t *testing.T) {
	la, lb := tarOf(t, layerA), tarOf(t, layerB)
	cfg1, c1 := legacyConfig(t, "one", la, lb)
	cfg2, c2 := legacyConfig(t, "two", la)
	lbz := gzipOf(t, lb)
	manifest := `[{"Config":"` + c1.Encoded() + `.json","RepoTags":["busybox:latest","busybox:1.36"],"Layers":["aaa/layer.tar","bbb/layer.tar"]},
	{"Config":"./` + c2.Encoded() + `.json","RepoTags":null,"Layers":["ccc/layer.tar"]}]`
	arch := writeTar(t,
		tarMember{name: "aaa/", typ: tar.TypeDir},
		tarMember{name: "aaa/layer.tar", data: la},
		tarMember{name: "bbb/layer.tar", data: lbz},
		tarMember{name: c1.Encoded() + ".json", data: cfg1},
		tarMember{name: c2.Encoded() + ".json", data: cfg2},
		tarMember{name: "ccc/layer.tar", typ: tar.TypeSymlink, link: "../aaa/layer.tar"},
		tarMember{name: "repositories", data: []byte(`{}`)},
		tarMember{name: "./manifest.json", data: []byte(manifest)},
	)
	src := Source{Transport: TransportDockerArchive, Path: arch}

	for _, ref := range []string{"busybox:latest", "busybox:1.36", "busybox", "docker.io/library/busybox:latest", "@0"} {
		src.Ref = ref
		im := mustOpen(t, src, nil)
		if im.ConfigDigest != c1 || len(im.Layers) != 2 {
			t.Fatalf("ref %s: config %s, %d layers", ref, im.ConfigDigest, len(im.Layers))
		}
		if im.Platform.Architecture != "arm" || im.Platform.Variant != "v7" {
			t.Errorf("platform %+v", im.Platform)
		}
		if f0, f1 := formatOf(t, im.Layers[0]), formatOf(t, im.Layers[1]); f0 != "tar" || f1 != "tar+gzip" {
			t.Errorf("sniffed formats %v %v", f0, f1)
		}
		if im.Layers[1].Descriptor.MediaType != "" || im.Layers[1].Descriptor.Digest != "" {
			t.Errorf("descriptor %+v", im.Layers[1].Descriptor)
		}
		if im.Layers[1].DiffID != digest.FromBytes(lb) {
			t.Error("diffID")
		}
		if !bytes.Equal(readBlob(t, im.Layers[1].Blob), lbz) {
			t.Error("layer bytes")
		}
		if im.Manifest.Config.Digest != c1 || len(im.Manifest.Layers) != 2 || im.Manifest.Layers[0].Size != int64(len(la)) {
			t.Errorf("synthesised manifest %+v", im.Manifest)
		}
		if im.ManifestDigest.Validate() != nil {
			t.Error("manifest digest")
		}
	}
	src.Ref = "@1"
	im := mustOpen(t, src, nil)
	if im.ConfigDigest != c2 || !bytes.Equal(readBlob(t, im.Layers[0].Blob), la) {
		t.Error("@1 through symlink")
	}

	src.Ref = ""
	_, err := open(t, src, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	mustContain(t, err, "busybox:latest", "@1 (untagged)")
	for _, ref := range []string{"alpine:latest", "@2"} {
		src.Ref = ref
		if _, err := open(t, src, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v", ref, err)
		}
	}
	src.Ref = "@x"
	if _, err := open(t, src, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("@x: %v", err)
	}
}

func TestDockerArchiveErrors(t *testing.T) {
	la := tarOf(t, layerA)
	cfg, c := legacyConfig(t, "", la)
	mk := func(manifest string, ms ...tarMember) Source {
		ms = append(ms, tarMember{name: "manifest.json", data: []byte(manifest)})
		return Source{Transport: TransportDockerArchive, Path: writeTar(t, ms...)}
	}
	t.Run("config digest", func(t *testing.T) {
		src := mk(`[{"Config":"`+c.Encoded()+`.json","Layers":["l.tar"]}]`,
			tarMember{name: c.Encoded() + ".json", data: append(cfg, ' ')}, tarMember{name: "l.tar", data: la})
		_, err := open(t, src, nil)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatal(err)
		}
		mustContain(t, err, "config", c.Encoded())
	})
	t.Run("missing layer", func(t *testing.T) {
		src := mk(`[{"Config":"c.json","Layers":["gone/layer.tar"]}]`, tarMember{name: "c.json", data: cfg})
		_, err := open(t, src, nil)
		if !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		mustContain(t, err, "layer 0", "gone/layer.tar")
	})
	t.Run("diff_ids count", func(t *testing.T) {
		src := mk(`[{"Config":"c.json","Layers":["l.tar","l.tar"]}]`, tarMember{name: "c.json", data: cfg}, tarMember{name: "l.tar", data: la})
		if _, err := open(t, src, nil); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	})
	t.Run("rootfs type", func(t *testing.T) {
		bad := mustJSON(t, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "arm"},
			RootFS: ocispec.RootFS{Type: "snapshot", DiffIDs: []digest.Digest{digest.FromBytes(la)}}})
		src := mk(`[{"Config":"c.json","Layers":["l.tar"]}]`, tarMember{name: "c.json", data: bad}, tarMember{name: "l.tar", data: la})
		_, err := open(t, src, nil)
		if !errors.Is(err, ErrUnsupported) {
			t.Fatal(err)
		}
		mustContain(t, err, digest.FromBytes(bad).String(), `rootfs.type "snapshot"`)
	})
	t.Run("link loop", func(t *testing.T) {
		src := mk(`[{"Config":"c.json","Layers":["a"]}]`, tarMember{name: "c.json", data: cfg},
			tarMember{name: "a", typ: tar.TypeSymlink, link: "b"}, tarMember{name: "b", typ: tar.TypeSymlink, link: "a"})
		if _, err := open(t, src, nil); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	})
	t.Run("hard link and escape", func(t *testing.T) {
		src := mk(`[{"Config":"c.json","Layers":["x/l.tar"]}]`, tarMember{name: "c.json", data: cfg},
			tarMember{name: "l.tar", data: la}, tarMember{name: "x/l.tar", typ: tar.TypeSymlink, link: "../../../l.tar"})
		im := mustOpen(t, src, nil) // "../../../l.tar" is clamped to the archive root
		if !bytes.Equal(readBlob(t, im.Layers[0].Blob), la) {
			t.Fatal("bytes")
		}
		src = mk(`[{"Config":"c.json","Layers":["h"]}]`, tarMember{name: "c.json", data: cfg},
			tarMember{name: "l.tar", data: la}, tarMember{name: "h", typ: tar.TypeLink, link: "./l.tar"})
		mustOpen(t, src, nil)
	})
	t.Run("not a docker archive", func(t *testing.T) {
		src := Source{Transport: TransportDockerArchive, Path: writeTar(t, tarMember{name: "x", data: []byte("x")})}
		_, err := open(t, src, nil)
		if !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		mustContain(t, err, "manifest.json")
	})
}

// TestDockerArchiveOCIInside: newer docker save output is an OCI layout
// plus manifest.json with blobs/sha256/<hex> paths. docker-archive: reads
// manifest.json and recovers layer digests from the paths; oci-archive:
// reads index.json; both give the same layers.
func TestDockerArchiveOCIInside(t *testing.T) {
	l := newLayout(t)
	la, lb := tarOf(t, layerA), tarOf(t, layerB)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{la, lb}})
	d := b.manifest
	d.Annotations = map[string]string{ocispec.AnnotationRefName: "latest", annotationContainerdName: "docker.io/library/busybox:latest"}
	l.index(indexOf(d))
	l.write("manifest.json", []byte(`[{"Config":"blobs/sha256/`+b.config.Digest.Encoded()+`","RepoTags":["busybox:latest"],"Layers":["blobs/sha256/`+
		b.layers[0].Digest.Encoded()+`","blobs/sha256/`+b.layers[1].Digest.Encoded()+`"],"LayerSources":{}}]`))
	arch := tarDir(t, l.dir, "")

	src, err := ParseSource(arch)
	if err != nil || src.Transport != TransportDockerArchive {
		t.Fatalf("bare path: %+v %v", src, err)
	}
	da := mustOpen(t, Source{Transport: TransportDockerArchive, Path: arch, Ref: "busybox:latest"}, nil)
	oa := mustOpen(t, Source{Transport: TransportOCIArchive, Path: arch, Ref: "latest"}, nil)
	if da.ConfigDigest != b.config.Digest || oa.ConfigDigest != b.config.Digest {
		t.Fatal("config digests")
	}
	if oa.ManifestDigest != b.manifest.Digest {
		t.Error("oci-archive manifest digest")
	}
	for i := range b.layers {
		if da.Layers[i].Descriptor.Digest != b.layers[i].Digest || oa.Layers[i].Descriptor.Digest != b.layers[i].Digest {
			t.Errorf("layer %d digest", i)
		}
		if da.Layers[i].DiffID != oa.Layers[i].DiffID {
			t.Errorf("layer %d diffID", i)
		}
	}
	// A tampered config named blobs/sha256/<hex> is caught.
	cfg, _ := os.ReadFile(l.path(b.config.Digest))
	l.write("blobs/sha256/"+strings.Repeat("0", 64), cfg)
	l.write("manifest.json", []byte(`[{"Config":"blobs/sha256/`+strings.Repeat("0", 64)+`","Layers":[]}]`))
	arch = tarDir(t, l.dir, "")
	if _, err := open(t, Source{Transport: TransportDockerArchive, Path: arch}, nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatal(err)
	}
}

func TestFileBlobReadAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("0123456789abcdef"), 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := &fileBlob{f: f, base: 4, size: 8} // "456789ab"
	for _, tc := range []struct {
		off     int64
		n       int
		want    string
		wantEOF bool
	}{
		{0, 8, "456789ab", false},
		{0, 9, "456789ab", true},
		{6, 4, "ab", true},
		{8, 1, "", true},
		{100, 1, "", true},
		{2, 0, "", false},
	} {
		buf := make([]byte, tc.n)
		n, err := b.ReadAt(buf, tc.off)
		if string(buf[:n]) != tc.want || (err != nil) != tc.wantEOF {
			t.Errorf("ReadAt(%d,%d) = %q, %v", tc.off, tc.n, buf[:n], err)
		}
	}
	if _, err := b.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("negative offset")
	}
	// Region past the end of the file (truncated after indexing).
	short := &fileBlob{f: f, base: 10, size: 20}
	if n, err := short.ReadAt(make([]byte, 20), 0); n != 6 || err != io.ErrUnexpectedEOF {
		t.Errorf("truncated region: n=%d err=%v", n, err)
	}
}

func TestConcurrentReadAt(t *testing.T) {
	l := newLayout(t)
	big := bytes.Repeat([]byte("0123456789"), 50000)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{big, tarOf(t, layerA)}})
	l.index(indexOf(b.manifest))
	im := mustOpen(t, Source{Transport: TransportOCIArchive, Path: tarDir(t, l.dir, "")}, nil)
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func(g int) {
			buf := make([]byte, 777)
			for off := int64(g); off < int64(len(big)); off += 7919 {
				n, err := im.Layers[0].Blob.ReadAt(buf, off)
				if !bytes.Equal(buf[:n], big[off:off+int64(n)]) {
					done <- errors.New("mismatch")
					return
				}
				if err != nil && n == len(buf) {
					done <- err
					return
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
