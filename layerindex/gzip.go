package layerindex

// Gzip (RFC 1952) framing is done here rather than by a gzip package because
// we need what a gzip reader hides: where each member and its deflate data
// start in the blob, and the state of the inflater at block boundaries
// (klauspost/compress/flate's end-of-block callback) so that decoding can
// restart in the middle of a member.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

const (
	gzID1     = 0x1f
	gzID2     = 0x8b
	gzDeflate = 8

	gzFlagHCRC    = 1 << 1
	gzFlagExtra   = 1 << 2
	gzFlagName    = 1 << 3
	gzFlagComment = 1 << 4
	gzFlagReserv  = 0xe0

	// deflateWindow is deflate's history size.
	deflateWindow = 32 << 10

	// indexBufSize is the read buffer of the indexing pass: large enough
	// that the inflater's bufio fast path rarely refills.
	indexBufSize = 128 << 10
)

type gzState uint8

const (
	gzHeader gzState = iota // at a member header (or the end of the blob)
	gzBody                  // inflating a member
	gzDone
)

// gzipStream is the uncompressed stream of a gzip blob from a checkpoint:
// the whole blob when indexing, a span when decoding one. It walks member
// headers and trailers itself and inflates member bodies with
// klauspost/compress/flate reading from the same bufio.Reader, which that
// package reads byte-exactly (Peek/Discard), so the blob position is always
// the bytes counted under the bufio.Reader minus those still buffered.
type gzipStream struct {
	cr   *blobCounter
	br   *bufio.Reader
	base int64 // blob offset of cr's first byte

	fr      io.ReadCloser // inflater of the current member
	pooled  bool          // fr comes from flatePool (span decoding)
	state   gzState
	started bool // a member header was read (a gzip blob has at least one)

	member    int64 // ordinal of the current member
	memberIn  int64 // blob offset of its header
	deflateIn int64 // blob offset of its deflate data
	memberOut int64 // uncompressed offset of its first byte
	out       int64 // absolute uncompressed offset reached
	crc       uint32
	crcValid  bool  // crc covers the member from its start (not resumed mid-member)
	drift     int64 // how far the inflater's CompressedOffset runs ahead (see onBlockEnd)

	// Span decoding: never return output past limit; at limit, with
	// verifyEnd, check that the member ends there and verify its trailer.
	limit     int64
	verifyEnd bool

	ix  *IndexingReader // indexing: receives checkpoints; also checks what follows the last member
	cb  func(flate.InflateCheckpoint)
	err error
}

func newGzipIndexer(ix *IndexingReader) *gzipStream {
	g := &gzipStream{
		cr:    ix.cr,
		br:    bufio.NewReaderSize(ix.cr, indexBufSize),
		limit: 1<<63 - 1,
		ix:    ix,
	}
	g.cb = g.onBlockEnd
	return g
}

// release drops the references to the reader and decoders; pooled ones go
// back to their pools.
func (g *gzipStream) release() {
	if g.fr != nil && g.pooled {
		flatePool.Put(g.fr)
	}
	g.fr = nil
	if g.ix == nil && g.br != nil {
		putSpanBuf(g.br)
	}
	g.br = nil
	if g.err == nil {
		g.err = errReleased
	}
}

var errReleased = fmt.Errorf("read after release")

// flatePool holds inflaters for span decoding. Indexing cannot use them: the
// end-of-block callback can only be set at construction and is lost on Reset.
var flatePool = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// checkpointResetter is the method of klauspost's inflater that restarts it
// at a block boundary; it is not part of any exported interface.
type checkpointResetter interface {
	ResetCP(r io.Reader, cp flate.InflateCheckpoint) error
}

