package tartest

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker (schema 2) media types, for layouts written with DockerMediaTypes.
const (
	DockerManifest   = "application/vnd.docker.distribution.manifest.v2+json"
	DockerConfig     = "application/vnd.docker.container.image.v1+json"
	DockerLayerGzip  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	DockerLayerTar   = "application/vnd.docker.image.rootfs.diff.tar"
	DockerManifestLs = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Image is one image (manifest + config + layers) of a layout.
type Image struct {
	Layers []ImageLayer
	Config ocispec.ImageConfig
	// Platform defaults to linux/runtime.GOARCH, so the host's default
	// platform selection picks it.
	Platform ocispec.Platform
	// Ref is the org.opencontainers.image.ref.name annotation in index.json
	// ("" for none). Images with the same Ref are grouped in a nested index.
	Ref string
	// Annotations are manifest annotations.
	Annotations map[string]string
	// DockerMediaTypes uses Docker schema-2 media types for the manifest,
	// config and layers (zstd layers keep the OCI type: Docker has none).
	DockerMediaTypes bool
	// RootFSType overrides the config's rootfs.type ("layers" when empty),
	// to build images that must be refused.
	RootFSType string
	// History overrides the config's history (one "tartest" step per
	// layer when nil), for images with empty steps.
	History []ocispec.History
}

// ImageLayer is one layer of an [Image]. Override fields build broken
// images on purpose.
type ImageLayer struct {
	Compression Compression // "tar" when empty
	Tar         []byte      // uncompressed tar stream
	// MediaType overrides the layer descriptor's media type.
	MediaType string
	// Blob, when non-nil, is stored as the layer blob verbatim instead of
	// Compress(Compression, Tar); the descriptor's digest and size match
	// Blob, the diff_id is still sha256(Tar) unless DiffID is set.
	Blob []byte
	// DiffID overrides the config's diff_id for this layer.
	DiffID digest.Digest
	// Annotations are the layer descriptor's annotations.
	Annotations map[string]string
}

// ImageInfo is what [WriteOCILayoutInfo] wrote for one image.
type ImageInfo struct {
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
	// Index is the nested image index holding this manifest, when several
	// images share a Ref (zero otherwise).
	Index ocispec.Descriptor
}

// BlobPath is where blob d lives in the layout at dir.
func BlobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// WriteBlob stores b in the layout at dir and returns its descriptor.
func WriteBlob(t testing.TB, dir, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	p := BlobPath(dir, d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatalf("tartest: %v", err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatalf("tartest: %v", err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

func writeJSONBlob(t testing.TB, dir, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("tartest: %v", err)
	}
	return WriteBlob(t, dir, mediaType, b)
}

// WriteOCILayout writes imgs into an OCI image layout at dir (created if
// needed; an existing index.json is extended) and returns the manifest
// digest of imgs[0].
func WriteOCILayout(t testing.TB, dir string, imgs ...Image) digest.Digest {
	t.Helper()
	info := WriteOCILayoutInfo(t, dir, imgs...)
	if len(info) == 0 {
		return ""
	}
	return info[0].Manifest.Digest
}

// WriteOCILayoutInfo is [WriteOCILayout] returning every descriptor written,
// one ImageInfo per image in order.
func WriteOCILayoutInfo(t testing.TB, dir string, imgs ...Image) []ImageInfo {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("tartest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatalf("tartest: %v", err)
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	if b, err := os.ReadFile(filepath.Join(dir, "index.json")); err == nil {
		if err := json.Unmarshal(b, &index); err != nil {
			t.Fatalf("tartest: existing index.json: %v", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("tartest: %v", err)
	}

	infos := make([]ImageInfo, len(imgs))
	for i, img := range imgs {
		infos[i] = writeImage(t, dir, img)
	}
	// Group by Ref, keeping first-seen order.
	var order []string
	groups := map[string][]int{}
	for i, img := range imgs {
		if img.Ref == "" {
			index.Manifests = append(index.Manifests, infos[i].Manifest)
			continue
		}
		if _, ok := groups[img.Ref]; !ok {
			order = append(order, img.Ref)
		}
		groups[img.Ref] = append(groups[img.Ref], i)
	}
	for _, ref := range order {
		g := groups[ref]
		ann := map[string]string{ocispec.AnnotationRefName: ref}
		if len(g) == 1 {
			d := infos[g[0]].Manifest
			d.Annotations = ann
			index.Manifests = append(index.Manifests, d)
			continue
		}
		nested := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
		for _, i := range g {
			nested.Manifests = append(nested.Manifests, infos[i].Manifest)
		}
		nd := writeJSONBlob(t, dir, ocispec.MediaTypeImageIndex, nested)
		for _, i := range g {
			infos[i].Index = nd
		}
		nd.Annotations = ann
		index.Manifests = append(index.Manifests, nd)
	}
	b, err := json.Marshal(index)
	if err != nil {
		t.Fatalf("tartest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatalf("tartest: %v", err)
	}
	return infos
}

func writeImage(t testing.TB, dir string, img Image) ImageInfo {
	t.Helper()
	plat := img.Platform
	if plat.OS == "" {
		plat.OS = "linux"
	}
	if plat.Architecture == "" {
		plat.Architecture = runtime.GOARCH
	}
	var info ImageInfo
	for _, l := range img.Layers {
		c := l.Compression
		if c == "" {
			c = Uncompressed
		}
		mt := l.MediaType
		if mt == "" {
			mt = layerMediaType(c, img.DockerMediaTypes)
		}
		blob := l.Blob
		if blob == nil {
			blob = Compress(t, c, l.Tar)
		}
		d := WriteBlob(t, dir, mt, blob)
		d.Annotations = l.Annotations
		diffID := l.DiffID
		if diffID == "" {
			diffID = digest.FromBytes(l.Tar)
		}
		info.Layers = append(info.Layers, d)
		info.DiffIDs = append(info.DiffIDs, diffID)
	}
	created := DefaultMTime
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: plat.OS, Architecture: plat.Architecture, Variant: plat.Variant, OSVersion: plat.OSVersion, OSFeatures: plat.OSFeatures},
		Config:   img.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: info.DiffIDs},
	}
	if img.RootFSType != "" {
		cfg.RootFS.Type = img.RootFSType
	}
	if cfg.RootFS.DiffIDs == nil {
		cfg.RootFS.DiffIDs = []digest.Digest{}
	}
	for range img.Layers {
		cfg.History = append(cfg.History, ocispec.History{Created: &created, CreatedBy: "tartest"})
	}
	if img.History != nil {
		cfg.History = img.History
	}
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if img.DockerMediaTypes {
		cmt, mmt = DockerConfig, DockerManifest
	}
	info.Config = writeJSONBlob(t, dir, cmt, cfg)
	layers := info.Layers
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   mmt,
		Config:      info.Config,
		Layers:      layers,
		Annotations: img.Annotations,
	}
	info.Manifest = writeJSONBlob(t, dir, mmt, m)
	p := plat
	info.Manifest.Platform = &p
	return info
}

func layerMediaType(c Compression, docker bool) string {
	switch c {
	case Gzip:
		if docker {
			return DockerLayerGzip
		}
		return ocispec.MediaTypeImageLayerGzip
	case Zstd:
		return ocispec.MediaTypeImageLayerZstd
	default:
		if docker {
			return DockerLayerTar
		}
		return ocispec.MediaTypeImageLayer
	}
}
