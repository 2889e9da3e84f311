package blobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/layerindex"
)

func open(t testing.TB, src Source, plat *ocispec.Platform) (*Image, error) {
	t.Helper()
	im, err := OpenImage(context.Background(), src, Options{Platform: plat})
	if err == nil {
		t.Cleanup(func() { im.Close() })
	}
	return im, err
}

func mustOpen(t testing.TB, src Source, plat *ocispec.Platform) *Image {
	t.Helper()
	im, err := open(t, src, plat)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func TestOCISingleImage(t *testing.T) {
	l := newLayout(t)
	la, lb := tarOf(t, layerA), tarOf(t, layerB)
	lbz := gzipOf(t, lb)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{la, lbz}, diffs: [][]byte{la, lb},
		mts: []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip}})
	l.index(indexOf(noPlatform(b.manifest)))

	// No REF, one manifest: it is used, whatever the wanted platform.
	im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir}, &ocispec.Platform{OS: "linux", Architecture: "riscv64"})
	if im.ManifestDigest != b.manifest.Digest || im.ConfigDigest != b.config.Digest {
		t.Errorf("digests: got %s %s", im.ManifestDigest, im.ConfigDigest)
	}
	if im.Platform.OS != "linux" || im.Platform.Architecture != "amd64" {
		t.Errorf("platform from config: %+v", im.Platform)
	}
	if len(im.Layers) != 2 {
		t.Fatalf("layers: %d", len(im.Layers))
	}
	for i, want := range [][]byte{la, lbz} {
		ly := im.Layers[i]
		if ly.Index != i || ly.DiffID != b.diffIDs[i] || ly.Descriptor.Digest != b.layers[i].Digest {
			t.Errorf("layer %d: %+v", i, ly)
		}
		if got := readBlob(t, ly.Blob); !bytes.Equal(got, want) {
			t.Errorf("layer %d bytes differ", i)
		}
		fb, ok := ly.Blob.(FileBlob)
		if !ok {
			t.Fatalf("layer %d blob is not a FileBlob", i)
		}
		f, base := fb.File()
		if base != 0 || f.Name() != l.path(b.layers[i].Digest) {
			t.Errorf("layer %d File() = %s %d", i, f.Name(), base)
		}
	}
	if f0, f1 := formatOf(t, im.Layers[0]), formatOf(t, im.Layers[1]); f0 != "tar" || f1 != "tar+gzip" {
		t.Errorf("formats: %v %v", f0, f1)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := im.Layers[0].Blob.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("ReadAt after Close succeeded")
	}
}

func TestOCIRefs(t *testing.T) {
	l := newLayout(t)
	a := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}, configExtra: "a"})
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerB)}, configExtra: "b"})
	l.index(indexOf(withRef(noPlatform(a.manifest), "v1"), withRef(noPlatform(b.manifest), "v2")))
	src := Source{Transport: TransportOCI, Path: l.dir}

	for ref, want := range map[string]digest.Digest{"v1": a.config.Digest, "v2": b.config.Digest} {
		src.Ref = ref
		if im := mustOpen(t, src, nil); im.ConfigDigest != want {
			t.Errorf("ref %s: config %s, want %s", ref, im.ConfigDigest, want)
		}
	}
	src.Ref = "v3"
	_, err := open(t, src, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown ref: %v", err)
	}
	mustContain(t, err, `"v3"`, "v1", "v2", l.dir)

	src.Ref = ""
	_, err = open(t, src, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("no ref, two images: %v", err)
	}
	mustContain(t, err, "several images", "v1", "v2")
}

// TestDockerSaveIndexNames: docker save writes ref.name "latest" for every
// image; the same REF naming two images must not pick one silently, and the
// full io.containerd.image.name works as REF.
func TestDockerSaveIndexNames(t *testing.T) {
	l := newLayout(t)
	a := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}, configExtra: "a"})
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerB)}, configExtra: "b"})
	an, bn := noPlatform(a.manifest), noPlatform(b.manifest)
	an.Annotations = map[string]string{ocispec.AnnotationRefName: "latest", annotationContainerdName: "docker.io/library/a:latest"}
	bn.Annotations = map[string]string{ocispec.AnnotationRefName: "latest", annotationContainerdName: "docker.io/library/b:latest"}
	l.index(indexOf(an, bn))
	_, err := open(t, Source{Transport: TransportOCI, Path: l.dir, Ref: "latest"}, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("ambiguous ref: %v", err)
	}
	mustContain(t, err, "docker.io/library/a:latest", "docker.io/library/b:latest")
	im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir, Ref: "docker.io/library/b:latest"}, nil)
	if im.ConfigDigest != b.config.Digest {
		t.Error("containerd name picked the wrong image")
	}
}