func openGzipSpan(blob io.ReaderAt, size int64, p *Checkpoint, limit int64, verifyEnd bool, i int) (*gzipStream, error) {
	if p.Kind != CheckpointGzipMember && p.Kind != CheckpointDeflate {
		return nil, fmt.Errorf("span %d: checkpoint kind %v in a gzip blob: %w", i, p.Kind, ErrCorrupt)
	}
	cr, br := spanSource(blob, p.In, size)
	g := &gzipStream{
		cr:        cr,
		br:        br,
		base:      p.In,
		member:    p.Member,
		memberIn:  p.In,
		out:       p.Out,
		limit:     limit,
		verifyEnd: verifyEnd,
		started:   p.Kind == CheckpointDeflate,
	}
	if p.Kind == CheckpointGzipMember {
		return g, nil
	}
	window, werr := p.window()
	if werr != nil {
		g.release()
		return nil, fmt.Errorf("span %d: deflate checkpoint window: %w", i, werr)
	}
	if p.Bits > 7 || len(window) > deflateWindow || p.DeflateIn > p.In || p.MemberOut > p.Out {
		g.release()
		return nil, fmt.Errorf("span %d: invalid deflate checkpoint (bits %d, window %d, deflate start %d, in %d): %w",
			i, p.Bits, len(window), p.DeflateIn, p.In, ErrCorrupt)
	}
	g.memberIn = p.DeflateIn
	g.deflateIn = p.DeflateIn
	g.memberOut = p.MemberOut
	g.fr = flatePool.Get().(io.ReadCloser)
	g.pooled = true
	err := g.fr.(checkpointResetter).ResetCP(g.br, flate.InflateCheckpoint{
		CompressedOffset:   p.In - p.DeflateIn,
		UncompressedOffset: p.Out - p.MemberOut,
		BitOffset:          p.Bits,
		Final:              p.Final,
		Window:             window,
	})
	if err != nil {
		err = g.fail("resume inflate", err)
		g.release()
		return nil, err
	}
	g.state = gzBody
	return g, nil
}

// pos is the blob offset of the next byte to be parsed or inflated.
func (g *gzipStream) pos() int64 {
	return g.base + g.cr.n - int64(g.br.Buffered())
}

func (g *gzipStream) where() string {
	return fmt.Sprintf("gzip member %d at offset %d", g.member, g.memberIn)
}

func (g *gzipStream) fail(what string, err error) error {
	return formatErr(g.cr, g.where()+": "+what, err)
}

func (g *gzipStream) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch g.state {
		case gzHeader:
			if g.out >= g.limit && g.started {
				// Span decoding stops at a member boundary.
				g.state = gzDone
				continue
			}
			if err := g.nextMember(); err != nil {
				g.err = err
				return 0, err
			}
		case gzBody:
			if g.out >= g.limit {
				if err := g.endAtLimit(); err != nil {
					g.err = err
					return 0, err
				}
				continue
			}
			q := p
			if rem := g.limit - g.out; int64(len(q)) > rem {
				q = q[:rem]
			}
			n, err := g.fr.Read(q)
			if n > 0 {
				g.crc = crc32.Update(g.crc, crc32.IEEETable, q[:n])
				g.out += int64(n)
			}
			if err == io.EOF {
				err = g.endMember()
			} else if err != nil {
				err = g.fail("inflate", err)
			}
			if err != nil {
				g.err = err
				return n, err
			}
			if n > 0 {
				return n, nil
			}
		case gzDone:
			g.err = io.EOF
			return 0, io.EOF
		}
	}
}

// endAtLimit handles a span reaching its end inside a member: it either
// stops there (the next checkpoint is a block boundary of the same member)
// or checks that the member ends exactly there, trailer included.
func (g *gzipStream) endAtLimit() error {
	if !g.verifyEnd {
		g.state = gzDone
		return nil
	}
	var one [1]byte
	n, err := g.fr.Read(one[:])
	if n > 0 {
		return corruptf("%s: data continues past the end of span at uncompressed offset %d", g.where(), g.limit)
	}
	if err == io.EOF {
		if err := g.endMember(); err != nil {
			return err
		}
		g.state = gzDone
		return nil
	}
	if err != nil {
		return g.fail("inflate", err)
	}
	return nil // no progress without error: try again
}

