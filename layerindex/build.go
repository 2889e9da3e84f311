package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"net/url"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors. Every error Build returns for bad input wraps one of
// these (or ErrCorrupt from the codec) so callers can tell bad layers from
// I/O trouble.
var (
	// ErrFormat: the tar stream is malformed or uses something we refuse.
	ErrFormat = errors.New("invalid tar entry")
	// ErrUnsafePath: an entry name or hardlink target climbs out of the root.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrDigestMismatch: the blob or its uncompressed stream does not hash
	// to what the manifest or config promised.
	ErrDigestMismatch = errors.New("digest mismatch")
)

// EntryError says which entry of a layer is at fault.
type EntryError struct {
	Entry  string // the name as stored in the tar
	Offset int64  // uncompressed offset of the entry's data
	Err    error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("entry %q (at %d): %v", e.Entry, e.Offset, e.Err)
}
func (e *EntryError) Unwrap() error { return e.Err }

// Options tune Build. The zero value is usable.
type Options struct {
	// Span is the distance between decompression checkpoints in
	// uncompressed bytes; 0 means DefaultSpan.
	Span int64
	// Digest, if set, is the blob digest the stream must hash to.
	Digest digest.Digest
	// DiffID, if set, is the digest the uncompressed stream must hash to
	// (config rootfs.diff_ids).
	DiffID digest.Digest
	// Size, if > 0, is the blob size the stream must have.
	Size int64
	// Progress, if set, is called with the number of blob bytes read so
	// far, every few MiB and at the end.
	Progress func(done int64)
	// Tee, if non-nil, receives the whole uncompressed stream as it is
	// decoded. It is how a single-frame zstd layer is decoded once into a
	// local cache file instead of being re-decoded from its start.
	Tee io.Writer
}

