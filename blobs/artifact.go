package blobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Index artifacts: an image's layer indexes published in its registry, so
// that other machines mount it without a pass over any layer. One OCI 1.1
// artifact manifest per image manifest (docs/DESIGN.md "Index artifacts"):
//
//	artifactType  ArtifactTypeIndex
//	config        the empty descriptor (application/vnd.oci.empty.v1+json, "{}")
//	layers        one blob per image layer: the serialized layer index
//	              (MediaTypeLayerIndex), annotated AnnotationLayerDigest
//	subject       the image manifest
//
// Found through the referrers API, or its tag fallback "sha256-<hex>" on
// registries without it (distribution 2.8).
const (
	ArtifactTypeIndex     = "application/vnd.ocimount.index.v1"
	MediaTypeLayerIndex   = "application/vnd.ocimount.layer.index.v6" // vN = layerindex.FormatVersion (blobs cannot import layerindex)
	AnnotationLayerDigest = "io.ocimount.layer.digest"
	mediaTypeEmpty        = "application/vnd.oci.empty.v1+json"
	// maxIndexBlob bounds one published layer index read into memory
	// (a 200,000-file layer's index is ~10 MiB); indexBlobCap bounds it
	// by the layer's size first.
	maxIndexBlob = 512 << 20
)

// indexBlobCap is the most a published index of a layer of layerSize
// bytes may weigh: 16 MiB plus twice the layer. An index holds ~30-100
// bytes per entry, 32 bytes per 512 KiB chunk and windows of under 1% of
// the uncompressed data; only a layer of empty files with long names comes
// near its own size. Anything bigger is refused before it is fetched.
func indexBlobCap(layerSize int64) int64 {
	return min(maxIndexBlob, 16<<20+2*max(layerSize, 0))
}

// ManifestDescriptor is the image manifest the image was resolved to.
func (r *Remote) ManifestDescriptor() ocispec.Descriptor { return r.manifest }

// FetchIndexes looks for a published index artifact of the image and
// returns the serialized layer indexes it has for the wanted layers
// (layer digest → layer blob size, which bounds the index's size), each
// verified against its descriptor (the caller checks that each parses and
// describes its layer), and the artifact they came from. None found is not
// an error: the result is just empty. Every artifact and layer index
// passed over is logged with the reason.
func (r *Remote) FetchIndexes(ctx context.Context, want map[digest.Digest]int64) (map[digest.Digest][]byte, digest.Digest, error) {
	refs, err := r.reg.referrers(ctx, r.manifest.Digest)
	if err != nil || len(refs) == 0 {
		return nil, "", err
	}
	var lastErr error
	for _, d := range refs {
		got, err := r.fetchArtifact(ctx, d, want)
		if err == nil && len(got) > 0 {
			return got, d.Digest, nil
		}
		if err == nil {
			continue // its reasons are logged: try an older one
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		lastErr = err
		r.reg.logf("index artifact %s: skipped: %v", d.Digest, err)
	}
	return nil, "", lastErr
}

func (r *Remote) fetchArtifact(ctx context.Context, d ocispec.Descriptor, want map[digest.Digest]int64) (map[digest.Digest][]byte, error) {
	data, _, err := r.reg.getManifest(ctx, string(d.Digest), maxMetaBlob)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w JSON: %w", ErrInvalid, err)
	}
	if m.ArtifactType != ArtifactTypeIndex || m.Subject == nil || m.Subject.Digest != r.manifest.Digest {
		return nil, fmt.Errorf("not an ocimount index of manifest %s (artifact type %q): %w", r.manifest.Digest, m.ArtifactType, ErrInvalid)
	}
	out := map[digest.Digest][]byte{}
	var others []string
	for _, l := range m.Layers {
		ld := digest.Digest(l.Annotations[AnnotationLayerDigest])
		size, wanted := want[ld]
		switch {
		case !wanted:
			others = append(others, string(ld))
			continue
		case l.MediaType != MediaTypeLayerIndex:
			r.reg.logf("index artifact %s: layer index of %s skipped: media type %q, this ocimount reads %q", d.Digest, ld, l.MediaType, MediaTypeLayerIndex)
			continue
		case l.Size <= 0 || l.Size > indexBlobCap(size):
			r.reg.logf("index artifact %s: layer index of %s not fetched: its descriptor says %d bytes; an index of a %d-byte layer may have 1 to %d", d.Digest, ld, l.Size, size, indexBlobCap(size))
			continue
		}
		b, err := r.reg.getBlob(ctx, "layer index of "+string(ld), l, indexBlobCap(size))
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			r.reg.logf("index artifact %s: skipped the layer index of %s: %v", d.Digest, ld, err)
			continue
		}
		out[ld] = b
	}
	if len(m.Layers) == 0 {
		r.reg.logf("index artifact %s: skipped: it has no layer indexes", d.Digest)
	}
	if len(out) == 0 && len(others) > 0 && len(others) == len(m.Layers) {
		if len(others) > 3 {
			others = append(others[:3], "...")
		}
		r.reg.logf("index artifact %s: skipped: it has indexes of other layers (%s), none of this image's", d.Digest, strings.Join(others, ", "))
	}
	return out, nil
}

