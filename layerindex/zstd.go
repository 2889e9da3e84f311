package layerindex

// Zstandard (RFC 8878) frames are walked here, on the compressed bytes,
// rather than left to the decoder, for two reasons: frame starts are the only
// places where zstd decoding can restart, and the decoder does not tell
// where in the blob a frame begins or ends. The walker reads frame and block
// headers, so each frame's exact extent is known without decoding it, and
// hands the decoder exactly one frame's bytes at a time, streaming.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	zstdMagic         = 0xFD2FB528
	zstdSkippableMask = 0xFFFFFFF0
	zstdSkippableBase = 0x184D2A50

	// zstdMaxWindow bounds the history a frame may require, and so the
	// memory one decoder may take. 128 MiB is what zstd --long=27 uses and
	// what the reference decoder accepts by default for levels up to 22.
	zstdMaxWindow = 128 << 20
	// zstdMaxBlock is Block_Maximum_Size's upper bound (RFC 8878 3.1.1.2).
	zstdMaxBlock = 128 << 10
)

var zstdOptions = []zstd.DOption{
	zstd.WithDecoderConcurrency(1), // decode synchronously: no goroutines per decoder
	zstd.WithDecoderLowmem(true),   // grow buffers as needed: most frames are small
	zstd.WithDecoderMaxWindow(zstdMaxWindow),
}

// zstdPool reuses decoders: building one allocates its block buffers and
// tables, far too costly per span.
var zstdPool = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstdOptions...)
	if err != nil {
		panic("layerindex: zstd decoder options: " + err.Error()) // the options are constant
	}
	return d
}}

type zsState uint8

const (
	zsHeader zsState = iota // at a frame start (or the end of the blob)
	zsBody                  // decoding a frame
	zsDone
)

// zstdStream is the uncompressed stream of a zstd blob from a frame start:
// the whole blob when indexing, a span when decoding one.
type zstdStream struct {
	cr   *blobCounter
	br   *bufio.Reader
	base int64 // blob offset of cr's first byte

	dec   *zstd.Decoder
	w     zstdFrameWalker
	state zsState

	frame    int64 // ordinal of the current frame, skippable ones included
	frameIn  int64 // blob offset of its first byte
	frameOut int64 // uncompressed offset of its first byte
	frames   int64 // frames seen by this stream
	out      int64 // absolute uncompressed offset reached

	// Span decoding: never return output past limit. With verify, a frame
	// reaching limit must end there (frames are never cut by spans).
	limit  int64
	verify bool

	ix  *IndexingReader
	err error
}

func newZstdIndexer(ix *IndexingReader) *zstdStream {
	z := &zstdStream{
		cr:     ix.cr,
		br:     bufio.NewReaderSize(ix.cr, indexBufSize),
		limit:  1<<63 - 1,
		verify: true,
		ix:     ix,
	}
	return z
}

func openZstdSpan(blob io.ReaderAt, size int64, p *Checkpoint, limit int64, verify bool, i int) (*zstdStream, error) {
	if p.Kind != CheckpointZstdFrame {
		return nil, fmt.Errorf("span %d: checkpoint kind %v in a zstd blob: %w", i, p.Kind, ErrCorrupt)
	}
	cr, br := spanSource(blob, p.In, size)
	return &zstdStream{
		cr:     cr,
		br:     br,
		base:   p.In,
		frame:  p.Member,
		out:    p.Out,
		limit:  limit,
		verify: verify,
	}, nil
}

func (z *zstdStream) release() {
	if z.dec != nil {
		z.dec.Reset(nil) // drop the reference to our reader
		zstdPool.Put(z.dec)
		z.dec = nil
	}
	if z.ix == nil && z.br != nil {
		putSpanBuf(z.br)
	}
	z.br = nil
	z.w.br = nil
	if z.err == nil {
		z.err = errReleased
	}
}

func (z *zstdStream) pos() int64 {
	return z.base + z.cr.n - int64(z.br.Buffered())
}

func (z *zstdStream) where() string {
	return fmt.Sprintf("zstd frame %d at offset %d", z.frame, z.frameIn)
}

func (z *zstdStream) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch z.state {
		case zsHeader:
			if err := z.nextFrame(); err != nil {
				z.err = err
				return 0, err
			}
		case zsBody:
			q := p
			if z.out >= z.limit {
				if !z.verify {
					z.state = zsDone
					continue
				}
				// Finish the frame (its checksum included), which must
				// yield nothing more.
				var one [1]byte
				q = one[:]
			} else if rem := z.limit - z.out; int64(len(q)) > rem {
				q = q[:rem]
			}
			n, err := z.dec.Read(q)
			if n > 0 && z.out >= z.limit {
				z.err = corruptf("%s: data continues past the end of span at uncompressed offset %d", z.where(), z.limit)
				return 0, z.err
			}
			z.out += int64(n)
			if err == io.EOF {
				err = z.endFrame()
			} else if err != nil {
				err = z.decodeErr(err)
			}
			if err != nil {
				z.err = err
				return n, err
			}
			if n > 0 {
				return n, nil
			}
		case zsDone:
			z.err = io.EOF
			return 0, io.EOF
		}
	}
}

