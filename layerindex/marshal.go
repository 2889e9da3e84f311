package layerindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
	"github.com/opencontainers/go-digest"
)

// On-disk index format, version 6 (see docs/DESIGN.md "Index cache"):
//
//	magic "OCIMIDX\x00" | u32le version | u64le len(head) | head |
//	sha256(magic..head) | windows | entries | sha256(everything before)
//
// The head and entries are sequences of uvarints/varints and
// length-prefixed strings: the head holds the header (compression, sizes,
// digest, diffID), the checkpoint table, the chunk digest tables (of the
// blob, and of the decoded stream when a decoded copy is kept) and the
// length of the entries section, which is all a mount whose merged tree
// is cached reads; the head thus fixes the whole file's length, which a
// head-only load checks against the file (a truncated file is rebuilt,
// not found out read by read). Each deflate
// checkpoint's 32 KiB window is stored deflated in the windows section;
// the head gives its inflated and stored lengths and the CRC-32C of the
// stored bytes, so a head-only load reads a window only when a read
// resumes at its checkpoint, and checks it then. Entries follow in tar
// order with front-coded names (bytes shared with the previous name +
// suffix) and delta-coded offsets: a few tens of bytes per entry. The
// trailing checksum makes a torn or corrupt file detectable, so a cached
// index is never trusted unless it is exactly what was written.
const (
	indexMagic   = "OCIMIDX\x00"
	indexVersion = 6
)

// FormatVersion is the index file format's version, for naming cache
// directories and media types after it.
const FormatVersion = indexVersion

// ErrBadIndex: a serialized index is corrupt, truncated or of another
// version. Callers rebuild the index from the layer.
var ErrBadIndex = errors.New("bad index file")

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) byte1(v byte)     { e.b = append(e.b, v) }

// headStart is where the head (header and checkpoints) starts: after the
// magic, the version and the head length.
const headStart = len(indexMagic) + 4 + 8

// MarshalBinary serializes the index in the versioned on-disk format.
func (ix *Index) MarshalBinary() ([]byte, error) {
	if ix.TOC != nil {
		// Its offsets are into the TOC's stream, not the tar stream an
		// index file describes: written out, it would serve wrong bytes.
		return nil, fmt.Errorf("index of %s was built from its %s, not from the layer: it is not written to index files", ix.Digest, ix.TOC.Format.Source)
	}
	e := &encoder{b: make([]byte, 0, 64+32*len(ix.Chunks.Sums)+32*len(ix.Decoded.Sums))}
	e.b = append(e.b, indexMagic...)
	e.b = binary.LittleEndian.AppendUint32(e.b, indexVersion)
	e.b = append(e.b, make([]byte, 8)...) // head length, filled in below
	var windows []byte                    // the windows section, after the head
	e.uvarint(uint64(ix.Compression))
	e.uvarint(uint64(ix.CompressedSize))
	e.uvarint(uint64(ix.UncompressedSize))
	e.str(string(ix.Digest))
	e.str(string(ix.DiffID))
	cp := ix.Checkpoints
	if cp == nil {
		e.byte1(0)
	} else {
		e.byte1(1)
		e.uvarint(uint64(cp.Compression))
		e.uvarint(uint64(cp.CompressedSize))
		e.uvarint(uint64(cp.UncompressedSize))
		e.uvarint(uint64(len(cp.Points)))
		var pin, pout int64
		var zbuf bytes.Buffer
		zw, _ := flate.NewWriter(&zbuf, flate.BestSpeed)
		for i := range cp.Points {
			pt := &cp.Points[i]
			e.byte1(byte(pt.Kind))
			e.varint(pt.In - pin)
			e.varint(pt.Out - pout)
			pin, pout = pt.In, pt.Out
			e.byte1(pt.Bits)
			if pt.Final {
				e.byte1(1)
			} else {
				e.byte1(0)
			}
			e.uvarint(uint64(pt.Member))
			e.varint(pt.DeflateIn)
			e.varint(pt.MemberOut)
			var z []byte
			wl := len(pt.Window)
			if pt.Window == nil && pt.windowLen > 0 {
				var err error
				if z, err = pt.storedWindow(); err != nil {
					return nil, err
				}
				wl = pt.windowLen
			} else if wl > 0 {
				zbuf.Reset()
				zw.Reset(&zbuf)
				zw.Write(pt.Window)
				if err := zw.Close(); err != nil {
					return nil, err
				}
				z = zbuf.Bytes()
			}
			e.uvarint(uint64(wl))
			if wl > 0 {
				e.uvarint(uint64(len(z)))
				e.b = binary.LittleEndian.AppendUint32(e.b, crc32.Checksum(z, castagnoli))
				windows = append(windows, z...)
			}
		}
	}
	e.chunkSums(ix.Chunks)
	e.chunkSums(ix.Decoded)
	entries := ix.marshalEntries()
	e.uvarint(uint64(len(entries)))
	binary.LittleEndian.PutUint64(e.b[headStart-8:], uint64(len(e.b)-headStart))
	hsum := sha256.Sum256(e.b)
	e.b = append(e.b, hsum[:]...)
	e.b = append(e.b, windows...)
	e.b = append(e.b, entries...)
	sum := sha256.Sum256(e.b)
	return append(e.b, sum[:]...), nil
}

