package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// TOC layers: eStargz and zstd:chunked blobs carry their own table of
// contents, whose digest the manifest's layer annotations give. A layer's
// Index is then built from the TOC alone (a footer and the TOC fetched by
// range, no pass over the layer): its entries, and a chunk table that says
// where each file's bytes lie compressed and what their sha256 is. Reads
// decode only the chunks they touch and check each against its digest
// before serving a byte of it (TOC.NewReaderAt).
//
// The uncompressed stream of such an index is not the layer's tar stream
// (that would need the pass the TOC saves): it is the files' contents back
// to back in TOC order, each file's chunks contiguous, and Entry.Offset is
// a file's place in it. The DiffID therefore cannot be checked (it is the
// config's, unverified): only a full read can (ocimount index --verify).

// TOCFormat is a layer format whose blob carries a table of contents: the
// single home of what is specific to it (the annotations that announce it,
// how its footer and TOC are found and parsed, its bookkeeping entries).
// Blobs of it are also valid blobs of Base, which is how a layer whose TOC
// cannot be trusted is read instead (one full pass).
type TOCFormat struct {
	// Name is what users see ("eStargz"), Source where an index built
	// from it came from ("eStargz TOC").
	Name, Source string
	// Base is the format the blob is readable as without the TOC.
	Base *Format
	// announced reports whether a layer's annotations point at a TOC.
	announced func(ann map[string]string) bool
	// load reads and verifies the TOC of a blob of size bytes and builds
	// the index's entries and chunks.
	load func(ctx context.Context, blob io.ReaderAt, size int64, ann map[string]string) (*tocBuild, error)
	// hidden are bookkeeping entries the union does not show.
	hidden []string
}

var tocFormats = []*TOCFormat{&estargzFormat, &zstdChunkedFormat}

// TOCFormatOf returns the TOC format a layer of format f with descriptor
// annotations ann announces, or nil if none.
func TOCFormatOf(f *Format, ann map[string]string) *TOCFormat {
	if f == nil || len(ann) == 0 {
		return nil
	}
	for _, t := range tocFormats {
		if t.Base == f && t.announced(ann) {
			return t
		}
	}
	return nil
}

// Hidden lists the bookkeeping entries of the format (names at the layer's
// root) that a merged view hides, as stargz-snapshotter does; a raw view of
// the layer shows them. They are hidden whatever the index came from (the
// TOC or a full pass), so both give the same tree.
func (t *TOCFormat) Hidden() []string { return t.hidden }

func (t *TOCFormat) String() string { return t.Name }

// ErrBadTOC: a layer's table of contents cannot be trusted (it does not
// match its digest, or describes something impossible). The layer is then
// read the ordinary way.
var ErrBadTOC = errors.New("unusable table of contents")

// Bounds on what a TOC may make us fetch or hold: a hostile one must not
// make one read fetch (or one mount hold) gigabytes.
const (
	maxTOCCompressed = 64 << 20  // the compressed TOC
	maxTOCJSON       = 512 << 20 // the TOC JSON
	maxTOCChunk      = 64 << 20  // one chunk's bytes, and what precedes it in its member
	maxTOCEntries    = 8 << 20
	// The sum of the chunks' Skip (placeChunks) may be this many times
	// the layer's size, plus the slack.
	maxTOCSkipFactor = 64
	maxTOCSkipSlack  = 1 << 30
)

// Load builds the index of a layer blob (digest d, size bytes; diffID as
// the config says) from its table of contents, verified against the
// annotations. No byte of the layer besides the footer and the TOC is
// read. Errors wrap ErrBadTOC (or ErrUnsafePath, ErrFormat for an entry,
// as an EntryError naming it) or are I/O errors.
func (t *TOCFormat) Load(ctx context.Context, blob io.ReaderAt, size int64, d, diffID digest.Digest, ann map[string]string) (*Index, error) {
	b, err := t.load(ctx, blob, size, ann)
	if err != nil {
		return nil, err
	}
	ix := &Index{
		Compression:      t.Base.Compression,
		CompressedSize:   size,
		UncompressedSize: b.out,
		Digest:           d,
		DiffID:           diffID,
		Entries:          b.entries,
		TOC:              &TOC{Format: t, Codec: t.Base.Compression, Chunks: b.chunks, Size: b.out, Digest: d},
	}
	ix.TOC.names = make([]string, len(b.entries))
	for i := range b.entries {
		ix.TOC.names[i] = b.entries[i].Name
		if b.entries[i].Name == prefetchLandmark && ix.TOC.prefetch == 0 {
			ix.TOC.prefetch = i
		}
	}
	return ix, nil
}