// referrers lists index artifacts of manifest dg, newest first.
func (reg *registry) referrers(ctx context.Context, dg digest.Digest) ([]ocispec.Descriptor, error) {
	u := reg.url("referrers", string(dg)) + "?artifactType=" + url.QueryEscape(ArtifactTypeIndex)
	var idx ocispec.Index
	resp, err := reg.get(ctx, "referrers of "+string(dg), u, http.Header{"Accept": {ocispec.MediaTypeImageIndex}})
	if err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), ocispec.MediaTypeImageIndex) {
		err = decodeLimited(resp.Body, &idx)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("referrers of %s: %w", dg, err)
		}
	} else {
		if err == nil {
			resp.Body.Close()
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		// No referrers API: the tag schema fallback.
		data, _, err := reg.getManifest(ctx, fallbackTag(dg), maxMetaBlob)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, fmt.Errorf("referrers tag %s: %w JSON: %w", fallbackTag(dg), ErrInvalid, err)
		}
	}
	var out []ocispec.Descriptor
	for _, d := range idx.Manifests {
		// Some registries report the config's media type instead of
		// the manifest's artifactType (go-containerregistry's own
		// does); fetchArtifact checks the real one.
		switch d.ArtifactType {
		case ArtifactTypeIndex, mediaTypeEmpty, "":
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Annotations[ocispec.AnnotationCreated] > out[j].Annotations[ocispec.AnnotationCreated]
	})
	return out, nil
}

func fallbackTag(dg digest.Digest) string {
	return string(dg.Algorithm()) + "-" + dg.Encoded()
}

func decodeLimited(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, maxMetaBlob+1))
	if err != nil {
		return err
	}
	if len(data) > maxMetaBlob {
		return fmt.Errorf("larger than %d bytes: %w", maxMetaBlob, ErrInvalid)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w JSON: %w", ErrInvalid, err)
	}
	return nil
}

// PushIndexes publishes layer indexes (layer digest → serialized index)
// as an index artifact of the image's manifest and returns the artifact
// manifest's digest. Layers are listed in image order.
func (r *Remote) PushIndexes(ctx context.Context, order []digest.Digest, indexes map[digest.Digest][]byte) (digest.Digest, error) {
	preg, err := dialRegistry(ctx, r.reg.src, r.reg.opts, true)
	if err != nil {
		return "", err
	}
	empty := []byte("{}")
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactTypeIndex,
		Config:       ocispec.Descriptor{MediaType: mediaTypeEmpty, Digest: digest.FromBytes(empty), Size: 2, Data: empty},
		Subject:      &ocispec.Descriptor{MediaType: r.manifest.MediaType, Digest: r.manifest.Digest, Size: r.manifest.Size},
		Annotations:  map[string]string{ocispec.AnnotationCreated: time.Now().UTC().Format(time.RFC3339)},
	}
	m.SchemaVersion = 2
	if m.Subject.MediaType == "" {
		m.Subject.MediaType = ocispec.MediaTypeImageManifest
	}
	if err := preg.upload(ctx, empty); err != nil {
		return "", err
	}
	for _, ld := range order {
		b, ok := indexes[ld]
		if !ok {
			return "", fmt.Errorf("no index for layer %s", ld)
		}
		if err := preg.upload(ctx, b); err != nil {
			return "", fmt.Errorf("layer index of %s: %w", ld, err)
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{
			MediaType: MediaTypeLayerIndex, Digest: digest.FromBytes(b), Size: int64(len(b)),
			Annotations: map[string]string{AnnotationLayerDigest: string(ld)},
		})
	}
	data, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	md := digest.FromBytes(data)
	resp, err := preg.do(ctx, http.MethodPut, preg.url("manifests", string(md)), ocispec.MediaTypeImageManifest, data)
	if err != nil {
		return "", fmt.Errorf("index artifact manifest: %w", err)
	}
	if resp.Header.Get("OCI-Subject") != "" {
		return md, nil // the registry maintains the referrers list
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ArtifactTypeIndex, Digest: md, Size: int64(len(data)), Annotations: m.Annotations}
	if err := preg.addFallbackReferrer(ctx, r.manifest.Digest, desc); err != nil {
		return "", fmt.Errorf("referrers tag %s: %w", fallbackTag(r.manifest.Digest), err)
	}
	return md, nil
}

// addFallbackReferrer appends desc to the "sha256-<hex>" tag's index (the
// referrers tag schema), keeping what other tools listed there.
func (reg *registry) addFallbackReferrer(ctx context.Context, subject digest.Digest, desc ocispec.Descriptor) error {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	data, _, err := reg.getManifest(ctx, fallbackTag(subject), maxMetaBlob)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("%w JSON: %w", ErrInvalid, err)
		}
	case !errors.Is(err, ErrNotFound):
		return err
	}
	for _, d := range idx.Manifests {
		if d.Digest == desc.Digest {
			return nil
		}
	}
	idx.Manifests = append(idx.Manifests, desc)
	data, err = json.Marshal(idx)
	if err != nil {
		return err
	}
	_, err = reg.do(ctx, http.MethodPut, reg.url("manifests", fallbackTag(subject)), ocispec.MediaTypeImageIndex, data)
	return err
}

// upload puts a blob unless the registry has it (monolithic upload:
// POST for a session, PUT with the digest).
func (reg *registry) upload(ctx context.Context, b []byte) error {
	dg := digest.FromBytes(b)
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, reg.url("blobs", string(dg)), nil)
	if resp, err := reg.client.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	resp, err := reg.do(ctx, http.MethodPost, reg.url("blobs", "uploads/"), "", nil)
	if err != nil {
		return fmt.Errorf("starting upload: %w", err)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("upload session without a usable Location %q", resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", string(dg))
	loc.RawQuery = q.Encode()
	if _, err := reg.do(ctx, http.MethodPut, loc.String(), "application/octet-stream", b); err != nil {
		return fmt.Errorf("uploading %s: %w", dg, err)
	}
	return nil
}

// do sends one request with a body and wants a 2xx; the response body is
// drained and closed (headers remain readable).
func (reg *registry) do(ctx context.Context, method, u, ctype string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.ContentLength = int64(len(body))
	resp, err := reg.client.Do(req)
	if err != nil {
		return nil, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: HTTP %s: %s", method, u, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}