func (e *encoder) chunkSums(c ChunkSums) {
	e.uvarint(uint64(c.Size))
	e.uvarint(uint64(len(c.Sums)))
	for _, s := range c.Sums {
		e.b = append(e.b, s[:]...)
	}
}

// marshalEntries encodes the entries section.
func (ix *Index) marshalEntries() []byte {
	e := &encoder{b: make([]byte, 0, 16+40*len(ix.Entries))}
	e.uvarint(uint64(len(ix.Entries)))
	prev, prevOff := "", int64(0)
	for i := range ix.Entries {
		en := &ix.Entries[i]
		p := commonPrefix(prev, en.Name)
		e.uvarint(uint64(p))
		e.str(en.Name[p:])
		prev = en.Name
		k := byte(en.Kind)
		if en.Sparse {
			k |= 0x80
		}
		e.byte1(k)
		e.uvarint(uint64(en.Mode))
		e.uvarint(uint64(en.UID))
		e.uvarint(uint64(en.GID))
		e.uvarint(uint64(en.Size))
		e.varint(en.ModSec)
		e.uvarint(uint64(en.ModNsec))
		e.str(en.Link)
		if en.Kind == KindChar || en.Kind == KindBlock {
			e.uvarint(uint64(en.DevMajor))
			e.uvarint(uint64(en.DevMinor))
		}
		e.uvarint(uint64(len(en.Xattrs)))
		for _, x := range en.Xattrs {
			e.str(x.Name)
			e.str(x.Value)
		}
		e.varint(en.Offset - prevOff)
		prevOff = en.Offset
		if en.Sparse {
			e.uvarint(uint64(len(en.SparseMap)))
			for _, f := range en.SparseMap {
				e.uvarint(uint64(f.Off))
				e.uvarint(uint64(f.Len))
			}
		}
	}
	return e.b
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadIndex, what)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks it can be satisfied by the remaining
// bytes at min bytes per item, so hostile counts cannot allocate much.
func (d *decoder) count(minBytes int) int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.b)/max(minBytes, 1)) {
		d.fail("count larger than the file")
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u32le() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value out of range")
	}
	return uint32(v)
}

func (d *decoder) size() int64 {
	v := d.uvarint()
	if v > 1<<62 {
		d.fail("size out of range")
	}
	return int64(v)
}

// UnmarshalIndex parses what MarshalBinary wrote. Any damage, a version
// it does not know, or inconsistent contents yield an error wrapping
// ErrBadIndex; it never panics on hostile input. The result holds no
// reference to b.
func UnmarshalIndex(b []byte) (*Index, error) {
	head, err := checkHead(b)
	if err != nil {
		return nil, err
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: checksum mismatch (torn or corrupt file)", ErrBadIndex)
	}
	if len(body) < headStart+len(head)+sha256.Size {
		return nil, fmt.Errorf("%w: truncated", ErrBadIndex)
	}
	base := headStart + len(head) + sha256.Size
	return parseIndexBody(head, body[base:], true, nil, int64(base))
}

