package blobs

import "errors"

// Sentinel errors. Every error returned by this package wraps at most a few of
// these with %w, so callers can branch with errors.Is while the message still
// names the source and the blob. The texts are short on purpose: they are
// spliced into sentences ("docker schema1 manifests are not supported").
var (
	// ErrNotFound: a requested image, reference, platform or blob is absent.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch: bytes (or the size) of an index, manifest, config or
	// layer file do not match the descriptor that names them.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnknownMediaType: a manifest or config has a media type this
	// package cannot interpret (an artifact's config, say). Layer media
	// types are layerindex's to interpret (layerindex.ErrUnknownMediaType).
	ErrUnknownMediaType = errors.New("unknown media type")
	// ErrUnsupported: valid input that ocimount does not handle (compressed
	// archives, sparse archive members, schema1 manifests, layout versions
	// other than 1.0.0, transports other than oci, oci-archive,
	// docker-archive and docker).
	ErrUnsupported = errors.New("not supported")
	// ErrInvalid: malformed input: bad source or platform syntax, bad JSON,
	// hostile digests, inconsistent manifests, truncated archives.
	ErrInvalid = errors.New("invalid")
)
