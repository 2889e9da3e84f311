package layerindex

// This file is the compression codec layer: it turns a compressed layer blob
// into (a) a sequential uncompressed stream, read once while indexing, that
// records decompression checkpoints as a side effect, and (b) random access
// to the uncompressed stream that decodes only the span holding the bytes
// asked for. The format-specific parts live in gzip.go and zstd.go; the
// shared cache of decoded spans in spancache.go.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// DefaultSpan is the uncompressed distance between checkpoints used when the
// caller does not choose one. A random read that misses the span cache
// inflates at most one span, half of one on average (see
// SpanCache.acquirePrefix), so a longer span makes such reads slower; a
// shorter one costs a 32 KiB window per checkpoint in the index file. 1
// MiB is where that trade-off was settled: docs/DESIGN.md ("Random access
// into layers") has the measured latencies and index sizes.
const DefaultSpan = 1 << 20

// ErrCorrupt is wrapped by every error that comes from the bytes of a blob
// not being a valid stream of its compression (bad magic, bad checksum,
// truncation, trailing garbage...). Errors from reading the blob itself (I/O)
// do not wrap it. Truncated input wraps both ErrCorrupt and
// io.ErrUnexpectedEOF.
var ErrCorrupt = errors.New("corrupt compressed stream")

// ErrUnsupported: a valid compressed stream that asks for more than we
// allow (a zstd window over the limit). Not "corrupt": the user needs to
// know the layer is fine and what the limit is.
var ErrUnsupported = errors.New("unsupported compressed stream")

// CheckpointKind tells how decoding restarts at a Checkpoint.
type CheckpointKind uint8

const (
	// CheckpointGzipMember: In is the first byte of a gzip member header;
	// decoding needs no history.
	CheckpointGzipMember CheckpointKind = iota + 1
	// CheckpointDeflate: a deflate block boundary inside a gzip member;
	// Bits, Final, Window, DeflateIn and MemberOut are valid.
	CheckpointDeflate
	// CheckpointZstdFrame: In is the first byte of a zstd frame (or of a
	// skippable frame, for the checkpoint at offset 0).
	CheckpointZstdFrame
	// CheckpointRaw: uncompressed data, In == Out.
	CheckpointRaw
)

func (k CheckpointKind) String() string {
	switch k {
	case CheckpointGzipMember:
		return "gzip-member"
	case CheckpointDeflate:
		return "deflate"
	case CheckpointZstdFrame:
		return "zstd-frame"
	case CheckpointRaw:
		return "raw"
	}
	return fmt.Sprintf("checkpoint-kind(%d)", uint8(k))
}

// Checkpoint is a place where decoding of the blob can restart.
type Checkpoint struct {
	Kind CheckpointKind
	// In is the byte offset in the compressed blob.
	In int64
	// Bits (CheckpointDeflate only) is the number of bits of byte In that
	// belong to the previous block (klauspost InflateCheckpoint.BitOffset).
	Bits uint8
	// Final is klauspost InflateCheckpoint.Final (always false for recorded
	// checkpoints: nothing restarts after a final block).
	Final bool
	// Out is the offset in the uncompressed stream.
	Out int64
	// Window (CheckpointDeflate only) is the up to 32 KiB of output that
	// precede Out: the history that back-references may reach. It is
	// shorter only near the start of a member.
	Window []byte

	// Member is the ordinal (from 0) of the gzip member or zstd frame
	// (skippable frames included) the checkpoint is in; it only serves to
	// name the place in error messages.
	Member int64
	// DeflateIn (CheckpointDeflate only) is the blob offset where the
	// member's deflate data starts (just after its header), and MemberOut
	// the uncompressed offset where the member's output starts. Together
	// they rebuild the member-relative offsets of an InflateCheckpoint and
	// let the member's ISIZE be checked when a span reaches its trailer.
	DeflateIn int64
	MemberOut int64

	// windowZ is Window deflated, as stored in the index file: a loaded
	// index inflates a window only when a read resumes there, so a warm
	// mount does not pay for all of them up front (see window()). An index
	// loaded head-only (UnmarshalHeader) does not even hold windowZ: it
	// reads the windowZLen bytes at windowOff of windowSrc (the index
	// file) on demand and checks them against windowCRC, so a warm mount
	// reads a few KiB of index per layer instead of 14 KiB per checkpoint.
	windowZ    []byte
	windowLen  int
	windowSrc  io.ReaderAt
	windowOff  int64
	windowZLen int
	windowCRC  uint32
}