// UnmarshalHeader is UnmarshalIndex without the entry table: the sizes,
// digests and checkpoints, which is all a mount needs to serve a layer
// whose merged tree is cached. It needs (and checks) only the file's head,
// which has a checksum of its own, so callers may pass just HeadSize(b)
// bytes. The checkpoints' windows stay in file, the whole index file,
// which must outlive the index: they are read from it (and checked
// against the CRC-32C the head gives) when a read resumes there.
func UnmarshalHeader(b []byte, file io.ReaderAt) (*Index, error) {
	head, err := checkHead(b)
	if err != nil {
		return nil, err
	}
	return parseIndexBody(head, nil, false, file, int64(headStart+len(head)+sha256.Size))
}

// HeadSize says how many leading bytes of an index file UnmarshalHeader
// needs, given at least its first HeadSizeNeeds bytes.
func HeadSize(prefix []byte) (int, error) {
	if len(prefix) < headStart || string(prefix[:len(indexMagic)]) != indexMagic {
		return 0, fmt.Errorf("%w: not an index file", ErrBadIndex)
	}
	n := binary.LittleEndian.Uint64(prefix[headStart-8:])
	if n > 1<<40 {
		return 0, fmt.Errorf("%w: bad head length", ErrBadIndex)
	}
	return headStart + int(n) + sha256.Size, nil
}

// HeadSizeNeeds is the prefix length HeadSize reads.
const HeadSizeNeeds = headStart

// checkHead verifies magic, version and the head's own checksum and
// returns the head bytes.
func checkHead(b []byte) ([]byte, error) {
	n, err := HeadSize(b)
	if err != nil {
		return nil, err
	}
	if v := binary.LittleEndian.Uint32(b[len(indexMagic):]); v != indexVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadIndex, v, indexVersion)
	}
	if len(b) < n {
		return nil, fmt.Errorf("%w: truncated head", ErrBadIndex)
	}
	end := n - sha256.Size
	if got := sha256.Sum256(b[:end]); !bytes.Equal(got[:], b[end:n]) {
		return nil, fmt.Errorf("%w: head checksum mismatch (torn or corrupt file)", ErrBadIndex)
	}
	return b[headStart:end], nil
}

// parseIndexBody decodes the checksummed head and, withEntries, rest:
// the windows and entries sections. Without entries, windows are left in
// file at offset base (where the windows section starts). It is separate
// so the fuzz target can reach it without forging checksums.
func parseIndexBody(head, rest []byte, withEntries bool, file io.ReaderAt, base int64) (*Index, error) {
	d := &decoder{b: head}
	ix := &Index{}
	ix.Compression = Compression(d.uvarint())
	ix.CompressedSize = d.size()
	ix.UncompressedSize = d.size()
	ix.Digest = digest.Digest(d.str())
	ix.DiffID = digest.Digest(d.str())
	f, ferr := ix.Compression.Format()
	var windowsLen int64 // of the windows section
	if d.byte1() == 1 {
		ix.Checkpoints, windowsLen = d.checkpoints(ix, file, base)
	} else if ferr != nil || !f.plain {
		d.fail("compressed layer without checkpoints")
	}
	ix.Chunks = d.chunkSums(ix.CompressedSize, "chunk table does not match the blob size")
	ix.Decoded = d.chunkSums(ix.UncompressedSize, "decoded chunk table does not match the stream size")
	if ix.Decoded.Size > 0 && (ferr != nil || !f.decodedCopy) {
		d.fail("decoded chunk table of a layer that has no decoded copy")
	}
	entriesLen := d.size()
	ix.storedLen = base + windowsLen + entriesLen + sha256.Size
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes in the head")
	}
	if d.err != nil {
		return nil, d.err
	}
	if !withEntries {
		return ix, nil
	}
	if int64(len(rest)) < windowsLen {
		d.fail("truncated windows")
		return nil, d.err
	}
	ix.attachWindows(rest[:windowsLen])
	d.b = rest[windowsLen:]
	if int64(len(d.b)) != entriesLen {
		d.fail("entries section length does not match the head")
		return nil, d.err
	}
	if ix.Entries = d.entries(ix.UncompressedSize); d.err != nil {
		return nil, d.err
	}
	return ix, nil
}