// platformLayout: index.json → (unnamed) index → {amd64 manifest,
// nested index {arm/v6, arm/v7}, arm64 (no variant), arm64/v8, attestation}.
func platformLayout(t *testing.T, omitMediaTypes bool) (*layout, map[string]digest.Digest) {
	l := newLayout(t)
	want := map[string]digest.Digest{}
	mk := func(p ocispec.Platform, name string) ocispec.Descriptor {
		mt := ""
		if omitMediaTypes {
			mt = "-"
		}
		b := l.image(img{plat: p, layers: [][]byte{tarOf(t, map[string]string{"name": name})}, configExtra: name, manifestMT: mt})
		want[name] = b.manifest.Digest
		d := b.manifest
		if omitMediaTypes {
			d.MediaType = ""
		}
		return d
	}
	amd := mk(linuxAmd64, "amd64")
	v6 := mk(ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, "armv6")
	v7 := mk(ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "armv7")
	a64 := mk(ocispec.Platform{OS: "linux", Architecture: "arm64"}, "arm64")
	a64v8 := mk(ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "arm64v8")
	att := l.blob("application/vnd.in-toto+json", []byte(`{}`))
	att.Platform = &ocispec.Platform{OS: "unknown", Architecture: "unknown"}

	indexMT := ocispec.MediaTypeImageIndex
	encode := func(ds ...ocispec.Descriptor) []byte {
		ix := indexOf(ds...)
		if omitMediaTypes {
			ix.MediaType = ""
		}
		return mustJSON(t, ix)
	}
	inner := l.blob(indexMT, encode(v6, v7))
	if omitMediaTypes {
		inner.MediaType = ""
	}
	outer := l.blob(indexMT, encode(amd, inner, a64, a64v8, att))
	if omitMediaTypes {
		outer.MediaType = ""
	}
	l.index(indexOf(withRef(outer, "multi")))
	return l, want
}

func TestPlatformSelection(t *testing.T) {
	for _, omit := range []bool{false, true} {
		l, want := platformLayout(t, omit)
		src := Source{Transport: TransportOCI, Path: l.dir, Ref: "multi"}
		for _, tc := range []struct{ plat, want string }{
			{"linux/amd64", "amd64"},
			{"linux/arm/v7", "armv7"},
			{"linux/arm/v6", "armv6"},
			{"linux/arm64/v8", "arm64v8"}, // exact beats variant-less
			{"linux/arm64", "arm64"},      // exact (both without variant)
		} {
			p, err := ParsePlatform(tc.plat)
			if err != nil {
				t.Fatal(err)
			}
			im := mustOpen(t, src, &p)
			if im.ManifestDigest != want[tc.want] {
				t.Errorf("omit=%v %s: got manifest %s, want %s", omit, tc.plat, im.ManifestDigest, tc.want)
			}
			if FormatPlatform(im.Platform) != FormatPlatform(p) {
				t.Errorf("omit=%v %s: Image.Platform %s", omit, tc.plat, FormatPlatform(im.Platform))
			}
		}
		_, err := open(t, src, &ocispec.Platform{OS: "linux", Architecture: "s390x"})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("absent platform: %v", err)
		}
		mustContain(t, err, "linux/s390x", "linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64", "linux/arm64/v8")
		if !omit && strings.Contains(err.Error(), "unknown/unknown") {
			t.Errorf("attestation (not a manifest) listed: %v", err)
		}
		_, err = open(t, src, &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v5"})
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("arm/v5 against v6,v7: %v", err)
		}
	}
}

