package blobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Options tune OpenImage.
type Options struct {
	// Platform chooses among the manifests of an image index. nil = the
	// host's (HostPlatform). It is not checked against a source that holds
	// a single manifest: mounting only reads files, so a foreign-arch
	// image is as useful as a native one.
	Platform *ocispec.Platform
	// Remote configures registry access (docker:// sources).
	Remote RemoteOptions
}

// Layer is one layer of an image, bottom-most first.
type Layer struct {
	Index int // position in Manifest.Layers
	// Descriptor is the manifest's. blobs does not interpret layer media
	// types: layerindex.Detect is the one place that maps them (and, for
	// the empty media type of a docker-archive layer, the blob's first
	// bytes) to a format. In a docker-archive the Digest is empty unless
	// the member is named blobs/sha256/<hex>.
	Descriptor ocispec.Descriptor
	DiffID     digest.Digest // Config.RootFS.DiffIDs[Index]
	// Blob is a FileBlob for local sources, a *RemoteBlob for registry
	// ones; bytes are not verified here.
	Blob Blob
}

// Image is an opened image: its metadata (verified) and its layer blobs
// (open, not verified). Close releases the files.
type Image struct {
	Source         Source
	ManifestDigest digest.Digest
	Manifest       ocispec.Manifest
	ConfigDigest   digest.Digest
	Config         ocispec.Image
	Platform       ocispec.Platform // of the chosen manifest
	Layers         []Layer
	// Remote is set for registry sources: the repository the image came
	// from, for index artifacts and statistics.
	Remote *Remote

	closeOnce sync.Once
	closers   []func() error
	closeErr  error
}

// Close closes the files behind the layer blobs; their ReadAt fails
// afterwards. Safe to call more than once.
func (im *Image) Close() error {
	im.closeOnce.Do(func() {
		var errs []error
		for _, c := range im.closers {
			errs = append(errs, c())
		}
		im.closers = nil
		im.closeErr = errors.Join(errs...)
	})
	return im.closeErr
}

// Limits on metadata blobs. They are read whole into memory, so a hostile
// source must not be able to make us allocate gigabytes; real manifests and
// configs are a few KiB, index.json and manifest.json grow with the number
// of tags.
const (
	maxMetaBlob = 4 << 20
	maxTopFile  = 16 << 20
)

// OpenImage finds the image src names, verifies its index, manifest and
// config, and opens its layer blobs. It does not read layer contents.
func OpenImage(ctx context.Context, src Source, o Options) (*Image, error) {
	want := HostPlatform()
	if o.Platform != nil {
		want = *o.Platform
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	switch src.Transport {
	case TransportDocker:
		return openRegistry(ctx, src, o, want)
	case TransportOCI:
		fi, err := os.Stat(src.Path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%s: %w: %w", src, ErrNotFound, err)
			}
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s: not a directory (an archive? use oci-archive:): %w", src, ErrInvalid)
		}
		return openOCI(ctx, src, dirStore{root: src.Path}, want)
	case TransportOCIArchive, TransportDockerArchive:
		a, err := openArchiveCtx(ctx, src.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		var im *Image
		if src.Transport == TransportOCIArchive {
			im, err = openOCI(ctx, src, a, want)
		} else {
			im, err = openDockerArchive(ctx, src, a)
		}
		if err != nil {
			a.close()
			return nil, err
		}
		im.closers = append(im.closers, a.close)
		return im, nil
	case "":
		return nil, fmt.Errorf("%q: source without transport: %w", src.Path, ErrInvalid)
	}
	return nil, fmt.Errorf("%s: transport %q is %w", src, string(src.Transport), ErrUnsupported)
}

const (
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mtSchema1        = "application/vnd.docker.distribution.manifest.v1+json"
	mtSchema1Signed  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// normMediaType drops media type parameters and case, which RFC 6838 says
// do not change the type.
func normMediaType(mt string) string {
	mt, _, _ = strings.Cut(mt, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func isIndexType(mt string) bool {
	mt = normMediaType(mt)
	return mt == ocispec.MediaTypeImageIndex || mt == mtDockerList
}

func isManifestType(mt string) bool {
	mt = normMediaType(mt)
	return mt == ocispec.MediaTypeImageManifest || mt == mtDockerManifest
}

func isSchema1Type(mt string) bool {
	mt = normMediaType(mt)
	return mt == mtSchema1 || mt == mtSchema1Signed
}