// Checkpoints is the decode table of one blob. It is immutable after
// indexing and safe for concurrent use.
type Checkpoints struct {
	Compression      Compression
	Points           []Checkpoint // sorted by Out, strictly increasing; Points[0].Out == 0
	CompressedSize   int64
	UncompressedSize int64
}

// NumSpans is the number of spans: one per checkpoint.
func (c *Checkpoints) NumSpans() int { return len(c.Points) }

// Span is the uncompressed range [start, end) of span i: from checkpoint i
// to checkpoint i+1 (or the end of the stream).
func (c *Checkpoints) Span(i int) (start, end int64) {
	start = c.Points[i].Out
	if i+1 < len(c.Points) {
		return start, c.Points[i+1].Out
	}
	return start, c.UncompressedSize
}

// SpanAt is the span containing uncompressed offset off. Offsets before 0
// map to span 0 and offsets at or after the end to the last span.
func (c *Checkpoints) SpanAt(off int64) int {
	// First point with Out > off, minus one.
	i := sort.Search(len(c.Points), func(i int) bool { return c.Points[i].Out > off })
	if i == 0 {
		return 0
	}
	return i - 1
}

// MaxSpanLen is the length of the longest span. It can be far larger than
// the indexing span: a gzip member or zstd frame written as one deflate
// block or one frame cannot be cut (a single-frame zstd layer is one span).
func (c *Checkpoints) MaxSpanLen() int64 {
	var m int64
	for i := range c.Points {
		s, e := c.Span(i)
		m = max(m, e-s)
	}
	return m
}

// DecodeSpan decodes span i into dst[:0] (growing it when needed) and
// returns exactly that span's bytes. It fails, wrapping ErrCorrupt, if the
// blob does not decode to exactly the span's length; where the span ends at
// a gzip member's end or a zstd frame's end, the member's or frame's
// trailer and checksum are verified too.
func (c *Checkpoints) DecodeSpan(blob io.ReaderAt, i int, dst []byte) ([]byte, error) {
	return c.decodeSpan(blob, i, dst, nil)
}

// progressive reports whether the bytes of span i may be served while it
// is still decoding (SpanCache.acquirePrefix): only where the span's end
// carries no check that could still reject them. A gzip span that ends at
// a deflate checkpoint inside a member has none (the member's CRC lies
// further on, and openSpan does not verify there), so its bytes are final
// as the inflater yields them. A span ending at a gzip member's end (the
// last span, or one followed by a member start), a zstd span (frame
// checksums) and a raw one are released only whole.
func (c *Checkpoints) progressive(i int) bool {
	// Deflate checkpoints exist in gzip layers only; the compression is
	// checked too, so a hostile index cannot make a zstd span progressive.
	return c.Compression == Gzip && i+1 < len(c.Points) && c.Points[i+1].Kind == CheckpointDeflate
}

// decodeSpan is DecodeSpan, telling progress (see SpanCache) of the
// decoded prefix as it grows when progress is not nil.
func (c *Checkpoints) decodeSpan(blob io.ReaderAt, i int, dst []byte, progress func([]byte, int)) ([]byte, error) {
	if i < 0 || i >= len(c.Points) {
		return dst[:0], fmt.Errorf("decode span %d: out of range [0,%d)", i, len(c.Points))
	}
	start, end := c.Span(i)
	need := end - start
	if need < 0 {
		return dst[:0], fmt.Errorf("decode span %d: invalid length %d", i, need)
	}
	s, err := c.openSpan(blob, i, end, true)
	if err != nil {
		return dst[:0], err
	}
	defer s.release()
	dst, err = readSpan(s, dst[:0], need, progress)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("span %d: stream ends after %d of %d bytes: %w: %w", i, len(dst), need, io.ErrUnexpectedEOF, ErrCorrupt)
		}
		return dst[:0], err
	}
	// A last read surfaces the end-of-span checks (trailer, checksum, no
	// extra output).
	var one [1]byte
	if m, err := s.Read(one[:]); m != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("span %d: decodes to more than %d bytes: %w", i, need, ErrCorrupt)
		}
		return dst[:0], err
	}
	return dst, nil
}