// TOC is the chunk table of an index built from a layer's table of
// contents: the layer's uncompressed stream (files' contents back to back)
// as chunks, each decoded from its own gzip member or zstd frame and
// checked against its digest.
type TOC struct {
	Format *TOCFormat
	Codec  Compression // Gzip or Zstd
	Chunks []TOCChunk  // by Out, contiguous from 0
	Size   int64       // the stream's length
	Digest digest.Digest
	names  []string // entry names, for messages (the entries go after the merge)
	// prefetch: the entries before the eStargz prefetch landmark, the
	// files the image's builder wants at hand first (0: no landmark).
	prefetch int
}

// TOCChunk is one piece of a file's content.
type TOCChunk struct {
	Out int64 // offset in the index's uncompressed stream
	Len int64
	// In..InEnd are the compressed bytes to fetch: from the start of the
	// gzip member (zstd frame) the chunk's data starts in, Skip
	// uncompressed bytes into it.
	In, InEnd, Skip int64
	Sum             [32]byte // sha256 of the chunk's Len bytes
	Zeros           bool     // zstd:chunked chunkType "zeros": Len zero bytes, nothing stored
	Entry           int32    // the entry it belongs to, for messages
}

// tocEntry is one entry of an eStargz TOC or a zstd:chunked manifest (the
// same JSON; zstd:chunked adds endOffset and chunkType).
type tocEntry struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Size        int64             `json:"size"`
	ModTime     string            `json:"modtime"`
	LinkName    string            `json:"linkName"`
	Mode        int64             `json:"mode"`
	UID         int64             `json:"uid"`
	GID         int64             `json:"gid"`
	DevMajor    int64             `json:"devMajor"`
	DevMinor    int64             `json:"devMinor"`
	Xattrs      map[string][]byte `json:"xattrs"`
	Digest      string            `json:"digest"`
	Offset      int64             `json:"offset"`
	EndOffset   int64             `json:"endOffset"`
	InnerOffset int64             `json:"innerOffset"`
	ChunkOffset int64             `json:"chunkOffset"`
	ChunkSize   int64             `json:"chunkSize"`
	ChunkDigest string            `json:"chunkDigest"`
	ChunkType   string            `json:"chunkType"`
}

type tocJSON struct {
	Version int        `json:"version"`
	Entries []tocEntry `json:"entries"`
}

// tocBuild is what a format's load makes of a TOC.
type tocBuild struct {
	entries []Entry
	chunks  []TOCChunk
	out     int64
	// endGiven[i]: chunk i's compressed end was given (a zstd:chunked
	// chunk entry's endOffset); else it runs to the next chunk's member,
	// or to fileEnd[i] if that comes first: the end of the file's
	// compressed data, which a zstd:chunked file entry's endOffset gives
	// (containers/storage's writer sets it on the file, not its chunks).
	endGiven []bool
	fileEnd  []int64
	// curFileEnd is fileEnd of the file whose chunks are being read.
	curFileEnd int64
}

// tocError names the entry of a TOC at fault.
func tocError(i int, name string, format string, args ...any) error {
	return fmt.Errorf("TOC entry %d %q: %s: %w", i, name, fmt.Sprintf(format, args...), ErrBadTOC)
}

