// Package blobs finds an image's manifest, config and layer blobs and gives
// random access to blob bytes. It reads OCI image layouts (directories and
// tar archives), `docker save` archives and images in registries (docker://
// and bare references such as alpine:3.20), without extracting anything and
// without downloading a layer before it is read.
//
// # What is verified where
//
// Metadata is verified here, before OpenImage returns: every image index,
// manifest and config that is read has its digest (and size, when the
// descriptor gives one) checked, and each is read whole under a size cap so
// a hostile source cannot exhaust memory. Digests from JSON are validated
// before they become paths, so "sha256:../../x" cannot escape blobs/. The
// config's rootfs.type must be "layers" (config.md: an unknown value is an
// error for anyone unpacking) and its rootfs.diff_ids must have one valid
// digest per layer. A manifest that a registry serves for a tag has no
// digest to check against: its digest is computed from the bytes
// (Docker-Content-Digest is only a claim).
//
// Layer blobs are NOT verified here: hashing gigabytes twice would double
// the cost of a mount. OpenImage only checks that each local layer file
// exists and has the size its descriptor says; a registry layer is not
// requested at all (its descriptor must give a size). The layer indexer
// reads every layer once, streaming (RemoteBlob.Stream for a registry
// layer), and verifies it there: the compressed digest
// (Layer.Descriptor.Digest) when known, and always the DiffID of the
// uncompressed tar. A layer whose bytes fail that check must not be served.
// After that pass a RemoteBlob reads in chunks, each checked against the
// chunk digests the index recorded (SetChunkSums) before any of its bytes
// is returned; until SetChunkSums it fails (ErrUnverified), so no byte from
// the network is served unverified.
//
// In the legacy docker-archive format the compressed digest of a layer is
// not recorded anywhere. Layer.Descriptor.Digest is then the sha256 in the
// member name when it is blobs/sha256/<hex> (newer docker save), and empty
// otherwise; with an empty digest only the DiffID can be verified. The
// Manifest of a docker-archive Image is synthesised (OCI config media
// type, member sizes; layers without a media type, since docker save
// records none and layerindex.Detect tells a layer's format from its
// bytes) so callers can treat every source alike; its ManifestDigest is
// the digest of that synthesised JSON. blobs does not interpret layer
// media types at all: layerindex owns the one mapping to formats.
//
// # Selection
//
// A source's REF picks an image (ref.name annotation, RepoTag or @N); an
// image index is resolved by Options.Platform (default HostPlatform),
// through nested indexes. A source that holds a single manifest is used
// whatever its platform: mounting reads files and runs nothing.
//
// # Archives
//
// oci-archive and docker-archive files are indexed in one pass over the
// tar headers (seeking past member data); a blob is then a region of the
// archive file. Compressed archives are refused: a region of a compressed
// stream cannot be read at random.
//
// # Registries
//
// A docker:// source is opened by authenticating once (RemoteOptions:
// credentials, TLS, plain HTTP), resolving and verifying manifest and
// config as above, and wrapping each layer in a *RemoteBlob that fetches
// ranges on demand through an in-memory chunk cache and the on-disk range
// cache shared by mounts (RemoteOptions.ChunkDir). Failed, short or wrong
// answers are retried, then fail the read; a stalled registry fails it
// within seconds. Image.Remote is the repository, for layer indexes
// published next to the image (FetchIndexes, PushIndexes). Details:
// docs/DESIGN.md, "Registry sources".
//
// # Concurrency and lifetime
//
// An Image is immutable after OpenImage. Its Blobs are safe for concurrent
// ReadAt: a local source's are FileBlobs (pread on an *os.File; blobs of
// one archive share the file), so the FUSE layer can splice from the file;
// a registry's are RemoteBlobs, whose concurrent readers of one chunk share
// one request. The files stay open until Image.Close, and reads from them
// after Close fail; for a registry source Close waits for the range
// cache's background pruning.
package blobs

import (
	// Register the hashes go-digest needs; without them Validate reports
	// every sha256 digest as unsupported.
	_ "crypto/sha256"
	_ "crypto/sha512"
)
