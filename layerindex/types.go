package layerindex

import (
	"github.com/opencontainers/go-digest"
)

// Kind is the type of a tar entry, after normalisation of the many tar
// typeflags that mean the same thing (e.g. '0' and '\x00' and '7').
type Kind uint8

const (
	KindReg      Kind = iota + 1 // regular file
	KindDir                      // directory
	KindSymlink                  // symbolic link; Entry.Link is the target as stored
	KindHardlink                 // hard link; Entry.Link is the normalised path of the target
	KindChar                     // character device
	KindBlock                    // block device
	KindFIFO                     // named pipe
)

func (k Kind) String() string {
	switch k {
	case KindReg:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	case KindHardlink:
		return "hardlink"
	case KindChar:
		return "char"
	case KindBlock:
		return "block"
	case KindFIFO:
		return "fifo"
	}
	return "unknown"
}

// Compression is the encoding of a layer blob.
type Compression uint8

const (
	None Compression = iota // plain tar
	Gzip                    // RFC 1952, possibly several members
	Zstd                    // RFC 8878, possibly several frames and skippable frames
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "unknown"
}

// Xattr is one extended attribute from a PAX SCHILY.xattr.* (or
// LIBARCHIVE.xattr.*) record. Value is raw bytes: security.capability is binary.
type Xattr struct {
	Name  string
	Value string
}

// Entry is one tar entry of a layer, in tar order. Whiteout entries
// (.wh.*) are kept as they are stored: classifying them is the union's job
// (overlay), so that a raw per-layer view can show them.
type Entry struct {
	// Name is the normalised path: relative, cleaned, no leading "./" or
	// "/", no trailing "/"; "" is the root directory entry ("./").
	Name string
	Kind Kind
	// Mode holds the permission bits plus setuid/setgid/sticky (07777).
	Mode     uint32
	UID, GID uint32
	// Size is the logical size of a regular file's content (0 otherwise).
	Size int64
	// ModTime as Unix seconds and nanoseconds.
	ModSec  int64
	ModNsec uint32
	// Link is a symlink's target (verbatim) or a hardlink's target
	// (normalised like Name).
	Link               string
	DevMajor, DevMinor uint32
	Xattrs             []Xattr // sorted by Name
	// Offset is where the entry's content starts in the uncompressed tar
	// stream (for a sparse file: where its stored fragments start).
	Offset int64
	// Sparse marks a GNU/PAX sparse file. Its stored bytes are the
	// SparseMap fragments, back to back from Offset; the rest reads as
	// zeros.
	Sparse    bool
	SparseMap []Fragment
}

// Fragment is a stretch of a sparse file that holds data (not a hole).
type Fragment struct {
	Off, Len int64 // logical offset and length
}

// Index is the result of one pass over a layer blob: its entry table, its
// checksums and where decoding can restart. It is immutable once built and
// safe for concurrent use.
type Index struct {
	Compression      Compression
	CompressedSize   int64
	UncompressedSize int64
	Digest           digest.Digest // sha256 of the blob as stored
	DiffID           digest.Digest // sha256 of the uncompressed tar stream
	Entries          []Entry
	Checkpoints      *Checkpoints // nil for uncompressed layers
	// Chunks are digests of the stored (compressed) blob in fixed-size
	// pieces. A layer read lazily from a registry is fetched in these
	// pieces, and each is checked before a byte of it is served: the
	// blob digest alone cannot be checked without the whole blob.
	Chunks ChunkSums
	// Decoded are digests of the uncompressed stream in ChunkSize
	// pieces, recorded only for a zstd layer whose stream was kept in a
	// decoded copy (Options.Tee). That copy is a cache file anyone with
	// access to the cache directory could damage, so every piece of it is
	// checked against these before a byte of it is served.
	Decoded ChunkSums
	// TOC, for a layer indexed from its own table of contents (eStargz,
	// zstd:chunked) rather than by a pass, is where its files' bytes lie
	// and their chunk digests; Entries' offsets are then into TOC's
	// stream, and DiffID is the config's, unchecked. Such indexes are
	// never written to index files (the TOC is fetched again).
	TOC *TOC

	storedLen int64 // length of the index file it was loaded from
}

// StoredLen is the length of the index file the index was loaded from,
// as its head gives it (0 for an index built, not loaded): a head-only
// load compares it with the file to catch a truncated one up front.
func (ix *Index) StoredLen() int64 { return ix.storedLen }

// ChunkSize is the piece size of ChunkSums for new indexes: small enough
// that a random read fetches little more than one checkpoint span of
// compressed bytes, large enough that the table stays ~64 bytes per MiB.
const ChunkSize = 512 << 10

// ChunkSums are the sha256 digests of a blob cut into Size-byte pieces
// (the last one shorter).
type ChunkSums struct {
	Size int64
	Sums [][32]byte
}

// Count is how many pieces a blob of n bytes has.
func (c ChunkSums) Count(n int64) int {
	if c.Size <= 0 {
		return 0
	}
	return int((n + c.Size - 1) / c.Size)
}