// nextMember reads the next member header, or finds the end of the blob.
func (g *gzipStream) nextMember() error {
	next := g.member
	if g.started {
		next++
	}
	at := g.pos()
	b, err := g.br.Peek(1)
	if len(b) == 0 && err == io.EOF && g.started && g.ix != nil {
		g.state = gzDone
		return nil
	}
	if len(b) > 0 && g.started && g.ix != nil && b[0] != gzID1 {
		return g.trailing(at)
	}
	g.member, g.memberIn, g.memberOut = next, at, g.out
	if len(b) == 0 {
		// An empty blob, or span decoding running out of members.
		return g.fail("header", err)
	}
	if err := g.readHeader(); err != nil {
		if g.started && g.ix != nil {
			return g.notMember(at, err)
		}
		return err
	}
	g.started = true
	g.deflateIn = g.pos()
	g.crc, g.crcValid, g.drift = 0, true, 0
	if g.ix != nil {
		cp := Checkpoint{Kind: CheckpointGzipMember, In: g.memberIn, Out: g.out, Member: g.member}
		if n := len(g.ix.points); n > 1 && g.ix.points[n-1].Kind == CheckpointDeflate && g.ix.points[n-1].Out == g.out {
			// The previous member ended with a non-final block followed
			// by an empty final one (as klauspost's writer does): the
			// checkpoint at that block's end restarts at the same output
			// offset as this member start, which needs no window.
			g.ix.points[n-1] = cp
		} else if g.ix.due(g.out) {
			g.ix.record(cp)
		}
		g.indexInflater()
	} else {
		if g.fr == nil {
			g.fr = flatePool.Get().(io.ReadCloser)
			g.pooled = true
		}
		if err := g.fr.(flate.Resetter).Reset(g.br, nil); err != nil {
			return g.fail("inflate", err)
		}
	}
	g.state = gzBody
	return nil
}

// indexInflater readies the inflater with the end-of-block callback for a new
// member. The callback is lost on Reset and NewReaderOpts allocates ~40 KiB,
// which dominates for blobs of many small members (eStargz writes one per
// file), so the previous member's inflater is reset and given the callback
// again; ResetCP, unlike Reset, also keeps the window copy buffer.
func (g *gzipStream) indexInflater() {
	if r, ok := g.fr.(checkpointResetter); ok {
		if r.ResetCP(g.br, flate.InflateCheckpoint{}) == nil && applyReaderOpt(flate.WithEobCallback(g.cb), g.fr) {
			return
		}
	}
	g.fr = flate.NewReaderOpts(g.br, flate.WithEobCallback(g.cb))
}

// applyReaderOpt applies a flate.ReaderOpt to an existing inflater. The
// option's parameter type is unexported; type inference names it as T, and
// if r is not of that type nothing happens and false is returned.
func applyReaderOpt[T any](opt func(T), r any) bool {
	d, ok := r.(T)
	if ok {
		opt(d)
	}
	return ok
}

// trailing is the error for bytes after the last member, while indexing,
// that do not start another member: zeros included. Go's compress/gzip (and
// so umoci and containerd, which read layers to their end) fails such a
// layer with "gzip: invalid header"; accepting it here would mount a layer
// they refuse, with bytes in its digest that no index entry accounts for.
func (g *gzipStream) trailing(at int64) error {
	return corruptf("gzip blob: bytes at offset %d after %d members are not a gzip member", at, g.member+1)
}

// notMember is the error for a member header after the first that cannot
// be read while indexing: whatever starts there (a truncated member, or
// junk that happens to begin with the gzip magic byte) is not a member.
func (g *gzipStream) notMember(at int64, err error) error {
	return fmt.Errorf("gzip blob: bytes at offset %d after %d members are not a gzip member: %w", at, g.member, err)
}

// readHeader parses a member header (RFC 1952 section 2.3), verifying its
// CRC16 when FHCRC is set.
func (g *gzipStream) readHeader() error {
	var h [10]byte
	if _, err := io.ReadFull(g.br, h[:]); err != nil {
		return g.fail("header", err)
	}
	if h[0] != gzID1 || h[1] != gzID2 {
		return corruptf("%s: bad magic %#02x %#02x", g.where(), h[0], h[1])
	}
	if h[2] != gzDeflate {
		return corruptf("%s: unsupported compression method %d", g.where(), h[2])
	}
	flg := h[3]
	if flg&gzFlagReserv != 0 {
		return corruptf("%s: reserved header flags %#02x set", g.where(), flg&gzFlagReserv)
	}
	hcrc := crc32.ChecksumIEEE(h[:])
	if flg&gzFlagExtra != 0 {
		var x [2]byte
		if _, err := io.ReadFull(g.br, x[:]); err != nil {
			return g.fail("header extra field", err)
		}
		hcrc = crc32.Update(hcrc, crc32.IEEETable, x[:])
		if err := g.skipHeader(int(binary.LittleEndian.Uint16(x[:])), &hcrc); err != nil {
			return g.fail("header extra field", err)
		}
	}
	if flg&gzFlagName != 0 {
		if err := g.skipZeroTerminated(&hcrc); err != nil {
			return g.fail("header file name", err)
		}
	}
	if flg&gzFlagComment != 0 {
		if err := g.skipZeroTerminated(&hcrc); err != nil {
			return g.fail("header comment", err)
		}
	}
	if flg&gzFlagHCRC != 0 {
		var x [2]byte
		if _, err := io.ReadFull(g.br, x[:]); err != nil {
			return g.fail("header crc", err)
		}
		if got, want := binary.LittleEndian.Uint16(x[:]), uint16(hcrc); got != want {
			return corruptf("%s: header crc16 mismatch (stored %#04x, computed %#04x)", g.where(), got, want)
		}
	}
	return nil
}