// Build reads a layer blob once, sequentially, and returns its index. The
// same pass decompresses (recording checkpoints), parses the tar, and
// verifies the blob digest, size and DiffID, so that a mounted image never
// serves bytes that were not verified.
func Build(ctx context.Context, blob io.Reader, c Compression, o Options) (*Index, error) {
	var blobHash hash.Hash = sha256.New()
	if o.Digest != "" && o.Digest.Algorithm() != digest.SHA256 && o.Digest.Algorithm().Available() {
		blobHash = o.Digest.Algorithm().Hash()
	}
	chunks := &chunkHasher{size: ChunkSize, h: sha256.New()}
	blobHashes := newAsyncWriter(io.MultiWriter(blobHash, chunks))
	defer blobHashes.Close()
	cin := &countingReader{r: io.TeeReader(blob, blobHashes), ctx: ctx, progress: o.Progress, recFrom: -1}
	// notTheLayer turns a failure to decode or parse into the digest
	// mismatch it may really be: bytes that are not the layer's (a
	// registry or mirror serving another blob under its digest) fail in
	// the decompressor first, and "inflate: corrupt stream" would blame
	// the layer. So the rest of the blob is read and hashed before the
	// decoding error is believed.
	notTheLayer := func(err error) error {
		if o.Digest == "" || errors.Is(err, ErrDigestMismatch) || ctx.Err() != nil || cin.err != nil {
			return err
		}
		limit := int64(math.MaxInt64)
		if o.Size > 0 {
			limit = max(o.Size-cin.n, 0) + 1 // one more byte tells a longer blob
		}
		if _, derr := io.Copy(io.Discard, io.LimitReader(cin, limit)); derr != nil || cin.err != nil {
			return err // could not read it all: the decoding error stands
		}
		blobHashes.Close()
		if o.Size > 0 && cin.n > o.Size {
			// Read only until it was longer (the decoder may have read
			// ahead past the size): cin.n is not the blob's size.
			return fmt.Errorf("blob is longer than the %d bytes its descriptor says: these are not the layer's bytes: %w (decoding them failed: %v)", o.Size, ErrDigestMismatch, err)
		}
		if o.Size > 0 && cin.n != o.Size {
			return fmt.Errorf("blob is %d bytes, not the %d its descriptor says: these are not the layer's bytes: %w (decoding them failed: %v)", cin.n, o.Size, ErrDigestMismatch, err)
		}
		if got := digest.NewDigest(o.Digest.Algorithm(), blobHash); got != o.Digest {
			return fmt.Errorf("blob hashes to %s, not to its digest %s: these are not the layer's bytes: %w (decoding them failed: %v)", got, o.Digest, ErrDigestMismatch, err)
		}
		return err
	}
	ir, err := NewIndexingReader(c, cin, o.Span)
	if err != nil {
		return nil, notTheLayer(err)
	}
	diffHash := sha256.New()
	diffHashing := newAsyncWriter(diffHash)
	defer diffHashing.Close()
	un := &countingReader{r: ir, hash: diffHashing, tee: o.Tee, ctx: ctx, recFrom: -1}
	var decoded *chunkHasher
	var decHashing *asyncWriter
	if o.Tee != nil {
		// The decoded copy's pieces are hashed on a goroutine of their
		// own, like the DiffID, so the chain does not wait for them.
		decoded = &chunkHasher{size: ChunkSize, h: sha256.New()}
		decHashing = newAsyncWriter(decoded)
		defer decHashing.Close()
		un.tee = io.MultiWriter(o.Tee, decHashing)
	}

	ix := &Index{Compression: c}
	if err := readTar(un, ix); err != nil {
		return nil, notTheLayer(err)
	}
	// The diffID covers the whole uncompressed stream, including the
	// end-of-archive blocks and any padding after them, and draining it
	// lets the codec check the trailer of the last gzip member or frame.
	if _, err := io.Copy(io.Discard, un); err != nil {
		return nil, notTheLayer(fmt.Errorf("after end of archive: %w", err))
	}
	// Drain any compressed bytes the decoder did not need (none for a
	// valid stream: the codec refuses anything after the last gzip member
	// or zstd frame, zeros too) so the blob digest covers every byte.
	if _, err := io.Copy(io.Discard, cin); err != nil {
		return nil, err
	}
	ix.CompressedSize = cin.n
	ix.UncompressedSize = un.n
	blobHashes.Close() // the sums below are complete only after these
	diffHashing.Close()
	if o.Progress != nil {
		o.Progress(cin.n)
	}
	ix.Digest = digest.NewDigest(digest.SHA256, blobHash)
	if o.Digest != "" {
		ix.Digest = digest.NewDigest(o.Digest.Algorithm(), blobHash)
	}
	ix.DiffID = digest.NewDigest(digest.SHA256, diffHash)
	if o.Size > 0 && o.Size != ix.CompressedSize {
		return nil, fmt.Errorf("blob is %d bytes, descriptor says %d: %w", ix.CompressedSize, o.Size, ErrDigestMismatch)
	}
	if o.Digest != "" && o.Digest != ix.Digest {
		return nil, fmt.Errorf("blob hashes to %s, descriptor says %s: %w", ix.Digest, o.Digest, ErrDigestMismatch)
	}
	if o.DiffID != "" && o.DiffID != ix.DiffID {
		return nil, fmt.Errorf("uncompressed layer hashes to %s, config diff_id says %s: %w", ix.DiffID, o.DiffID, ErrDigestMismatch)
	}
	if f, _ := c.Format(); !f.plain {
		ix.Checkpoints = ir.Checkpoints()
	}
	ix.Chunks = chunks.finish()
	if decoded != nil {
		decHashing.Close()
		ix.Decoded = decoded.finish()
	}
	return ix, nil
}

// chunkHasher records the sha256 of every size-byte piece written to it.
type chunkHasher struct {
	size int64
	n    int64 // bytes in the current piece
	h    hash.Hash
	sums [][32]byte
}

func (c *chunkHasher) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), c.size-c.n)
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n == c.size {
			c.sums = append(c.sums, [32]byte(c.h.Sum(nil)))
			c.h.Reset()
			c.n = 0
		}
	}
	return total, nil
}

func (c *chunkHasher) finish() ChunkSums {
	if c.n > 0 {
		c.sums = append(c.sums, [32]byte(c.h.Sum(nil)))
		c.n = 0
	}
	return ChunkSums{Size: c.size, Sums: c.sums}
}