// decodeErr names a decoder failure, preferring what the walker found (the
// decoder only sees the walker's errors through its own wrapping).
func (z *zstdStream) decodeErr(err error) error {
	if z.w.err != nil {
		err = z.w.err
	}
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("%s: unsupported window size (over the limit %d): %w", z.where(), zstdMaxWindow, ErrUnsupported)
	}
	return formatErr(z.cr, z.where()+": decode", err)
}

// endFrame checks that the decoder ended the frame exactly where the walker
// did, and that the frame content size, when stated, was met.
func (z *zstdStream) endFrame() error {
	if z.w.err != nil {
		return formatErr(z.cr, z.where(), z.w.err)
	}
	if !z.w.done {
		return corruptf("%s: decoder ended before the frame's last block", z.where())
	}
	if n := z.out - z.frameOut; z.w.fcs >= 0 && n != z.w.fcs {
		return corruptf("%s: content size mismatch (header %d, decoded %d)", z.where(), z.w.fcs, n)
	}
	z.frame++
	z.frames++
	z.state = zsHeader
	return nil
}

// nextFrame skips skippable frames and starts decoding the next frame, or
// finds the end of the blob (or of the span).
func (z *zstdStream) nextFrame() error {
	for {
		z.frameIn = z.pos()
		z.frameOut = z.out
		if z.ix != nil && len(z.ix.points) == 0 {
			// The first checkpoint is at offset 0 whatever frame is
			// there: skippable frames yield nothing.
			z.ix.record(Checkpoint{Kind: CheckpointZstdFrame, In: z.frameIn, Out: z.out, Member: z.frame})
		}
		if z.out >= z.limit && z.frames > 0 {
			z.state = zsDone
			return nil
		}
		b, err := z.br.Peek(4)
		if len(b) == 0 && err == io.EOF && z.ix != nil && z.frames > 0 {
			z.state = zsDone
			return nil
		}
		if len(b) < 4 {
			if z.ix == nil && z.out >= z.limit {
				// A span of nothing (a blob without data) at the end.
				z.state = zsDone
				return nil
			}
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			if z.ix != nil && z.frames > 0 {
				// klauspost's decoder (containerd) takes 1-3 bytes after
				// the last frame for the end of the stream; they are not
				// a frame, so they are refused like longer junk.
				return formatErr(z.cr, fmt.Sprintf("zstd blob: bytes at offset %d after %d frames are not a zstd frame", z.frameIn, z.frame), err)
			}
			return formatErr(z.cr, z.where()+": magic", err)
		}
		magic := binary.LittleEndian.Uint32(b)
		if magic&zstdSkippableMask == zstdSkippableBase {
			if err := z.skipFrame(); err != nil {
				return err
			}
			z.frame++
			z.frames++
			continue
		}
		if magic != zstdMagic {
			if z.frames > 0 {
				return corruptf("zstd blob: bytes at offset %d after %d frames are not a zstd frame", z.frameIn, z.frame)
			}
			return corruptf("%s: bad magic %#08x", z.where(), magic)
		}
		if err := z.w.start(z.br); err != nil {
			return formatErr(z.cr, z.where()+": frame header", err)
		}
		if z.ix != nil && z.ix.due(z.out) {
			z.ix.record(Checkpoint{Kind: CheckpointZstdFrame, In: z.frameIn, Out: z.out, Member: z.frame})
		}
		if z.dec == nil {
			z.dec = zstdPool.Get().(*zstd.Decoder)
		}
		if err := z.dec.Reset(&z.w); err != nil {
			return formatErr(z.cr, z.where()+": decoder", err)
		}
		z.state = zsBody
		return nil
	}
}

// skipFrame skips a skippable frame (RFC 8878 section 3.1.2): magic, 4-byte
// little-endian size, and that many bytes of user data.
func (z *zstdStream) skipFrame() error {
	var h [8]byte
	if _, err := io.ReadFull(z.br, h[:]); err != nil {
		return formatErr(z.cr, z.where()+": skippable frame header", err)
	}
	n := int64(binary.LittleEndian.Uint32(h[4:]))
	for n > 0 {
		d, err := z.br.Discard(int(min(n, 1<<30)))
		n -= int64(d)
		if err != nil {
			return formatErr(z.cr, z.where()+": skippable frame data", err)
		}
	}
	return nil
}