func TestVariantFallbacks(t *testing.T) {
	l := newLayout(t)
	arm64v8 := l.image(img{plat: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, layers: [][]byte{tarOf(t, layerA)}})
	arm := l.image(img{plat: ocispec.Platform{OS: "linux", Architecture: "arm"}, layers: [][]byte{tarOf(t, layerB)}})
	l.index(indexOf(arm64v8.manifest, arm.manifest))
	src := Source{Transport: TransportOCI, Path: l.dir}
	for _, tc := range []struct {
		plat string
		want digest.Digest
	}{
		{"linux/arm64", arm64v8.manifest.Digest},   // arm64 without variant means v8
		{"linux/arm/v7", arm.manifest.Digest},      // image without variant serves any
		{"linux/aarch64", arm64v8.manifest.Digest}, // uname spelling
	} {
		p, _ := ParsePlatform(tc.plat)
		if im := mustOpen(t, src, &p); im.ManifestDigest != tc.want {
			t.Errorf("%s: got %s", tc.plat, im.ManifestDigest)
		}
	}
}

// TestUmociStyle: index.json entries and manifests without mediaType, as
// umoci writes them; a single no-platform entry inside an index is used.
func TestUmociStyle(t *testing.T) {
	l := newLayout(t)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}, manifestMT: "-"})
	d := noPlatform(b.manifest)
	d.MediaType = ""
	l.index(map[string]any{"schemaVersion": 2, "manifests": []any{withRef(d, "latest")}})
	im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir, Ref: "latest"}, nil)
	if im.ManifestDigest != b.manifest.Digest || len(im.Layers) != 1 {
		t.Fatalf("got %+v", im)
	}
	// Nested: an index whose only entry has no platform.
	ix := l.blob("", mustJSON(t, map[string]any{"schemaVersion": 2, "manifests": []any{d}}))
	l.index(indexOf(ix))
	if im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir}, nil); im.ManifestDigest != b.manifest.Digest {
		t.Fatal("nested no-platform entry not chosen")
	}
}

// TestIndexJSONPlatforms: per-platform manifests straight in index.json.
func TestIndexJSONPlatforms(t *testing.T) {
	l := newLayout(t)
	a := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
	b := l.image(img{plat: ocispec.Platform{OS: "linux", Architecture: "arm64"}, layers: [][]byte{tarOf(t, layerB)}})
	l.index(indexOf(a.manifest, b.manifest))
	p := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	if im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir}, &p); im.ManifestDigest != b.manifest.Digest {
		t.Fatal("wrong platform")
	}
}

func TestDockerMediaTypes(t *testing.T) {
	l := newLayout(t)
	la, lb := tarOf(t, layerA), tarOf(t, layerB)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{la, gzipOf(t, lb), gzipOf(t, la)}, diffs: [][]byte{la, lb, la},
		mts:        []string{"application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"},
		manifestMT: mtDockerManifest, configMT: mtDockerConfig})
	list := l.blob(mtDockerList, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": mtDockerList, "manifests": []any{b.manifest}}))
	l.index(indexOf(list))
	im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir}, &linuxAmd64)
	wantF := []string{"tar", "tar+gzip", "tar+gzip"}
	for i, ly := range im.Layers {
		if f := formatOf(t, ly); f != wantF[i] {
			t.Errorf("layer %d: %s is %v, want %s", i, ly.Descriptor.MediaType, f, wantF[i])
		}
		if im.Manifest.Layers[i].MediaType != b.layers[i].MediaType || ly.Descriptor.MediaType != b.layers[i].MediaType {
			t.Errorf("layer %d: the manifest's media type must be kept", i)
		}
	}
}

func TestZstdAndNondistributable(t *testing.T) {
	l := newLayout(t)
	la := tarOf(t, layerA)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{[]byte("\x28\xb5\x2f\xfdnot-really"), la}, diffs: [][]byte{la, la},
		mts: []string{ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayerNonDistributable + "; charset=x"}}) //nolint:staticcheck
	l.index(indexOf(b.manifest))
	im := mustOpen(t, Source{Transport: TransportOCI, Path: l.dir}, nil)
	if f0, f1 := formatOf(t, im.Layers[0]), formatOf(t, im.Layers[1]); f0 != "tar+zstd" || f1 != "tar" {
		t.Errorf("formats %v %v", f0, f1)
	}
}

