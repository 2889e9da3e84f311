package blobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// Nested indexes deeper than this are refused. Real images use at most
	// two levels (index.json → multi-platform index); the bound only stops
	// hostile layouts from making us walk forever.
	maxIndexDepth = 8
	// At most this many index/manifest blobs, and this many bytes in all,
	// are read while resolving one image, so a hostile layout cannot make
	// resolution slow or large.
	maxMetaReads = 1024
	maxMetaBytes = 64 << 20

	annotationContainerdName = "io.containerd.image.name"
)

// resolver walks an OCI layout (directory or archive) from index.json to
// one image manifest.
type resolver struct {
	ctx  context.Context
	src  Source
	st   store
	want ocispec.Platform
	// remote, if set, is where manifests, configs and layers come from
	// instead of st.
	remote *registry
	reads  int
	bytes  int64
}

// errorf prefixes the source, so every message says which image it is about.
func (r *resolver) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{r.src}, args...)...)
}

// readVerified reads a small blob whole and checks its digest, and its size
// if the descriptor gives one. what names the blob in errors ("manifest").
func (r *resolver) readVerified(what string, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, r.errorf("%w", err)
	}
	name, err := blobName(d.Digest)
	if err != nil {
		return nil, r.errorf("%s: %w", what, err)
	}
	if d.Size < 0 {
		return nil, r.errorf("%s %s: negative size %d: %w", what, d.Digest, d.Size, ErrInvalid)
	}
	r.reads++
	if r.reads > maxMetaReads {
		return nil, r.errorf("more than %d index and manifest blobs: %w", maxMetaReads, ErrInvalid)
	}
	if r.remote != nil {
		return r.readRemote(what, d, limit)
	}
	b, err := r.st.open(name)
	if err != nil {
		return nil, r.errorf("%s %s: %w", what, d.Digest, err)
	}
	defer b.close()
	r.bytes += b.Size()
	if r.bytes > maxMetaBytes {
		return nil, r.errorf("more than %d bytes of index and manifest blobs: %w", maxMetaBytes, ErrInvalid)
	}
	if d.Size > 0 && b.Size() != d.Size {
		return nil, r.errorf("%s %s: blob is %d bytes, descriptor says %d: %w", what, d.Digest, b.Size(), d.Size, ErrDigestMismatch)
	}
	data, err := readAllCapped(b, limit)
	if err != nil {
		return nil, r.errorf("%s %s: %w", what, d.Digest, err)
	}
	if got := d.Digest.Algorithm().FromBytes(data); got != d.Digest {
		return nil, r.errorf("%s %s: %w (content is %s)", what, d.Digest, ErrDigestMismatch, got)
	}
	return data, nil
}