// readSpan appends need bytes of s to dst. Up to spanPrealloc it allocates
// the whole span at once; beyond, the buffer grows as data actually comes, so
// that a damaged table claiming an absurd span length fails on decoding
// instead of on allocating. progress, if not nil, is told of every read,
// but only when the buffer already holds the whole span and so never
// moves (what was reported stays valid).
func readSpan(s io.Reader, dst []byte, need int64, progress func([]byte, int)) ([]byte, error) {
	const spanPrealloc = 64 << 20
	if int64(cap(dst)) < min(need, spanPrealloc) {
		// Rounded up to 256 KiB: spans differ in length by a deflate
		// block or so, and a recycled buffer should fit the next one.
		c := min(need, spanPrealloc)
		dst = make([]byte, 0, min((c+(256<<10)-1)&^((256<<10)-1), spanPrealloc))
	}
	if int64(cap(dst)) < need {
		progress = nil
	}
	for int64(len(dst)) < need {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, int(min(need-int64(len(dst)), int64(cap(dst)))))
		}
		n, err := s.Read(dst[len(dst):int(min(need, int64(cap(dst))))])
		dst = dst[:len(dst)+n]
		if progress != nil && n > 0 {
			progress(dst[:cap(dst)], len(dst))
		}
		if err != nil && int64(len(dst)) < need {
			return dst, err
		}
	}
	return dst, nil
}

// spanStream is the uncompressed stream from a checkpoint up to a limit.
type spanStream interface {
	io.Reader
	// release returns pooled decoders and buffers; the stream is dead after.
	release()
}

// openSpan returns the uncompressed stream from checkpoint i up to the
// absolute uncompressed offset limit. With verify, the stream checks at limit
// that the data really ends there (the span's end), else it just stops.
func (c *Checkpoints) openSpan(blob io.ReaderAt, i int, limit int64, verify bool) (spanStream, error) {
	p := &c.Points[i]
	if p.In < 0 || p.In > c.CompressedSize || p.Out < 0 || p.Out > limit {
		return nil, fmt.Errorf("span %d: invalid checkpoint (in %d, out %d, compressed size %d): %w", i, p.In, p.Out, c.CompressedSize, ErrCorrupt)
	}
	f, err := c.Compression.Format()
	if err != nil {
		return nil, fmt.Errorf("span %d: %w", i, err)
	}
	return f.openSpan(c, blob, i, limit, verify)
}

type rawStream struct{ r *io.SectionReader }

func (s *rawStream) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF && s.r.Size() > 0 {
		// io.SectionReader says EOF both at its end and when the blob is
		// shorter; tell them apart.
		if pos, _ := s.r.Seek(0, io.SeekCurrent); pos < s.r.Size() {
			err = fmt.Errorf("uncompressed blob ends %d bytes early: %w: %w", s.r.Size()-pos, io.ErrUnexpectedEOF, ErrCorrupt)
		}
	}
	return n, err
}
func (s *rawStream) release() {}

// NewReaderAt gives random access to the uncompressed stream. Decoded spans
// go through cache, shared by all readers of all blobs; key names the blob in
// it (its digest, say). With a nil cache, and for spans larger than the whole
// cache, every ReadAt decodes from the span's checkpoint just the bytes up to
// the end of the read: a single-frame zstd layer is one span, and decoding
// it whole per read would be far worse.
func (c *Checkpoints) NewReaderAt(blob io.ReaderAt, cache *SpanCache, key string) io.ReaderAt {
	if f, err := c.Compression.Format(); err == nil && f.plain {
		return &rawReaderAt{r: io.NewSectionReader(blob, 0, c.UncompressedSize)}
	}
	return &spanReaderAt{c: c, blob: blob, cache: cache, key: key}
}