// buildTOC turns TOC entries into index entries and chunks. dataEnd is
// where the layer's file data ends (the TOC's start): no chunk may lie
// beyond it.
func buildTOC(toc *tocJSON, dataEnd int64) (*tocBuild, error) {
	if toc.Version != 1 {
		return nil, fmt.Errorf("TOC version %d, want 1: %w", toc.Version, ErrBadTOC)
	}
	if len(toc.Entries) > maxTOCEntries {
		return nil, fmt.Errorf("%d TOC entries: %w", len(toc.Entries), ErrBadTOC)
	}
	b := &tocBuild{entries: make([]Entry, 0, len(toc.Entries))}
	cur := -1         // index entry whose chunks are being read
	var fileOff int64 // next chunkOffset expected
	usedFileDigest := false
	finish := func(i int) error {
		if cur < 0 {
			return nil
		}
		e := &b.entries[cur]
		if fileOff != e.Size {
			return tocError(i, e.Name, "chunks cover %d of %d bytes", fileOff, e.Size)
		}
		cur = -1
		return nil
	}
	for i := range toc.Entries {
		te := &toc.Entries[i]
		if te.Type == "chunk" {
			name, err := CleanPath(te.Name)
			if err != nil || cur < 0 || b.entries[cur].Name != name {
				return nil, tocError(i, te.Name, "chunk without its file")
			}
			if usedFileDigest {
				return nil, tocError(i, te.Name, "more chunks after one checked by the whole file's digest")
			}
			if err := b.addChunk(i, te, cur, &fileOff, &usedFileDigest, dataEnd); err != nil {
				return nil, err
			}
			continue
		}
		if err := finish(i); err != nil {
			return nil, err
		}
		h, err := tocHeader(te)
		if err != nil {
			return nil, tocError(i, te.Name, "%v", err)
		}
		e, err := entryFromHeader(h)
		if err != nil {
			return nil, &EntryError{Entry: te.Name, Err: err}
		}
		e.Offset = b.out
		b.entries = append(b.entries, e)
		if e.Kind == KindReg && e.Size > 0 {
			cur, fileOff, usedFileDigest, b.curFileEnd = len(b.entries)-1, 0, false, 0
			if err := b.addChunk(i, te, cur, &fileOff, &usedFileDigest, dataEnd); err != nil {
				return nil, err
			}
		}
	}
	if err := finish(len(toc.Entries)); err != nil {
		return nil, err
	}
	return b, b.placeChunks(dataEnd)
}

// addChunk records te's chunk of entry cur.
func (b *tocBuild) addChunk(i int, te *tocEntry, cur int, fileOff *int64, usedFileDigest *bool, dataEnd int64) error {
	e := &b.entries[cur]
	if te.ChunkOffset != *fileOff {
		return tocError(i, te.Name, "chunk at file offset %d, want %d", te.ChunkOffset, *fileOff)
	}
	n := te.ChunkSize
	if n == 0 {
		n = e.Size - *fileOff
	}
	if n <= 0 || n > e.Size-*fileOff || n > maxTOCChunk {
		return tocError(i, te.Name, "chunk of %d bytes at %d in a file of %d", n, *fileOff, e.Size)
	}
	c := TOCChunk{Out: b.out, Len: n, Entry: int32(cur)}
	switch te.ChunkType {
	case "", "data":
		if te.Offset <= 0 || te.Offset >= dataEnd {
			return tocError(i, te.Name, "data at compressed offset %d, outside the layer's data (0..%d)", te.Offset, dataEnd)
		}
		if te.InnerOffset < 0 || te.InnerOffset > maxTOCChunk {
			return tocError(i, te.Name, "inner offset %d", te.InnerOffset)
		}
		if te.EndOffset != 0 && (te.EndOffset <= te.Offset || te.EndOffset > dataEnd) {
			return tocError(i, te.Name, "compressed range %d-%d outside the layer's data (0..%d)", te.Offset, te.EndOffset, dataEnd)
		}
		if te.Type == "chunk" {
			c.InEnd = te.EndOffset
		} else {
			b.curFileEnd = te.EndOffset
		}
		sum, ok := sha256Of(te.ChunkDigest)
		if !ok && te.ChunkDigest == "" && *fileOff == 0 && n == e.Size {
			// A file stored as one chunk may carry only the file's digest.
			sum, ok = sha256Of(te.Digest)
			*usedFileDigest = ok
		}
		if !ok {
			return tocError(i, te.Name, "chunk digest %q is not a sha256 digest", te.ChunkDigest)
		}
		c.In, c.Skip, c.Sum = te.Offset, te.InnerOffset, sum
	case "zeros":
		c.Zeros = true
	default:
		return tocError(i, te.Name, "unknown chunk type %q", te.ChunkType)
	}
	b.chunks = append(b.chunks, c)
	b.endGiven = append(b.endGiven, c.InEnd != 0)
	b.fileEnd = append(b.fileEnd, b.curFileEnd)
	b.out += n
	*fileOff += n
	return nil
}