// zstdFrameWalker is an io.Reader of exactly one zstd frame's bytes: it parses
// the frame header and each block header as they go by, so it knows where
// the frame ends and reports io.EOF there and nowhere else.
type zstdFrameWalker struct {
	br       *bufio.Reader
	hdr      [18]byte // frame header (at most 18 bytes) or block header
	pending  []byte   // header bytes parsed but not yet handed out
	remain   int64    // body bytes of the current block (or checksum) still to hand out
	last     bool     // the last block's header was seen
	checksum bool     // the frame has a content checksum (still to hand out)
	fcs      int64    // frame content size, -1 if not stated
	done     bool     // the whole frame was handed out
	err      error
}

// start parses a frame header (RFC 8878 section 3.1.1.1) at the reader's
// position.
func (w *zstdFrameWalker) start(br *bufio.Reader) error {
	*w = zstdFrameWalker{br: br, fcs: -1}
	b, err := br.Peek(5)
	if len(b) < 5 {
		return truncEOF(err)
	}
	fhd := b[4]
	fcsFlag := fhd >> 6
	single := fhd&(1<<5) != 0
	if fhd&(1<<3) != 0 {
		return errors.New("reserved bit set in frame header descriptor")
	}
	w.checksum = fhd&(1<<2) != 0
	didSize := [4]int{0, 1, 2, 4}[fhd&3]
	fcsSize := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && single {
		fcsSize = 1
	}
	n := 5 + didSize + fcsSize
	if !single {
		n++
	}
	if b, err = br.Peek(n); len(b) < n {
		return truncEOF(err)
	}
	rest := b[5:]
	var window uint64
	if !single {
		wd := rest[0]
		rest = rest[1:]
		base := uint64(1) << (10 + wd>>3)
		window = base + base/8*uint64(wd&7)
	}
	var dict uint32
	switch didSize {
	case 1:
		dict = uint32(rest[0])
	case 2:
		dict = uint32(binary.LittleEndian.Uint16(rest))
	case 4:
		dict = binary.LittleEndian.Uint32(rest)
	}
	rest = rest[didSize:]
	switch fcsSize {
	case 1:
		w.fcs = int64(rest[0])
	case 2:
		w.fcs = int64(binary.LittleEndian.Uint16(rest)) + 256
	case 4:
		w.fcs = int64(binary.LittleEndian.Uint32(rest))
	case 8:
		v := binary.LittleEndian.Uint64(rest)
		if v > 1<<62 {
			return fmt.Errorf("frame content size %d out of range", v)
		}
		w.fcs = int64(v)
	}
	if single {
		window = uint64(w.fcs)
	}
	if dict != 0 {
		return fmt.Errorf("frame needs dictionary %d", dict)
	}
	if window > zstdMaxWindow {
		return fmt.Errorf("unsupported window size %d, limit %d: %w", window, zstdMaxWindow, ErrUnsupported)
	}
	w.pending = w.hdr[:copy(w.hdr[:], b)]
	br.Discard(n)
	return nil
}

func truncEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (w *zstdFrameWalker) Read(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	for len(w.pending) == 0 && w.remain == 0 {
		if w.last {
			if w.checksum {
				w.checksum = false
				w.remain = 4
				break
			}
			w.done = true
			return 0, io.EOF
		}
		if err := w.blockHeader(); err != nil {
			w.err = err
			return 0, err
		}
	}
	if len(w.pending) > 0 {
		n := copy(p, w.pending)
		w.pending = w.pending[n:]
		return n, nil
	}
	if int64(len(p)) > w.remain {
		p = p[:w.remain]
	}
	n, err := w.br.Read(p)
	w.remain -= int64(n)
	if n == 0 && err != nil {
		w.err = truncEOF(err)
		return 0, w.err
	}
	return n, nil
}

// blockHeader parses a block header (RFC 8878 section 3.1.1.2).
func (w *zstdFrameWalker) blockHeader() error {
	b, err := w.br.Peek(3)
	if len(b) < 3 {
		return truncEOF(err)
	}
	h := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
	w.pending = w.hdr[:copy(w.hdr[:], b)]
	w.br.Discard(3)
	w.last = h&1 != 0
	size := int64(h >> 3)
	if size > zstdMaxBlock {
		return corruptf("block of %d bytes larger than %d", size, zstdMaxBlock)
	}
	switch (h >> 1) & 3 {
	case 0, 2: // raw, compressed
		w.remain = size
	case 1: // RLE: one byte, repeated size times
		w.remain = 1
	default:
		return corruptf("reserved block type")
	}
	return nil
}