type rawReaderAt struct{ r *io.SectionReader }

func (r *rawReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	n, err := r.r.ReadAt(p, off)
	if err == io.EOF && off+int64(n) < r.r.Size() {
		err = fmt.Errorf("uncompressed blob shorter than indexed: %w: %w", io.ErrUnexpectedEOF, ErrCorrupt)
	}
	return n, err
}

type spanReaderAt struct {
	c     *Checkpoints
	blob  io.ReaderAt
	cache *SpanCache
	key   string
	// seqMu guards lastEnd, where the previous read ended, and run, the
	// bytes read contiguously up to there. A reader is sequential once
	// its run reaches seqRun: one read that merely follows another is not
	// enough, because checking a file's tar header (overlay's
	// CheckHeaders, for published indexes) is a small read that ends
	// exactly where the file's data starts, and a first read of every
	// file would otherwise start read-ahead. prefetching counts this
	// blob's read-ahead decodes in flight (at most the cache's readAhead).
	seqMu       sync.Mutex
	lastEnd     int64
	run         int64
	prefetching atomic.Int32
}

// seqRun is the contiguous run after which a reader counts as streaming
// (from its next contiguous read on): more than a header check, less than
// what a streaming reader's first kernel requests cover.
const seqRun = 256 << 10

// sequential records a read of n bytes at off and says whether the reader
// is streaming.
func (r *spanReaderAt) sequential(off int64, n int) bool {
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	// Decided on the run before this read, so that no single read, however
	// large (FUSE sends up to 1 MiB), counts as streaming by itself.
	seq := off == r.lastEnd && r.run >= seqRun
	if off == r.lastEnd {
		r.run += int64(n)
	} else {
		r.run = int64(n)
	}
	r.lastEnd = off + int64(n)
	return seq
}

// maybePrefetch starts background decodes of the spans after span i that
// are neither cached nor in flight, up to the cache's readAhead spans
// ahead, when the reader is sequential. The cache's slots bound them over
// all its readers, so that many sequential readers at once do not each
// start readAhead decodes: read-ahead is skipped (not queued) while all
// slots are busy. The spans must fit the cache comfortably, or they would
// evict each other (and the one being read) before use.
func (r *spanReaderAt) maybePrefetch(i int, sequential bool) {
	if !sequential || r.cache == nil {
		return
	}
	ra := r.cache.readAhead
	for j := i + 1; j <= i+ra && j < r.c.NumSpans(); j++ {
		ns, ne := r.c.Span(j)
		k := spanKey{key: r.key, span: j}
		if ne-ns > r.cache.max/2/int64(ra+1) { // (no overflow on hostile sizes)
			return
		}
		if r.cache.has(k) {
			continue
		}
		if n := r.prefetching.Add(1); n > int32(ra) {
			r.prefetching.Add(-1)
			return
		}
		select {
		case r.cache.slots <- struct{}{}:
		default:
			r.prefetching.Add(-1)
			return
		}
		started := r.cache.goBackground(func() {
			defer func() { <-r.cache.slots; r.prefetching.Add(-1) }()
			_, release, _ := r.cache.acquire(k, func(dst []byte) ([]byte, error) { return r.c.DecodeSpan(r.blob, j, dst) })
			release()
		})
		if !started {
			<-r.cache.slots
			r.prefetching.Add(-1)
			return
		}
	}
}