// skipHeader skips n header bytes, adding them to the header CRC.
func (g *gzipStream) skipHeader(n int, crc *uint32) error {
	for n > 0 {
		b, err := g.br.Peek(min(n, g.br.Size()))
		*crc = crc32.Update(*crc, crc32.IEEETable, b)
		g.br.Discard(len(b))
		n -= len(b)
		if n > 0 && err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
	return nil
}

// skipZeroTerminated skips a zero-terminated header string of any length,
// adding it to the header CRC.
func (g *gzipStream) skipZeroTerminated(crc *uint32) error {
	for {
		b, err := g.br.ReadSlice(0)
		*crc = crc32.Update(*crc, crc32.IEEETable, b)
		if err == nil {
			return nil
		}
		if err != bufio.ErrBufferFull {
			return err
		}
	}
}

// endMember reads and checks a member trailer (CRC32 and ISIZE) once the
// inflater reported the end of the member's deflate data.
func (g *gzipStream) endMember() error {
	var t [8]byte
	if _, err := io.ReadFull(g.br, t[:]); err != nil {
		return g.fail("trailer", err)
	}
	crc := binary.LittleEndian.Uint32(t[:4])
	isize := binary.LittleEndian.Uint32(t[4:])
	if g.crcValid && crc != g.crc {
		return corruptf("%s: crc mismatch (stored %#08x, computed %#08x)", g.where(), crc, g.crc)
	}
	if n := g.out - g.memberOut; uint32(n) != isize {
		return corruptf("%s: size mismatch (stored %d, decoded %d mod 2^32)", g.where(), isize, uint32(n))
	}
	g.state = gzHeader
	return nil
}

// onBlockEnd is the inflater's end-of-block callback while indexing. It
// records a deflate checkpoint at the first block boundary at least span
// bytes after the previous checkpoint. A final block's end is no restart
// place (the member's trailer follows), and Window is reused by the
// inflater, hence the copy.
//
// cp.CompressedOffset is not taken on trust: up to klauspost/compress
// v1.19.2 the inflater counted the whole bytes it held in its bit buffer
// twice when a stored block followed a Huffman block that read ahead, so
// the offset drifted ahead of the true position, by whole bytes, at stored
// blocks. v1.20 fixed that (TestInflaterCheckpointOffsets pins it), and the
// check below costs nothing, so it stays: the true position is known from
// the bufio reader (the inflater discards what it consumed before calling
// back); at the end of a stored block the bit buffer is empty, so
// CompressedOffset minus the bytes consumed is exactly the drift; at the
// end of a Huffman block it is the drift minus the read-ahead bytes, so
// never more. The drift is thus the largest such difference seen so far in
// the member (0 with a correct inflater).
func (g *gzipStream) onBlockEnd(cp flate.InflateCheckpoint) {
	consumed := g.pos() - g.deflateIn
	if d := cp.CompressedOffset - consumed; d > g.drift {
		g.drift = d
	}
	if cp.Final {
		return
	}
	out := g.memberOut + cp.UncompressedOffset
	if !g.ix.due(out) {
		return
	}
	in := cp.CompressedOffset - g.drift
	if in > consumed || consumed-in > 4 {
		// The bit buffer holds at most 32 bits: this cannot be a block
		// boundary. Record nothing rather than a wrong place; the next
		// block end will do.
		return
	}
	g.ix.record(Checkpoint{
		Kind:      CheckpointDeflate,
		In:        g.deflateIn + in,
		Bits:      cp.BitOffset,
		Final:     cp.Final,
		Out:       out,
		Window:    bytes.Clone(cp.Window),
		Member:    g.member,
		DeflateIn: g.deflateIn,
		MemberOut: g.memberOut,
	})
}
