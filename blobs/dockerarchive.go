package blobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerEntry is one element of a `docker save` manifest.json.
type dockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
	// LayerSources (keyed by DiffID) describe foreign layers, whose data
	// docker save leaves out; used only to name a missing layer.
	LayerSources map[digest.Digest]ocispec.Descriptor `json:",omitempty"`
}

// hexName matches member names that carry a sha256: the newer layout's
// blobs/sha256/<hex>, and the legacy <hex>.json config name.
// Compiled on first use, like dockerRefRE.
var (
	blobPathRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`) })
	legacyJSONRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9a-f]{64})\.json$`) })
)

// openDockerArchive reads `docker save` output through its manifest.json.
// The legacy format records no compressed digests or media types, so the
// Manifest is synthesised: the config descriptor gets the config's computed
// digest, layer descriptors get sniffed media types, member sizes and,
// when the member is blobs/sha256/<hex>, that digest (else none).
func openDockerArchive(ctx context.Context, src Source, a *archive) (*Image, error) {
	r := &resolver{ctx: ctx, src: src, st: a}
	b, err := a.open("manifest.json")
	if err != nil {
		return nil, r.errorf("%w (not a docker save archive?)", err)
	}
	data, err := readAllCapped(b, maxTopFile)
	if err != nil {
		return nil, r.errorf("manifest.json: %w", err)
	}
	var entries []dockerEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, r.errorf("manifest.json: %w JSON: %w", ErrInvalid, err)
	}
	e, err := r.chooseDocker(entries)
	if err != nil {
		return nil, err
	}

	cb, err := a.open(e.Config)
	if err != nil {
		return nil, r.errorf("config %w", err)
	}
	cdata, err := readAllCapped(cb, maxMetaBlob)
	if err != nil {
		return nil, r.errorf("config %s: %w", e.Config, err)
	}
	cdig := digest.SHA256.FromBytes(cdata)
	cname := memberName(e.Config)
	for _, re := range []*regexp.Regexp{blobPathRE(), legacyJSONRE()} {
		if m := re.FindStringSubmatch(cname); m != nil && m[1] != cdig.Encoded() {
			return nil, r.errorf("config %s: %w (content is %s)", cname, ErrDigestMismatch, cdig)
		}
	}
	im := &Image{Source: src, ConfigDigest: cdig}
	if err := json.Unmarshal(cdata, &im.Config); err != nil {
		return nil, r.errorf("config %s: %w JSON: %w", cname, ErrInvalid, err)
	}
	if err := checkRootFS(&im.Config, len(e.Layers)); err != nil {
		return nil, r.errorf("config %s (%s): %w", cname, cdig, err)
	}
	im.Platform = im.Config.Platform
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cdig, Size: int64(len(cdata))},
		Layers:    []ocispec.Descriptor{},
	}
	for i, lp := range e.Layers {
		if err := ctx.Err(); err != nil {
			return nil, r.errorf("%w", err)
		}
		diffID := im.Config.RootFS.DiffIDs[i]
		lb, err := a.open(lp)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				if s, ok := e.LayerSources[diffID]; ok {
					return nil, r.errorf("layer %d %s (%s, not included by docker save): %w", i, s.Digest, s.MediaType, err)
				}
			}
			return nil, r.errorf("layer %d %w", i, err)
		}
		// No media type: docker save writes none, and the layer's own
		// bytes say what it is (layerindex.Detect).
		d := ocispec.Descriptor{Size: lb.Size()}
		if mm := blobPathRE().FindStringSubmatch(memberName(lp)); mm != nil {
			d.Digest = digest.NewDigestFromEncoded(digest.SHA256, mm[1])
		}
		m.Layers = append(m.Layers, d)
		im.Layers = append(im.Layers, Layer{Index: i, Descriptor: d, DiffID: diffID, Blob: lb})
	}
	im.Manifest = m
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, r.errorf("synthesising manifest: %w", err)
	}
	im.ManifestDigest = digest.SHA256.FromBytes(mj)
	return im, nil
}

// chooseDocker applies REF: "@N" is the N-th (0-based) entry, as in
// skopeo; anything else is a RepoTag, compared exactly and then in
// familiar form (docker.io/library/ dropped, :latest implied).
func (r *resolver) chooseDocker(entries []dockerEntry) (*dockerEntry, error) {
	if len(entries) == 0 {
		return nil, r.errorf("manifest.json lists no images: %w", ErrNotFound)
	}
	ref := r.src.Ref
	if ref == "" {
		if len(entries) == 1 {
			return &entries[0], nil
		}
		return nil, r.errorf("the archive holds several images; choose one with :TAG or :@N (%s): %w", listDocker(entries), ErrInvalid)
	}
	if n, ok := strings.CutPrefix(ref, "@"); ok {
		i, err := strconv.Atoi(n)
		if err != nil || i < 0 {
			return nil, r.errorf("image index %q: %w", ref, ErrInvalid)
		}
		if i >= len(entries) {
			return nil, r.errorf("image index %s: %w; the archive has %d images", ref, ErrNotFound, len(entries))
		}
		return &entries[i], nil
	}
	for _, norm := range []func(string) string{func(s string) string { return s }, familiar} {
		for i := range entries {
			for _, t := range entries[i].RepoTags {
				if norm(t) == norm(ref) {
					return &entries[i], nil
				}
			}
		}
	}
	return nil, r.errorf("tag %q: %w; the archive has %s", ref, ErrNotFound, listDocker(entries))
}

// familiar reduces a docker reference to the short form docker prints.
func familiar(s string) string {
	s = strings.TrimPrefix(s, "docker.io/")
	s = strings.TrimPrefix(s, "index.docker.io/")
	s = strings.TrimPrefix(s, "library/")
	if !strings.Contains(path.Base(s), ":") && !strings.Contains(s, "@") {
		s += ":latest"
	}
	return s
}

func listDocker(entries []dockerEntry) string {
	var s []string
	for i, e := range entries {
		if len(e.RepoTags) == 0 {
			s = append(s, fmt.Sprintf("@%d (untagged)", i))
			continue
		}
		s = append(s, fmt.Sprintf("@%d %s", i, strings.Join(e.RepoTags, " ")))
	}
	return "images: " + strings.Join(s, ", ")
}