func (r *spanReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that stops waiting for a span decode when ctx
// ends (the decode goes on, for the cache).
func (r *spanReaderAt) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	size := r.c.UncompressedSize
	if off >= size {
		return 0, io.EOF
	}
	n := 0
	sequential := r.sequential(off, len(p))
	for n < len(p) && off+int64(n) < size {
		pos := off + int64(n)
		i := r.c.SpanAt(pos)
		start, end := r.c.Span(i)
		var m int
		var err error
		if r.cache != nil && end-start <= r.cache.max {
			r.maybePrefetch(i, sequential)
			var data []byte
			var release func()
			// A read needs the span only up to its own end; where the
			// span's bytes are final as they decode, it gets them as soon
			// as they are there while the decode finishes the span.
			upto, progressive := -1, r.c.progressive(i)
			if progressive {
				upto = int(min(end, pos+int64(len(p)-n)) - start)
			}
			data, release, err = r.cache.acquirePrefix(ctx, spanKey{key: r.key, span: i}, upto, func(dst []byte, report func([]byte, int)) ([]byte, error) {
				if !progressive {
					report = nil
				}
				return r.c.decodeSpan(r.blob, i, dst, report)
			})
			if err == nil {
				m = copy(p[n:], data[pos-start:])
				release()
			}
		} else {
			m, err = r.readUncached(p[n:], pos, i, start, end)
		}
		n += m
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readUncached decodes span i from its checkpoint only up to the end of the
// read, discarding what lies before pos, into p.
func (r *spanReaderAt) readUncached(p []byte, pos int64, i int, start, end int64) (int, error) {
	upto := min(end, pos+int64(len(p)))
	s, err := r.c.openSpan(r.blob, i, upto, upto == end)
	if err != nil {
		return 0, err
	}
	defer s.release()
	if skip := pos - start; skip > 0 {
		if _, err := io.CopyN(io.Discard, s, skip); err != nil {
			return 0, spanShort(i, err)
		}
	}
	n, err := io.ReadFull(s, p[:upto-pos])
	if err != nil {
		return n, spanShort(i, err)
	}
	return n, nil
}

func spanShort(i int, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("span %d: stream ends early: %w: %w", i, io.ErrUnexpectedEOF, ErrCorrupt)
	}
	return err
}

// IndexingReader yields the uncompressed stream of a compressed blob read
// sequentially, recording checkpoints on the way, so that a layer is
// decompressed exactly once to be both indexed (by whoever reads the tar
// stream out of it) and made randomly accessible.
type IndexingReader struct {
	comp    Compression
	span    int64
	cr      *blobCounter
	stream  io.Reader // the format's decoder; nil for None
	release func()
	points  []Checkpoint
	lastOut int64 // Out of the last recorded checkpoint
	out     int64 // uncompressed bytes returned so far
	err     error // sticky; io.EOF once complete
	cps     *Checkpoints
}

// NewIndexingReader returns a reader of the uncompressed stream of r, which
// holds a blob in compression c. A checkpoint is recorded at the first
// restart place at least span uncompressed bytes after the previous one
// (span <= 0 means DefaultSpan).
func NewIndexingReader(c Compression, r io.Reader, span int64) (*IndexingReader, error) {
	if span <= 0 {
		span = DefaultSpan
	}
	f, err := c.Format()
	if err != nil {
		return nil, fmt.Errorf("new indexing reader: %w", err)
	}
	ir := &IndexingReader{comp: c, span: span, cr: &blobCounter{r: r}}
	ir.stream, ir.release = f.newIndexer(ir)
	return ir, nil
}

// Read reads the uncompressed stream. It returns io.EOF only after the whole
// blob was read and verified (checksums, sizes, nothing after the last
// member or frame).
func (r *IndexingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	var n int
	var err error
	if r.stream == nil {
		n, err = r.cr.Read(p)
		if err != nil && err != io.EOF {
			err = fmt.Errorf("reading uncompressed blob at offset %d: %w", r.cr.n, err)
		}
	} else {
		n, err = r.stream.Read(p)
	}
	r.out += int64(n)
	if err != nil {
		r.err = err
		if err == io.EOF {
			r.finish()
		}
		if r.release != nil {
			r.release()
			r.release = nil
		}
	}
	return n, err
}

// record adds a checkpoint at uncompressed offset cp.Out.
func (r *IndexingReader) record(cp Checkpoint) {
	r.points = append(r.points, cp)
	r.lastOut = cp.Out
}

// due tells whether a restart place at uncompressed offset out should become
// a checkpoint: the first one always, the others only span bytes after the
// previous one. Restart places are often far denser than useful (pigz and
// eStargz write a gzip member per file or per 128 KiB), and each checkpoint
// costs table space and, for deflate, a 32 KiB window.
func (r *IndexingReader) due(out int64) bool {
	return len(r.points) == 0 || out-r.lastOut >= r.span
}

func (r *IndexingReader) finish() {
	// A restart place at the very end (an empty last member, a block
	// boundary just before the final empty block) would make an empty last
	// span; it is useless, drop it.
	pts := r.points
	for len(pts) > 1 && pts[len(pts)-1].Out >= r.out {
		pts = pts[:len(pts)-1]
	}
	r.cps = &Checkpoints{
		Compression:      r.comp,
		Points:           pts,
		CompressedSize:   r.cr.n,
		UncompressedSize: r.out,
	}
}

// Checkpoints is the decode table of the blob; nil until Read returned
// io.EOF.
func (r *IndexingReader) Checkpoints() *Checkpoints { return r.cps }

// blobCounter counts the bytes taken from r and remembers the first error
// other than io.EOF, so that a decoder failure can be told apart as I/O
// (reported as is) or a format error (wrapped in ErrCorrupt).
type blobCounter struct {
	r   io.Reader
	n   int64
	err error
}

func (c *blobCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// formatErr builds the error for a failure at where ("gzip member 3 at
// offset 1234: trailer") caused by err. An I/O error of the blob is returned
// as such; anything else is a format error wrapping ErrCorrupt, and running
// out of input wraps io.ErrUnexpectedEOF too.
func formatErr(cr *blobCounter, where string, err error) error {
	if cr.err != nil {
		return fmt.Errorf("%s: reading blob: %w", where, cr.err)
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%s: truncated: %w: %w", where, io.ErrUnexpectedEOF, ErrCorrupt)
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("%s: %w", where, err)
	}
	return fmt.Errorf("%s: %w: %w", where, err, ErrCorrupt)
}

// corruptf is a format error with no underlying cause.
func corruptf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrCorrupt)...)
}