// placeChunks gives every stored chunk the end of its compressed range
// (where not given: the next chunk's member, or dataEnd) and refuses
// chunks that go back or overlap: in a layer the writers make, members
// follow the TOC's order.
func (b *tocBuild) placeChunks(dataEnd int64) error {
	var idx []int
	for i := range b.chunks {
		if !b.chunks[i].Zeros {
			idx = append(idx, i)
		}
	}
	// nextIn[k]: the first member start after chunk idx[k]'s, by one
	// backward pass (chunks sharing a member, innerOffset, may be many).
	nextIn := make([]int64, len(idx))
	for k, next := len(idx)-1, dataEnd; k >= 0; k-- {
		nextIn[k] = next
		if k > 0 && b.chunks[idx[k-1]].In != b.chunks[idx[k]].In {
			next = b.chunks[idx[k]].In
		}
	}
	// Reading a chunk decodes its member from the start, Skip bytes of it
	// thrown away: chunks packed into one member (innerOffset) cost the
	// sum of their skips to read. Writers pack small files into small
	// members; a TOC that packs thousands of tiny chunks deep into 64 MiB
	// members makes each read inflate gigabytes (a tiny blob that pins
	// the server's cores). Past a bound a few times a full pass, the TOC
	// is refused and the layer read by one pass instead.
	var skips int64
	for _, i := range idx {
		skips += b.chunks[i].Skip // each <= maxTOCChunk, at most maxTOCEntries
	}
	if limit := maxTOCSkipFactor*b.out + maxTOCSkipSlack; skips > limit {
		return fmt.Errorf("TOC chunks lie %d bytes deep into their members in all, more than %d (%d× the layer's %d bytes + %d): reading them would inflate that much: %w",
			skips, limit, maxTOCSkipFactor, b.out, maxTOCSkipSlack, ErrBadTOC)
	}
	for k, i := range idx {
		c := &b.chunks[i]
		next := nextIn[k]
		if k > 0 {
			p := &b.chunks[idx[k-1]]
			name := b.entries[c.Entry].Name
			switch {
			case c.In < p.In:
				return fmt.Errorf("TOC entry %q: chunk at compressed offset %d before the previous one's (%d): overlapping entries: %w", name, c.In, p.In, ErrBadTOC)
			case c.In == p.In && c.Skip < p.Skip+p.Len:
				return fmt.Errorf("TOC entry %q: chunk at %d+%d overlaps the previous one (%d+%d, %d bytes): %w", name, c.In, c.Skip, p.In, p.Skip, p.Len, ErrBadTOC)
			case c.In > p.In && p.InEnd > c.In:
				return fmt.Errorf("TOC entry %q: starts at compressed offset %d, inside the previous chunk (%d-%d): overlapping entries: %w", name, c.In, p.In, p.InEnd, ErrBadTOC)
			}
		}
		if !b.endGiven[i] {
			c.InEnd = next
			if fe := b.fileEnd[i]; fe > 0 && fe < next {
				c.InEnd = fe
			}
		}
		if c.InEnd <= c.In {
			return fmt.Errorf("TOC entry %q: compressed range %d-%d is empty: %w", b.entries[c.Entry].Name, c.In, c.InEnd, ErrBadTOC)
		}
		if c.InEnd-c.In > maxTOCChunk+(1<<20) {
			return fmt.Errorf("TOC entry %q: compressed range %d-%d is too long (%d bytes): %w", b.entries[c.Entry].Name, c.In, c.InEnd, c.InEnd-c.In, ErrBadTOC)
		}
		if c.Skip+c.Len > maxTOCChunk {
			return fmt.Errorf("TOC entry %q: chunk ends %d bytes into its member: %w", b.entries[c.Entry].Name, c.Skip+c.Len, ErrBadTOC)
		}
	}
	return nil
}

func sha256Of(s string) ([32]byte, bool) {
	var sum [32]byte
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
		return sum, false
	}
	return sum, true
}

// tocHeader is the tar header a TOC entry stands for, so that the one
// header-to-entry conversion (entryFromHeader) checks and normalises
// names, links, modes and owners for TOC layers as for tar ones.
func tocHeader(te *tocEntry) (*tar.Header, error) {
	h := &tar.Header{Name: te.Name, Mode: te.Mode, Uid: int(te.UID), Gid: int(te.GID), Linkname: te.LinkName}
	if int64(h.Uid) != te.UID || int64(h.Gid) != te.GID {
		return nil, fmt.Errorf("uid/gid %d/%d out of range", te.UID, te.GID)
	}
	switch te.Type {
	case "reg":
		h.Typeflag, h.Size = tar.TypeReg, te.Size
	case "dir":
		h.Typeflag = tar.TypeDir
	case "symlink":
		h.Typeflag = tar.TypeSymlink
	case "hardlink":
		h.Typeflag = tar.TypeLink
	case "char", "block":
		h.Typeflag = tar.TypeChar
		if te.Type == "block" {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = te.DevMajor, te.DevMinor
	case "fifo":
		h.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("unknown entry type %q", te.Type)
	}
	if te.ModTime != "" {
		t, err := time.Parse(time.RFC3339Nano, te.ModTime)
		if err != nil {
			return nil, fmt.Errorf("modtime %q: %v", te.ModTime, err)
		}
		h.ModTime = t
	} else {
		h.ModTime = time.Unix(0, 0)
	}
	if len(te.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(te.Xattrs))
		for k, v := range te.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = string(v)
		}
	}
	return h, nil
}