// checkpoints decodes the checkpoint table of ix's head. Windows stay in
// file, at base plus their place in the windows section, whose length it
// returns.
func (d *decoder) checkpoints(ix *Index, file io.ReaderAt, base int64) (*Checkpoints, int64) {
	var windowsLen int64
	cp := &Checkpoints{}
	cp.Compression = Compression(d.uvarint())
	cp.CompressedSize = d.size()
	cp.UncompressedSize = d.size()
	np := d.count(8)
	if d.err == nil {
		cp.Points = make([]Checkpoint, np)
	}
	var pin, pout int64
	for i := 0; i < np && d.err == nil; i++ {
		pt := &cp.Points[i]
		pt.Kind = CheckpointKind(d.byte1())
		pt.In = pin + d.varint()
		pt.Out = pout + d.varint()
		pin, pout = pt.In, pt.Out
		pt.Bits = d.byte1()
		pt.Final = d.byte1() == 1
		pt.Member = int64(d.uvarint())
		pt.DeflateIn = d.varint()
		pt.MemberOut = d.varint()
		if wl := d.uvarint(); wl > 0 && d.err == nil {
			zl := d.uvarint()
			crc := d.u32le()
			if wl > 1<<16 || zl == 0 || zl > 1<<17 {
				d.fail("bad window length")
				break
			}
			pt.windowLen, pt.windowZLen, pt.windowCRC = int(wl), int(zl), crc
			pt.windowSrc, pt.windowOff = file, base+windowsLen
			windowsLen += int64(zl)
		}
		if pt.In < 0 || pt.In > cp.CompressedSize || pt.Out < 0 || pt.Out > cp.UncompressedSize || pt.Bits > 7 ||
			(i == 0 && pt.Out != 0) || (i > 0 && pt.Out <= cp.Points[i-1].Out) {
			d.fail("bad checkpoint")
		}
	}
	if d.err == nil && (np == 0 || cp.Compression != ix.Compression || cp.UncompressedSize != ix.UncompressedSize) {
		d.fail("checkpoints do not match the index")
	}
	return cp, windowsLen
}

// attachWindows gives the checkpoints their stored windows from the
// windows section: one copy for all, so the index does not keep the
// caller's buffer (and its entry bytes) alive.
func (ix *Index) attachWindows(windows []byte) {
	if ix.Checkpoints == nil || len(windows) == 0 {
		return
	}
	all := bytes.Clone(windows)
	var off int
	for i := range ix.Checkpoints.Points {
		pt := &ix.Checkpoints.Points[i]
		if pt.windowZLen > 0 {
			pt.windowZ = all[off : off+pt.windowZLen : off+pt.windowZLen]
			pt.windowSrc = nil
			off += pt.windowZLen
		}
	}
}