// countingReader counts (and optionally hashes and tees) what passes
// through it, and checks for cancellation every few MiB.
type countingReader struct {
	r    io.Reader
	n    int64
	hash io.Writer
	tee  io.Writer
	ctx  context.Context
	tick int64
	err  error // the first error other than io.EOF from r
	// rec, when recFrom >= 0, collects the bytes at stream positions >=
	// recFrom: the raw header blocks of the entry being parsed, where old
	// GNU and PAX 1.0 sparse maps live.
	rec     []byte
	recFrom int64
	// progress is told the count every few MiB.
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n-c.tick > 4<<20 {
		c.tick = c.n
		if c.progress != nil {
			c.progress(c.n)
		}
		if c.ctx != nil {
			if err := c.ctx.Err(); err != nil {
				return 0, err
			}
		}
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	if c.recFrom >= 0 && n > 0 && len(c.rec) < maxHeaderBytes {
		if skip := c.recFrom - c.n; skip < int64(n) {
			c.rec = append(c.rec, p[max(skip, 0):n]...)
		}
	}
	if n > 0 {
		c.n += int64(n)
		if c.hash != nil {
			c.hash.Write(p[:n])
		}
		if c.tee != nil {
			if _, werr := c.tee.Write(p[:n]); werr != nil {
				return n, werr
			}
		}
	}
	return n, err
}

// readTar parses the tar stream with archive/tar (which handles ustar, GNU
// and PAX headers, long names and sparse maps) and records where each
// entry's data starts by watching how far the reader got: archive/tar reads
// headers in whole 512-byte blocks and never reads ahead of them.
func readTar(un *countingReader, ix *Index) error {
	tr := tar.NewReader(un)
	next := int64(0) // where the next entry's first header block starts
	// The previous entry, to name it when the stream ends inside the data
	// its header declares (archive/tar only finds out while looking for
	// the next header).
	var prevName string
	var prevDataEnd, prevSize int64
	for {
		hdrStart := next
		un.rec, un.recFrom = un.rec[:0], hdrStart
		hdr, err := tr.Next()
		un.recFrom = -1
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			// With GODEBUG=tarinsecurepath=0 archive/tar flags names we
			// confine or refuse ourselves (CleanPath); carry on.
			err = nil
		}
		if err == io.EOF {
			if un.n%512 != 0 {
				return fmt.Errorf("tar stream ends mid-block at %d (truncated): %w", un.n, ErrFormat)
			}
			// archive/tar ends quietly when the stream stops after a PAX
			// or long-name header; such a header without its entry means
			// the layer was cut short.
			if bytes.ContainsFunc(un.rec, func(r rune) bool { return r != 0 }) {
				return fmt.Errorf("tar stream ends after a header at %d without its entry (truncated): %w", hdrStart, ErrFormat)
			}
			return nil
		}
		if err != nil {
			if un.err != nil {
				// A decompression or I/O error surfaced through the tar
				// reader: report it as what it is.
				return fmt.Errorf("at uncompressed offset %d: %w", un.n, un.err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) && un.n < prevDataEnd {
				return &EntryError{Entry: prevName, Offset: prevDataEnd - prevSize,
					Err: fmt.Errorf("size %d runs past the end of the layer at offset %d: %w", prevSize, un.n, ErrFormat)}
			}
			return fmt.Errorf("tar header at %d: %w: %w", hdrStart, ErrFormat, err)
		}
		dataStart := un.n
		sparse := hdr.Typeflag == tar.TypeGNUSparse
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				sparse = true
			}
		}
		var frags []Fragment
		prevName, prevSize = hdr.Name, 0
		switch {
		case sparse:
			var phys int64
			frags, phys, err = sparseMap(hdr, un.rec)
			if err != nil {
				return &EntryError{Entry: hdr.Name, Offset: dataStart, Err: err}
			}
			next, prevSize = dataStart+align512(phys), phys
		case hdr.Typeflag == tar.TypeXGlobalHeader:
			// archive/tar has consumed the records already.
			next = align512(un.n)
		case headerOnly(hdr.Typeflag):
			// archive/tar treats these as having no data whatever their
			// size field says; so do we.
			next = dataStart
		default:
			next, prevSize = dataStart+align512(hdr.Size), hdr.Size
		}
		prevDataEnd = dataStart + prevSize
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX global headers are ignored, as by Go-based extractors
		}
		e, err := entryFromHeader(hdr)
		if err != nil {
			return &EntryError{Entry: hdr.Name, Offset: dataStart, Err: err}
		}
		e.Offset = dataStart
		if sparse {
			e.Sparse, e.SparseMap = true, frags
		}
		ix.Entries = append(ix.Entries, e)
	}
}

func align512(n int64) int64 { return (n + 511) &^ 511 }

// maxHeaderBytes bounds the raw header bytes kept per entry (long names,
// PAX records, sparse maps); larger sparse maps are refused.
const maxHeaderBytes = 4 << 20