// probe is just enough of a JSON document to tell an index from a
// manifest. The mediaType field is optional in both (umoci and older
// skopeo omit it), so the keys decide when it is absent.
type probe struct {
	SchemaVersion *int            `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Manifests     json.RawMessage `json:"manifests"`
	Config        json.RawMessage `json:"config"`
	Layers        json.RawMessage `json:"layers"`
	FSLayers      json.RawMessage `json:"fsLayers"`
}

type docKind int

const (
	kindIndex docKind = iota + 1
	kindManifest
)

func present(m json.RawMessage) bool { return len(m) > 0 && !bytes.Equal(m, []byte("null")) }

// classify tells an index from a manifest by mediaType, else by content.
func classify(data []byte) (docKind, error) {
	var p probe
	if err := json.Unmarshal(data, &p); err != nil {
		return 0, fmt.Errorf("%w JSON: %w", ErrInvalid, err)
	}
	if isSchema1Type(p.MediaType) || present(p.FSLayers) || (p.SchemaVersion != nil && *p.SchemaVersion == 1) {
		return 0, fmt.Errorf("docker schema1 manifests are %w; convert with skopeo copy", ErrUnsupported)
	}
	if p.SchemaVersion != nil && *p.SchemaVersion != 2 {
		return 0, fmt.Errorf("schemaVersion %d is %w", *p.SchemaVersion, ErrUnsupported)
	}
	switch {
	case isIndexType(p.MediaType):
		return kindIndex, nil
	case isManifestType(p.MediaType):
		return kindManifest, nil
	case p.MediaType != "":
		return 0, fmt.Errorf("%q: %w", p.MediaType, ErrUnknownMediaType)
	case present(p.Manifests):
		return kindIndex, nil
	case present(p.Config) || present(p.Layers):
		return kindManifest, nil
	}
	return 0, fmt.Errorf("neither an image index nor a manifest: %w", ErrInvalid)
}

func openOCI(ctx context.Context, src Source, st store, want ocispec.Platform) (*Image, error) {
	r := &resolver{ctx: ctx, src: src, st: st, want: want}
	if err := r.checkLayout(); err != nil {
		return nil, err
	}
	idx, err := r.readIndexJSON()
	if err != nil {
		return nil, err
	}
	desc, plat, data, err := r.chooseTop(idx)
	if err != nil {
		return nil, err
	}
	return r.loadImage(desc, plat, data)
}

func (r *resolver) checkLayout() error {
	b, err := r.st.open(ocispec.ImageLayoutFile)
	if err != nil {
		return r.errorf("%w (not an OCI image layout?)", err)
	}
	defer b.close()
	data, err := readAllCapped(b, 64<<10)
	if err != nil {
		return r.errorf("%s: %w", ocispec.ImageLayoutFile, err)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil {
		return r.errorf("%s: %w JSON: %w", ocispec.ImageLayoutFile, ErrInvalid, err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return r.errorf("%s: imageLayoutVersion %q is %w (want %s)", ocispec.ImageLayoutFile, l.Version, ErrUnsupported, ocispec.ImageLayoutVersion)
	}
	return nil
}

func (r *resolver) readIndexJSON() (*ocispec.Index, error) {
	b, err := r.st.open(ocispec.ImageIndexFile)
	if err != nil {
		return nil, r.errorf("%w", err)
	}
	defer b.close()
	data, err := readAllCapped(b, maxTopFile)
	if err != nil {
		return nil, r.errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	k, err := classify(data)
	if err != nil {
		return nil, r.errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	if k != kindIndex {
		return nil, r.errorf("%s: is a manifest, not an image index: %w", ocispec.ImageIndexFile, ErrInvalid)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, r.errorf("%s: %w JSON: %w", ocispec.ImageIndexFile, ErrInvalid, err)
	}
	return &idx, nil
}

// refOf names an index.json entry in error messages: the most specific
// name that works as REF (docker save writes ref.name "latest" for every
// image, but a unique io.containerd.image.name).
func refOf(d ocispec.Descriptor) string {
	if n := d.Annotations[annotationContainerdName]; n != "" {
		return n
	}
	return d.Annotations[ocispec.AnnotationRefName]
}

// chooseTop applies REF to index.json. REF matches the ref.name annotation
// exactly; failing that, containerd's io.containerd.image.name (which
// `docker save` writes with the full name, e.g. docker.io/library/x:tag).
// Several candidate entries (those REF matched, or all without REF) that
// carry the same names are one image's platforms, and are chosen among as
// an index would be: some tools write per-platform manifests straight into
// index.json. Candidates with different names are an ambiguity error.
func (r *resolver) chooseTop(idx *ocispec.Index) (ocispec.Descriptor, *ocispec.Platform, []byte, error) {
	var cands []ocispec.Descriptor
	if r.src.Ref != "" {
		for _, key := range []string{ocispec.AnnotationRefName, annotationContainerdName} {
			for _, d := range idx.Manifests {
				if d.Annotations[key] == r.src.Ref {
					cands = append(cands, d)
				}
			}
			if len(cands) > 0 {
				break
			}
		}
		if len(cands) == 0 {
			return ocispec.Descriptor{}, nil, nil, r.errorf("reference %q: %w; the layout has %s", r.src.Ref, ErrNotFound, listRefs(idx.Manifests))
		}
	} else {
		cands = idx.Manifests
		if len(cands) == 0 {
			return ocispec.Descriptor{}, nil, nil, r.errorf("%s lists no images: %w", ocispec.ImageIndexFile, ErrNotFound)
		}
	}
	// Entries of one image (one platform each) share their names; entries
	// with different names are different images, and picking one of them
	// by platform would silently mount the wrong image.
	ids := map[string]bool{}
	for _, d := range cands {
		ids[d.Annotations[ocispec.AnnotationRefName]+"\x00"+d.Annotations[annotationContainerdName]] = true
	}
	if len(ids) > 1 {
		if r.src.Ref != "" {
			return ocispec.Descriptor{}, nil, nil, r.errorf("reference %q names several images; choose one (%s): %w", r.src.Ref, listRefs(cands), ErrInvalid)
		}
		return ocispec.Descriptor{}, nil, nil, r.errorf("the layout holds several images; choose one with :REF (%s): %w", listRefs(cands), ErrInvalid)
	}
	if len(cands) == 1 {
		return r.resolve(cands[0], 0)
	}
	return r.selectPlatform(cands, 0)
}

// listRefs renders the references of index.json entries for error messages.
func listRefs(ds []ocispec.Descriptor) string {
	var refs []string
	seen := map[string]bool{}
	for _, d := range ds {
		n := refOf(d)
		if n == "" {
			n = "(unnamed " + string(d.Digest) + ")"
		}
		if !seen[n] {
			seen[n] = true
			refs = append(refs, n)
		}
	}
	if len(refs) == 0 {
		return "no images"
	}
	return "refs: " + strings.Join(refs, ", ")
}

// resolve reads d and, if it is an index, descends by platform; it returns
// the manifest's descriptor, its platform (if an index said) and its bytes.
func (r *resolver) resolve(d ocispec.Descriptor, depth int) (ocispec.Descriptor, *ocispec.Platform, []byte, error) {
	if d.MediaType != "" && !isIndexType(d.MediaType) && !isManifestType(d.MediaType) {
		if isSchema1Type(d.MediaType) {
			return d, nil, nil, r.errorf("manifest %s: docker schema1 manifests are %w; convert with skopeo copy", d.Digest, ErrUnsupported)
		}
		return d, nil, nil, r.errorf("manifest %s: %q is not an image manifest or index: %w", d.Digest, d.MediaType, ErrUnknownMediaType)
	}
	data, err := r.readVerified("manifest", d, maxMetaBlob)
	if err != nil {
		return d, nil, nil, err
	}
	return r.resolveBytes(d, data, depth)
}

// resolveBytes is resolve for a document already read and verified.
func (r *resolver) resolveBytes(d ocispec.Descriptor, data []byte, depth int) (ocispec.Descriptor, *ocispec.Platform, []byte, error) {
	k, err := classify(data)
	if err != nil {
		return d, nil, nil, r.errorf("manifest %s: %w", d.Digest, err)
	}
	if k == kindManifest {
		return d, d.Platform, data, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return d, nil, nil, r.errorf("index %s: %w JSON: %w", d.Digest, ErrInvalid, err)
	}
	return r.selectPlatform(inherit(idx.Manifests, d.Platform), depth+1)
}

// inherit gives entries without a platform the platform of the index that
// lists them, if that index's descriptor had one.
func inherit(ds []ocispec.Descriptor, p *ocispec.Platform) []ocispec.Descriptor {
	if p == nil {
		return ds
	}
	out := slices.Clone(ds)
	for i := range out {
		if out[i].Platform == nil {
			out[i].Platform = p
		}
	}
	return out
}

// selectPlatform picks the manifest for r.want from index entries,
// flattening nested indexes first. The best platformScore wins; among
// equals, the first in index order. A single entry without a platform is
// used when nothing matches, since there is then nothing else to choose.
func (r *resolver) selectPlatform(entries []ocispec.Descriptor, depth int) (ocispec.Descriptor, *ocispec.Platform, []byte, error) {
	var manifests []ocispec.Descriptor
	if err := r.flatten(entries, depth, &manifests); err != nil {
		return ocispec.Descriptor{}, nil, nil, err
	}
	best, bestScore := -1, 0
	var noPlat []int
	for i, d := range manifests {
		if d.Platform == nil {
			noPlat = append(noPlat, i)
			continue
		}
		if s := platformScore(r.want, *d.Platform); s > bestScore {
			best, bestScore = i, s
		}
	}
	if best < 0 && len(noPlat) == 1 {
		best = noPlat[0]
	}
	if best < 0 {
		return ocispec.Descriptor{}, nil, nil, r.errorf("no manifest for platform %s: %w; available: %s", FormatPlatform(r.want), ErrNotFound, listPlatforms(manifests))
	}
	d := manifests[best]
	data, err := r.readVerified("manifest", d, maxMetaBlob)
	if err != nil {
		if d.Platform != nil && errors.Is(err, ErrNotFound) {
			return d, nil, nil, r.errorf("manifest for %s: %w", FormatPlatform(*d.Platform), err)
		}
		return d, nil, nil, err
	}
	k, err := classify(data)
	if err != nil {
		return d, nil, nil, r.errorf("manifest %s: %w", d.Digest, err)
	}
	if k != kindManifest {
		return d, nil, nil, r.errorf("manifest %s: descriptor says manifest, content is an index: %w", d.Digest, ErrInvalid)
	}
	return d, d.Platform, data, nil
}

// flatten collects the manifest descriptors reachable from entries,
// descending into nested indexes. Entries without a media type are read to
// find out what they are; entries of other types (attestations, signatures
// and other artifacts) are skipped.
//
// A manifest found that way is read again once chosen: keeping the bytes
// of every candidate would let a hostile index pin a lot of memory.
func (r *resolver) flatten(entries []ocispec.Descriptor, depth int, out *[]ocispec.Descriptor) error {
	if depth > maxIndexDepth {
		return r.errorf("image indexes nested more than %d deep: %w", maxIndexDepth, ErrInvalid)
	}
	for _, d := range entries {
		switch {
		case isManifestType(d.MediaType):
			*out = append(*out, d)
		case isIndexType(d.MediaType) || d.MediaType == "":
			what := "index"
			if d.MediaType == "" {
				what = "manifest"
			}
			data, err := r.readVerified(what, d, maxMetaBlob)
			if err != nil {
				return err
			}
			k, err := classify(data)
			if err != nil {
				return r.errorf("index %s: %w", d.Digest, err)
			}
			if k == kindManifest {
				*out = append(*out, d)
				continue
			}
			var idx ocispec.Index
			if err := json.Unmarshal(data, &idx); err != nil {
				return r.errorf("index %s: %w JSON: %w", d.Digest, ErrInvalid, err)
			}
			if err := r.flatten(inherit(idx.Manifests, d.Platform), depth+1, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func listPlatforms(ds []ocispec.Descriptor) string {
	var ps []string
	seen := map[string]bool{}
	for _, d := range ds {
		s := "(no platform)"
		if d.Platform != nil {
			s = FormatPlatform(*d.Platform)
		}
		if !seen[s] {
			seen[s] = true
			ps = append(ps, s)
		}
	}
	if len(ps) == 0 {
		return "none"
	}
	return strings.Join(ps, ", ")
}

// loadImage parses the chosen manifest, reads and verifies the config, and
// opens the layer blobs.
func (r *resolver) loadImage(md ocispec.Descriptor, plat *ocispec.Platform, data []byte) (*Image, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, r.errorf("manifest %s: %w JSON: %w", md.Digest, ErrInvalid, err)
	}
	im := &Image{Source: r.src, ManifestDigest: md.Digest, Manifest: m}
	ok := false
	defer func() {
		if !ok {
			im.Close()
		}
	}()
	cd := m.Config
	switch normMediaType(cd.MediaType) {
	case ocispec.MediaTypeImageConfig, mtDockerConfig, "":
	default:
		return nil, r.errorf("config %s: %q is not a container image config (an artifact?): %w", cd.Digest, cd.MediaType, ErrUnknownMediaType)
	}
	cdata, err := r.readVerified("config", cd, maxMetaBlob)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(cdata, &im.Config); err != nil {
		return nil, r.errorf("config %s: %w JSON: %w", cd.Digest, ErrInvalid, err)
	}
	im.ConfigDigest = cd.Digest
	im.Platform = platformOf(plat, &im.Config)
	if err := checkRootFS(&im.Config, len(m.Layers)); err != nil {
		return nil, r.errorf("config %s: %w", cd.Digest, err)
	}
	for i, ld := range m.Layers {
		if err := r.ctx.Err(); err != nil {
			return nil, r.errorf("%w", err)
		}
		name, err := blobName(ld.Digest)
		if err != nil {
			return nil, r.errorf("layer %d: %w", i, err)
		}
		if r.remote != nil {
			if ld.Size <= 0 {
				return nil, r.errorf("layer %d %s: descriptor size %d: %w", i, ld.Digest, ld.Size, ErrInvalid)
			}
			rb := r.remote.blob(ld.Digest, ld.Size)
			im.Layers = append(im.Layers, Layer{Index: i, Descriptor: ld, DiffID: im.Config.RootFS.DiffIDs[i], Blob: rb})
			continue
		}
		b, err := r.st.open(name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				hint := ""
				if len(ld.URLs) > 0 {
					hint = fmt.Sprintf(" (non-distributable; fetch it from %s)", strings.Join(ld.URLs, " "))
				}
				return nil, r.errorf("layer %d %s (%s): blob %w%s", i, ld.Digest, ld.MediaType, ErrNotFound, hint)
			}
			return nil, r.errorf("layer %d %s: %w", i, ld.Digest, err)
		}
		if b.own {
			im.closers = append(im.closers, b.close)
		}
		if b.Size() != ld.Size {
			return nil, r.errorf("layer %d %s: blob is %d bytes, descriptor says %d: %w", i, ld.Digest, b.Size(), ld.Size, ErrDigestMismatch)
		}
		im.Layers = append(im.Layers, Layer{Index: i, Descriptor: ld, DiffID: im.Config.RootFS.DiffIDs[i], Blob: b})
	}
	ok = true
	return im, nil
}

// checkRootFS checks what the config says about the layers. rootfs.type
// must be "layers": config.md makes an unknown value an error for anyone
// unpacking the image, and a future type may mean the layers are not tar
// changesets at all, so a tree made from them would be wrong, not merely
// incomplete. Layer i is applied and verified against diff_ids[i], so the
// counts must agree and each must be a digest we can compute.
func checkRootFS(c *ocispec.Image, layers int) error {
	if c.RootFS.Type != "layers" {
		return fmt.Errorf("rootfs.type %q is not \"layers\": %w", c.RootFS.Type, ErrUnsupported)
	}
	if n := len(c.RootFS.DiffIDs); n != layers {
		return fmt.Errorf("rootfs.diff_ids has %d entries but the manifest has %d layers: %w", n, layers, ErrInvalid)
	}
	for i, d := range c.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("rootfs.diff_ids[%d] %q: %w: %w", i, string(d), ErrInvalid, err)
		}
	}
	return nil
}

// platformOf is the index's platform for the chosen manifest if there was
// one, else what the config says.
func platformOf(p *ocispec.Platform, c *ocispec.Image) ocispec.Platform {
	if p != nil {
		return *p
	}
	return c.Platform
}