// entries decodes the entries section (what is left of d) of a stream of
// size bytes.
func (d *decoder) entries(size int64) []Entry {
	var entries []Entry
	n := d.count(12)
	if d.err == nil {
		entries = make([]Entry, n)
	}
	prev, prevOff := "", int64(0)
	for i := 0; i < n && d.err == nil; i++ {
		en := &entries[i]
		p := d.uvarint()
		if p > uint64(len(prev)) {
			d.fail("bad name prefix")
			break
		}
		en.Name = prev[:p] + d.str()
		prev = en.Name
		k := d.byte1()
		en.Sparse = k&0x80 != 0
		en.Kind = Kind(k &^ 0x80)
		if en.Kind < KindReg || en.Kind > KindFIFO {
			d.fail("bad entry kind")
		}
		en.Mode = d.u32()
		en.UID = d.u32()
		en.GID = d.u32()
		en.Size = d.size()
		en.ModSec = d.varint()
		en.ModNsec = d.u32()
		en.Link = d.str()
		if en.Kind == KindChar || en.Kind == KindBlock {
			en.DevMajor = d.u32()
			en.DevMinor = d.u32()
		}
		if nx := d.count(2); nx > 0 {
			en.Xattrs = make([]Xattr, nx)
			for j := range en.Xattrs {
				en.Xattrs[j] = Xattr{Name: d.str(), Value: d.str()}
			}
		}
		en.Offset = prevOff + d.varint()
		prevOff = en.Offset
		if en.Offset < 0 || en.Offset > size {
			d.fail("entry offset out of range")
		}
		if !en.Sparse && en.Kind == KindReg && en.Offset+en.Size > size {
			d.fail("entry data beyond the stream")
		}
		if en.Sparse {
			nf := d.count(2)
			if d.err == nil && nf > 0 {
				en.SparseMap = make([]Fragment, nf)
			}
			var end, phys int64
			for j := 0; j < nf && d.err == nil; j++ {
				f := Fragment{Off: d.size(), Len: d.size()}
				if f.Off < end || f.Len <= 0 || f.Off+f.Len > en.Size {
					d.fail("bad sparse map")
				}
				end = f.Off + f.Len
				phys += f.Len
				en.SparseMap[j] = f
			}
			if en.Offset+phys > size {
				d.fail("sparse data beyond the stream")
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return entries
}

// chunkSums decodes a ChunkSums table for a stream of total bytes.
func (d *decoder) chunkSums(total int64, mismatch string) ChunkSums {
	var c ChunkSums
	c.Size = d.size()
	nc := d.count(32)
	if d.err != nil {
		return ChunkSums{}
	}
	if (c.Size == 0 && nc != 0) || (c.Size > 0 && c.Count(total) != nc) {
		d.fail(mismatch)
		return ChunkSums{}
	}
	if nc > 0 {
		c.Sums = make([][32]byte, nc)
	}
	for i := range c.Sums {
		copy(c.Sums[i][:], d.b[:32])
		d.b = d.b[32:]
	}
	return c
}

// window returns the checkpoint's history, inflating the stored form of a
// loaded index on demand (about 50 µs, against the milliseconds of the
// span decode that needs it).
func (p *Checkpoint) window() ([]byte, error) {
	if p.Window != nil || p.windowLen == 0 {
		return p.Window, nil
	}
	z, err := p.storedWindow()
	if err != nil {
		return nil, err
	}
	w, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), int64(p.windowLen)+1))
	if err != nil || len(w) != p.windowLen {
		return nil, fmt.Errorf("%w: bad window", ErrBadIndex)
	}
	return w, nil
}

// storedWindow returns the window as the index file stores it (deflated),
// reading it from the file for a head-only load. Those bytes were not
// covered by the head's checksum, so they are checked here.
func (p *Checkpoint) storedWindow() ([]byte, error) {
	if p.windowZ != nil {
		return p.windowZ, nil
	}
	if p.windowSrc == nil {
		return nil, fmt.Errorf("%w: window not loaded", ErrBadIndex)
	}
	z := make([]byte, p.windowZLen)
	if n, err := p.windowSrc.ReadAt(z, p.windowOff); n != len(z) {
		return nil, fmt.Errorf("%w: reading window at %d: %v", ErrBadIndex, p.windowOff, err)
	}
	if crc32.Checksum(z, castagnoli) != p.windowCRC {
		return nil, fmt.Errorf("%w: window at %d: checksum mismatch (index file damaged)", ErrBadIndex, p.windowOff)
	}
	return z, nil
}

// castagnoli is CRC-32C, hardware accelerated where the CPU has it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LoadWindows inflates every lazily stored window (for comparisons and
// tests; reads do it on demand).
func (c *Checkpoints) LoadWindows() error {
	for i := range c.Points {
		p := &c.Points[i]
		w, err := p.window()
		if err != nil {
			return err
		}
		p.Window = w
		p.windowZ, p.windowLen, p.windowSrc, p.windowOff, p.windowZLen, p.windowCRC = nil, 0, nil, 0, 0, 0
	}
	return nil
}