// readRange reads [off, off+n) of blob whole.
func readRange(blob io.ReaderAt, off, n int64) ([]byte, error) {
	buf := make([]byte, n)
	m, err := blob.ReadAt(buf, off)
	if int64(m) == n {
		return buf, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// NewReaderAt gives random access to the index's uncompressed stream,
// reading compressed bytes from raw: the blob itself, or (a registry blob)
// its unverified ranges: every chunk is checked against its digest before
// any byte of it is served. Decoded chunks go through cache under key and
// a digest of the chunk table, and through disk if it has functions (a
// registry's range cache, which keeps them across mounts).
//
// The table's digest is part of the key because a cached chunk is served
// unchecked: one blob digest can carry two chunk tables (a blob holding a
// second TOC that ends where a short descriptor size says the blob does,
// which a registry answering ranges with a total of "*" does not give
// away), and chunk i of one must never be served as chunk i of the other.
func (t *TOC) NewReaderAt(raw io.ReaderAt, cache *SpanCache, key string, disk ChunkCache) *TOCReader {
	return &TOCReader{t: t, raw: raw, cache: cache, key: "toc\x00" + key + "\x00" + t.tableKey(), disk: disk}
}

// tableKey is a digest of the chunk table: what each chunk is read from
// and what it must hash to.
func (t *TOC) tableKey() string {
	h := sha256.New()
	var b [8 * 5]byte
	for i := range t.Chunks {
		c := &t.Chunks[i]
		binary.LittleEndian.PutUint64(b[0:], uint64(c.Out))
		binary.LittleEndian.PutUint64(b[8:], uint64(c.Len))
		binary.LittleEndian.PutUint64(b[16:], uint64(c.In))
		binary.LittleEndian.PutUint64(b[24:], uint64(c.InEnd))
		binary.LittleEndian.PutUint64(b[32:], uint64(c.Skip))
		h.Write(b[:])
		h.Write(c.Sum[:])
		if c.Zeros {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:16])
}

// ChunkCache keeps decoded TOC chunks by digest across mounts. What Load
// returns is checked against the digest again before use.
type ChunkCache struct {
	Load  func(sum [32]byte) ([]byte, bool)
	Store func(sum [32]byte, data []byte)
}

// TOCReader is random access to a TOC index's stream (NewReaderAt).
type TOCReader struct {
	t     *TOC
	raw   io.ReaderAt
	cache *SpanCache
	key   string
	disk  ChunkCache
}

// ErrChunkDigest: a chunk's bytes do not match the digest its TOC gives.
var ErrChunkDigest = fmt.Errorf("chunk %w", ErrDigestMismatch)

func (r *TOCReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

func (r *TOCReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	cs := r.t.Chunks
	n := 0
	for n < len(p) && off+int64(n) < r.t.Size {
		pos := off + int64(n)
		i := sort.Search(len(cs), func(i int) bool { return cs[i].Out+cs[i].Len > pos })
		if i == len(cs) || cs[i].Out > pos {
			return n, fmt.Errorf("offset %d is in no chunk: %w", pos, ErrCorrupt)
		}
		c := &cs[i]
		if c.Zeros {
			m := int(min(int64(len(p)-n), c.Out+c.Len-pos))
			clear(p[n : n+m])
			n += m
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var data []byte
		release := noRelease
		var err error
		if r.cache != nil && c.Len <= r.cache.max {
			data, release, err = r.cache.acquirePrefix(ctx, spanKey{key: r.key, span: i}, -1, func(dst []byte, _ func([]byte, int)) ([]byte, error) {
				return r.chunk(i, dst)
			})
		} else {
			data, err = r.chunk(i, nil)
		}
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[pos-c.Out:])
		release()
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// prefetchLandmark ends the files an eStargz image wants prefetched
// (stargz-snapshotter's estargz.PrefetchLandmark; .no.prefetch.landmark
// says there are none).
const prefetchLandmark = ".prefetch.landmark"

// Prefetch puts chunks into the disk cache ahead of reads, in TOC order:
// those of the files listed before the prefetch landmark, or with all,
// every chunk. It does nothing without a disk cache (a local blob needs
// no prefetch), skips chunks already there, and stops when ctx ends or a
// chunk fails (the error; reads will try again). It returns the chunks
// fetched.
func (r *TOCReader) Prefetch(ctx context.Context, all bool) (int, error) {
	if r.disk.Load == nil || r.disk.Store == nil {
		return 0, nil
	}
	n := 0
	for i := range r.t.Chunks {
		c := &r.t.Chunks[i]
		if !all && int(c.Entry) >= r.t.prefetch {
			break // chunks follow their entries' order
		}
		if c.Zeros {
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if data, ok := r.disk.Load(c.Sum); ok && int64(len(data)) == c.Len {
			continue
		}
		if _, err := r.chunk(i, nil); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// chunk returns chunk i, checked: from the disk cache, else decoded from
// the blob (and then kept on disk).
func (r *TOCReader) chunk(i int, dst []byte) ([]byte, error) {
	c := &r.t.Chunks[i]
	if r.disk.Load != nil {
		if data, ok := r.disk.Load(c.Sum); ok && int64(len(data)) == c.Len && sha256.Sum256(data) == c.Sum {
			return data, nil
		}
	}
	data, err := r.t.decodeChunk(r.raw, i, dst)
	if err == nil && r.disk.Store != nil {
		r.disk.Store(c.Sum, data)
	}
	return data, err
}

// decodeChunk fetches chunk i's compressed range, decodes it and checks
// the chunk's digest; bytes that do not match are fetched once more (a
// registry or proxy can return wrong bytes) before the read fails.
func (t *TOC) decodeChunk(raw io.ReaderAt, i int, dst []byte) ([]byte, error) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		dst, err = t.decodeChunkOnce(raw, i, dst[:0])
		// Wrong bytes from a registry or proxy show as a digest mismatch
		// or as a stream that does not decode: fetch once more.
		if err == nil || !(errors.Is(err, ErrChunkDigest) || errors.Is(err, ErrCorrupt)) {
			return dst, err
		}
	}
	return nil, err
}

func (t *TOC) decodeChunkOnce(raw io.ReaderAt, i int, dst []byte) ([]byte, error) {
	c := &t.Chunks[i]
	where := func() string {
		name := ""
		if int(c.Entry) < len(t.names) {
			name = t.names[c.Entry]
		}
		return fmt.Sprintf("blob %s: %s entry %q chunk %d (compressed bytes %d-%d)", t.Digest, t.Format.Name, name, i, c.In, c.InEnd)
	}
	comp, err := readRange(raw, c.In, c.InEnd-c.In)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where(), err)
	}
	var dec io.Reader
	switch t.Codec {
	case Gzip:
		z, err := gzip.NewReader(bytes.NewReader(comp))
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", where(), err, ErrCorrupt)
		}
		z.Multistream(false)
		dec = z
	case Zstd:
		z := zstdPool.Get().(*zstd.Decoder)
		defer func() { z.Reset(nil); zstdPool.Put(z) }()
		if err := z.Reset(bytes.NewReader(comp)); err != nil {
			return nil, fmt.Errorf("%s: %v: %w", where(), err, ErrCorrupt)
		}
		dec = z
	default:
		return nil, fmt.Errorf("%s: codec %v: %w", where(), t.Codec, ErrUnsupported)
	}
	if _, err := io.CopyN(io.Discard, dec, c.Skip); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", where(), err, ErrCorrupt)
	}
	if int64(cap(dst)) < c.Len {
		dst = make([]byte, c.Len)
	}
	dst = dst[:c.Len]
	if _, err := io.ReadFull(dec, dst); err != nil {
		return nil, fmt.Errorf("%s: decodes to fewer than %d bytes (%v): %w", where(), c.Len, err, ErrCorrupt)
	}
	if sha256.Sum256(dst) != c.Sum {
		return nil, fmt.Errorf("%s: does not match its TOC chunk digest sha256:%x: %w", where(), c.Sum, ErrChunkDigest)
	}
	return dst, nil
}