// Buffered readers for span decoding. Spans are a few MiB compressed at
// most, so 64 KiB reads are plenty and the buffers are worth reusing.
const spanBufSize = 64 << 10

var spanBufPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, spanBufSize) }}

// spanSource positions a counted, buffered reader at blob offset in.
func spanSource(blob io.ReaderAt, in, size int64) (*blobCounter, *bufio.Reader) {
	cr := &blobCounter{r: io.NewSectionReader(blob, in, size-in)}
	br := spanBufPool.Get().(*bufio.Reader)
	br.Reset(cr)
	return cr, br
}

func putSpanBuf(br *bufio.Reader) {
	br.Reset(nil)
	spanBufPool.Put(br)
}

// PublishedSpan is the checkpoint spacing of indexes published to a
// registry (ocimount index --push): twice DefaultSpan, so the artifact a
// first mount downloads carries half the windows, which are most of its
// bytes (docs/DESIGN.md, "Index artifacts", has the sizes). A registry
// mount's random reads wait on network round trips for 512 KiB chunks
// anyway, so the longer decode matters less there.
const PublishedSpan = 2 * DefaultSpan

// Thinned returns a copy of the index whose deflate checkpoints (the ones
// that carry a 32 KiB window) are at least minSpan uncompressed bytes
// apart; checkpoints without a window (gzip member starts, zstd frames)
// are all kept, since they cost a few bytes each. The result decodes to
// the same bytes through fewer, longer spans. It shares entries and
// windows with ix.
// Published is the index as `index --push` publishes it: thinned to
// PublishedSpan, and without the digests of a decoded copy, which
// describe a cache file on the publisher's machine (a mount checks its
// own copy against the digests of its own pass, never a registry's).
func (ix *Index) Published() *Index {
	out := ix.Thinned(PublishedSpan)
	out.Decoded = ChunkSums{}
	return out
}

func (ix *Index) Thinned(minSpan int64) *Index {
	out := *ix
	if ix.Checkpoints == nil || len(ix.Checkpoints.Points) == 0 {
		return &out
	}
	cp := *ix.Checkpoints
	cp.Points = nil
	last := int64(0)
	for i, p := range ix.Checkpoints.Points {
		if i == 0 || p.Kind != CheckpointDeflate || p.Out-last >= minSpan {
			cp.Points = append(cp.Points, p)
			last = p.Out
		}
	}
	out.Checkpoints = &cp
	return &out
}