func headerOnly(t byte) bool {
	switch t {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

func entryFromHeader(h *tar.Header) (Entry, error) {
	var e Entry
	name, err := CleanPath(h.Name)
	if err != nil {
		return e, err
	}
	e.Name = name
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		e.Kind = KindReg
		e.Size = h.Size
		if e.Size < 0 {
			return e, fmt.Errorf("negative size: %w", ErrFormat)
		}
	case tar.TypeDir:
		e.Kind = KindDir
	case tar.TypeSymlink:
		e.Kind = KindSymlink
		e.Link = h.Linkname
		if e.Link == "" {
			return e, fmt.Errorf("symlink with empty target: %w", ErrFormat)
		}
	case tar.TypeLink:
		e.Kind = KindHardlink
		t, err := CleanPath(h.Linkname)
		if err != nil {
			return e, fmt.Errorf("hardlink target %q: %w", h.Linkname, err)
		}
		if t == "" {
			return e, fmt.Errorf("hardlink to the root directory: %w", ErrFormat)
		}
		e.Link = t
	case tar.TypeChar:
		e.Kind = KindChar
	case tar.TypeBlock:
		e.Kind = KindBlock
	case tar.TypeFifo:
		e.Kind = KindFIFO
	default:
		return e, fmt.Errorf("unsupported tar type %q: %w", h.Typeflag, ErrFormat)
	}
	if e.Name == "" && e.Kind != KindDir {
		return e, fmt.Errorf("root entry is a %s, not a directory: %w", e.Kind, ErrFormat)
	}
	if e.Kind == KindChar || e.Kind == KindBlock {
		if h.Devmajor < 0 || h.Devmajor > math.MaxUint32 || h.Devminor < 0 || h.Devminor > math.MaxUint32 {
			return e, fmt.Errorf("device number out of range: %w", ErrFormat)
		}
		e.DevMajor, e.DevMinor = uint32(h.Devmajor), uint32(h.Devminor)
	}
	if h.Uid < 0 || int64(h.Uid) > math.MaxUint32 || h.Gid < 0 || int64(h.Gid) > math.MaxUint32 {
		return e, fmt.Errorf("uid/gid %d/%d out of range: %w", h.Uid, h.Gid, ErrFormat)
	}
	e.UID, e.GID = uint32(h.Uid), uint32(h.Gid)
	e.Mode = uint32(h.Mode) & 0o7777
	e.ModSec = h.ModTime.Unix()
	e.ModNsec = uint32(h.ModTime.Nanosecond())
	xs, err := xattrsFromPAX(h.PAXRecords)
	if err != nil {
		return e, err
	}
	e.Xattrs = xs
	return e, nil
}

// xattrsFromPAX collects extended attributes from the two PAX conventions
// seen in layers: SCHILY.xattr.NAME=raw bytes (GNU tar, Go, Docker) and
// LIBARCHIVE.xattr.URLENCODED-NAME=base64 (bsdtar).
func xattrsFromPAX(recs map[string]string) ([]Xattr, error) {
	var xs []Xattr
	seen := map[string]bool{}
	for k, v := range recs {
		switch {
		case strings.HasPrefix(k, "SCHILY.xattr."):
			n := k[len("SCHILY.xattr."):]
			if n == "" {
				return nil, fmt.Errorf("empty xattr name: %w", ErrFormat)
			}
			xs = append(xs, Xattr{Name: n, Value: v})
			seen[n] = true
		}
	}
	for k, v := range recs {
		if !strings.HasPrefix(k, "LIBARCHIVE.xattr.") {
			continue
		}
		n, err := url.PathUnescape(k[len("LIBARCHIVE.xattr."):])
		if err != nil || n == "" {
			return nil, fmt.Errorf("bad LIBARCHIVE xattr name %q: %w", k, ErrFormat)
		}
		if seen[n] {
			continue // the SCHILY form wins when both are present
		}
		val, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			if val, err = base64.RawStdEncoding.DecodeString(v); err != nil {
				return nil, fmt.Errorf("bad LIBARCHIVE xattr value for %q: %w", n, ErrFormat)
			}
		}
		xs = append(xs, Xattr{Name: n, Value: string(val)})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}

// CleanPath normalises a tar entry name or hardlink target: leading "/" and
// "./" are dropped (absolute names are confined to the root, as GNU tar and
// every container extractor do), "//" and "." components collapse, a
// trailing "/" goes; ".." is resolved lexically, and a name that would
// climb above the root is refused with ErrUnsafePath rather than silently
// rewritten, because such an entry is hostile, never an accident. The root
// itself is "".
func CleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("NUL in name: %w", ErrFormat)
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("%q climbs out of the root: %w", name, ErrUnsafePath)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, p)
		}
	}
	return strings.Join(out, "/"), nil
}
