package blobs

import "errors"

// Sentinel errors. Every error returned by this package wraps at most a few of
// these with %w, so callers can branch with errors.Is while the message still
// names the source and the blob. The texts are short on purpose: they are
// spliced into sentences ("registry sources are not supported yet").
var (
	// ErrNotFound: a requested image, reference, platform or blob is absent.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch: bytes (or the size) of an index, manifest, config or
	// layer file do not match the descriptor that names them.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnknownMediaType: a manifest, config or layer has a media type this
	// package cannot interpret (for example an encrypted layer).
	ErrUnknownMediaType = errors.New("unknown media type")
	// ErrUnsupported: valid input that ocimount does not handle (registry
	// sources, compressed archives, schema1 manifests, other transports).
	ErrUnsupported = errors.New("not supported")
	// ErrInvalid: malformed input: bad source or platform syntax, bad JSON,
	// hostile digests, inconsistent manifests, truncated archives.
	ErrInvalid = errors.New("invalid")
)