func TestVerification(t *testing.T) {
	build := func(t *testing.T) (*layout, built) {
		l := newLayout(t)
		b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
		l.index(indexOf(b.manifest))
		return l, b
	}
	src := func(l *layout) Source { return Source{Transport: TransportOCI, Path: l.dir} }

	t.Run("manifest digest", func(t *testing.T) {
		l, b := build(t)
		data, _ := os.ReadFile(l.path(b.manifest.Digest))
		data[len(data)-1] = ' ' // same size, other bytes
		os.WriteFile(l.path(b.manifest.Digest), data, 0o644)
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatal(err)
		}
		mustContain(t, err, "manifest "+string(b.manifest.Digest), "oci:"+l.dir)
	})
	t.Run("config digest", func(t *testing.T) {
		l, b := build(t)
		data, _ := os.ReadFile(l.path(b.config.Digest))
		data[0] = ' '
		os.WriteFile(l.path(b.config.Digest), data, 0o644)
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatal(err)
		}
		mustContain(t, err, "config "+string(b.config.Digest))
	})
	t.Run("manifest size", func(t *testing.T) {
		l, b := build(t)
		d := b.manifest
		d.Size++
		l.index(indexOf(d))
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatal(err)
		}
	})
	t.Run("layer size", func(t *testing.T) {
		l, b := build(t)
		f, _ := os.OpenFile(l.path(b.layers[0].Digest), os.O_APPEND|os.O_WRONLY, 0)
		f.Write([]byte{0})
		f.Close()
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatal(err)
		}
		mustContain(t, err, "layer 0 "+string(b.layers[0].Digest), "bytes")
	})
	t.Run("layer bytes not verified", func(t *testing.T) {
		// Documented: layer contents are verified by the indexer.
		l, b := build(t)
		data, _ := os.ReadFile(l.path(b.layers[0].Digest))
		data[0] ^= 0xff
		os.WriteFile(l.path(b.layers[0].Digest), data, 0o644)
		mustOpen(t, src(l), nil)
	})
	t.Run("diff_ids count", func(t *testing.T) {
		l := newLayout(t)
		b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
		cfg := l.blob(ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}`))
		m := l.blob(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: b.layers}))
		l.index(indexOf(m))
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
		mustContain(t, err, "diff_ids")
	})
	t.Run("rootfs type", func(t *testing.T) {
		// config.md: rootfs.type MUST be "layers" and an unknown value
		// MUST be an error when unpacking.
		for _, typ := range []string{"", "snapshot", "Layers"} {
			l := newLayout(t)
			b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
			cj := mustJSON(t, ocispec.Image{Platform: linuxAmd64, RootFS: ocispec.RootFS{Type: typ, DiffIDs: b.diffIDs}})
			cfg := l.blob(ocispec.MediaTypeImageConfig, cj)
			m := l.blob(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: b.layers}))
			l.index(indexOf(m))
			_, err := open(t, src(l), nil)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("type %q: %v", typ, err)
			}
			mustContain(t, err, "config "+string(cfg.Digest), fmt.Sprintf("rootfs.type %q", typ))
		}
	})
	t.Run("layout version", func(t *testing.T) {
		l, _ := build(t)
		l.write("oci-layout", []byte(`{"imageLayoutVersion":"2.0.0"}`))
		if _, err := open(t, src(l), nil); !errors.Is(err, ErrUnsupported) {
			t.Fatal(err)
		}
	})
	t.Run("missing oci-layout", func(t *testing.T) {
		l, _ := build(t)
		os.Remove(l.dir + "/oci-layout")
		if _, err := open(t, src(l), nil); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	})
	t.Run("schema1", func(t *testing.T) {
		l := newLayout(t)
		m := l.blob(mtSchema1Signed, []byte(`{"schemaVersion":1,"fsLayers":[]}`))
		l.index(indexOf(m))
		if _, err := open(t, src(l), nil); !errors.Is(err, ErrUnsupported) {
			t.Fatal(err)
		}
	})
	t.Run("artifact config", func(t *testing.T) {
		l := newLayout(t)
		cfg := l.blob("application/vnd.cncf.helm.config.v1+json", []byte(`{}`))
		m := l.blob(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{}}))
		l.index(indexOf(m))
		if _, err := open(t, src(l), nil); !errors.Is(err, ErrUnknownMediaType) {
			t.Fatal(err)
		}
	})
	t.Run("oversized manifest", func(t *testing.T) {
		l := newLayout(t)
		m := l.blob(ocispec.MediaTypeImageManifest, append([]byte(`{"layers":[]}`), bytes.Repeat([]byte(" "), maxMetaBlob)...))
		l.index(indexOf(m))
		_, err := open(t, src(l), nil)
		if !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
		mustContain(t, err, "limit")
	})
}

func TestMissingLayer(t *testing.T) {
	l := newLayout(t)
	la := tarOf(t, layerA)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{gzipOf(t, la)}, diffs: [][]byte{la},
		mts: []string{ocispec.MediaTypeImageLayerNonDistributableGzip}}) //nolint:staticcheck
	// Rewrite the manifest with urls on the layer, then drop the blob.
	ld := b.layers[0]
	ld.URLs = []string{"https://example.invalid/layer"}
	m := l.blob(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: b.config, Layers: []ocispec.Descriptor{ld}}))
	l.index(indexOf(m))
	os.Remove(l.path(ld.Digest))
	_, err := open(t, Source{Transport: TransportOCI, Path: l.dir}, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	mustContain(t, err, string(ld.Digest), ld.MediaType, "layer 0", "example.invalid")
}

// formatOf is the layer's format as the loader will see it.
func formatOf(t *testing.T, l Layer) string {
	t.Helper()
	f, err := layerindex.Detect(l.Descriptor.MediaType, l.Blob)
	if err != nil {
		return err.Error()
	}
	return f.Name
}

// blobs opens an image whose layer media type it does not know (it does
// not interpret layer media types); the loader refuses it, naming the
// layer (internal/loader TestUnknownLayerMediaType).
func TestUnknownLayerMediaType(t *testing.T) {
	l := newLayout(t)
	const mt = "application/vnd.oci.image.layer.v1.tar+encrypted"
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA), tarOf(t, layerB)}, mts: []string{ocispec.MediaTypeImageLayer, mt}})
	l.index(indexOf(b.manifest))
	im, err := open(t, Source{Transport: TransportOCI, Path: l.dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := formatOf(t, im.Layers[1]); !strings.Contains(got, "unknown layer media type") || !strings.Contains(got, mt) {
		t.Errorf("detect: %s", got)
	}
}

func TestHostileDigests(t *testing.T) {
	for _, hostile := range []digest.Digest{"sha256:../../x", "sha256:../../../../etc/passwd", "../x:abc", "sha256:" + digest.Digest(strings.Repeat("a", 63)) + "/", "md5:d41d8cd98f00b204e9800998ecf8427e", ""} {
		for _, where := range []string{"index", "config", "layer"} {
			l := newLayout(t)
			// A file the hostile digest would reach if used as a path.
			l.write("x", []byte(`{"schemaVersion":2,"layers":[]}`))
			b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
			switch where {
			case "index":
				d := b.manifest
				d.Digest = hostile
				l.index(indexOf(d))
			case "config", "layer":
				cfg, layers := b.config, b.layers
				if where == "config" {
					cfg.Digest = hostile
				} else {
					layers[0].Digest = hostile
				}
				m := l.blob(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers}))
				l.index(indexOf(m))
			}
			_, err := open(t, Source{Transport: TransportOCI, Path: l.dir}, nil)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %q: %v", where, hostile, err)
			}
		}
	}
}

func TestCanceled(t *testing.T) {
	l := newLayout(t)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
	l.index(indexOf(b.manifest))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := OpenImage(ctx, Source{Transport: TransportOCI, Path: l.dir}, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestOCINotADirectory(t *testing.T) {
	l := newLayout(t)
	b := l.image(img{plat: linuxAmd64, layers: [][]byte{tarOf(t, layerA)}})
	l.index(indexOf(b.manifest))
	arch := tarDir(t, l.dir, "")
	if _, err := open(t, Source{Transport: TransportOCI, Path: arch}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	if _, err := open(t, Source{Transport: TransportOCI, Path: l.dir + "/nope"}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}
