package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// sparseMap returns the data fragments of a sparse entry and how many
// bytes they occupy in the stream. archive/tar parses sparse maps but does
// not expose them, so they are read here from what it leaves behind: the
// GNU.sparse.map PAX record (formats 0.0 and 0.1), or the raw header
// blocks (old GNU 'S' headers; PAX 1.0 maps stored before the data).
// Knowing the map lets reads go straight to the stored bytes and lets the
// indexer skip a sparse entry in O(stored bytes) — never O(logical size),
// which for files like lastlog can be terabytes of holes.
func sparseMap(h *tar.Header, raw []byte) ([]Fragment, int64, error) {
	var frags []Fragment
	var err error
	switch {
	case h.PAXRecords["GNU.sparse.map"] != "":
		frags, err = parseMap01(h.PAXRecords["GNU.sparse.map"])
	case h.PAXRecords["GNU.sparse.major"] == "1":
		frags, err = parseMap10(raw)
	case h.Typeflag == tar.TypeGNUSparse:
		frags, err = parseOldGNU(raw)
	default:
		err = errors.New("unknown sparse format")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sparse map: %v: %w", err, ErrFormat)
	}
	var phys, end int64
	for i, f := range frags {
		if f.Off < end || f.Len < 0 || f.Off+f.Len > h.Size || f.Off+f.Len < f.Off {
			return nil, 0, fmt.Errorf("sparse map: fragment %d [%d,+%d) out of order or beyond size %d: %w", i, f.Off, f.Len, h.Size, ErrFormat)
		}
		end = f.Off + f.Len
		phys += f.Len
	}
	// Drop empty fragments (GNU tar ends maps with one at the file size).
	out := frags[:0]
	for _, f := range frags {
		if f.Len > 0 {
			out = append(out, f)
		}
	}
	return out, phys, nil
}

func parseMap01(s string) ([]Fragment, error) {
	parts := strings.Split(s, ",")
	if len(parts)%2 != 0 {
		return nil, errors.New("odd number of values")
	}
	frags := make([]Fragment, 0, len(parts)/2)
	for i := 0; i < len(parts); i += 2 {
		off, err1 := strconv.ParseInt(parts[i], 10, 64)
		n, err2 := strconv.ParseInt(parts[i+1], 10, 64)
		if err1 != nil || err2 != nil || off < 0 || n < 0 {
			return nil, fmt.Errorf("bad value at %d", i)
		}
		frags = append(frags, Fragment{off, n})
	}
	return frags, nil
}

// parseMap10: the map follows the last ustar header block of the entry:
// decimal numbers, one per line — count, then offset/length pairs —
// padded to a whole block.
func parseMap10(raw []byte) ([]Fragment, error) {
	hb := -1
	for b := 0; b+512 <= len(raw); b += 512 {
		if bytes.HasPrefix(raw[b+257:], []byte("ustar")) {
			hb = b
		}
	}
	if hb < 0 {
		return nil, errors.New("no header block")
	}
	m := raw[hb+512:]
	next := func() (int64, error) {
		i := bytes.IndexByte(m, '\n')
		if i < 0 {
			return 0, errors.New("truncated map")
		}
		v, err := strconv.ParseInt(string(m[:i]), 10, 64)
		m = m[i+1:]
		if err != nil || v < 0 {
			return 0, errors.New("bad number")
		}
		return v, nil
	}
	n, err := next()
	if err != nil {
		return nil, err
	}
	if n > int64(len(m)/4) {
		return nil, errors.New("count larger than the map")
	}
	frags := make([]Fragment, 0, n)
	for range n {
		off, err := next()
		if err != nil {
			return nil, err
		}
		l, err := next()
		if err != nil {
			return nil, err
		}
		frags = append(frags, Fragment{off, l})
	}
	return frags, nil
}

// parseOldGNU reads the map of an old-style GNU sparse header: four
// entries in the header block, then extension blocks of 21 while the
// "isextended" byte is set.
func parseOldGNU(raw []byte) ([]Fragment, error) {
	hb := -1
	for b := 0; b+512 <= len(raw); b += 512 {
		if raw[b+156] == tar.TypeGNUSparse && bytes.HasPrefix(raw[b+257:], []byte("ustar")) {
			hb = b
		}
	}
	if hb < 0 {
		return nil, errors.New("no GNU sparse header block")
	}
	var frags []Fragment
	read := func(blk []byte, n int) (bool, error) {
		for i := range n {
			e := blk[i*24 : i*24+24]
			if e[0] == 0 && e[12] == 0 {
				return false, nil
			}
			off, err1 := parseNumeric(e[:12])
			l, err2 := parseNumeric(e[12:])
			if err1 != nil || err2 != nil {
				return false, errors.New("bad number")
			}
			frags = append(frags, Fragment{off, l})
		}
		return true, nil
	}
	h := raw[hb : hb+512]
	if _, err := read(h[386:], 4); err != nil {
		return nil, err
	}
	ext := h[482] != 0
	for b := hb + 512; ext; b += 512 {
		if b+512 > len(raw) {
			return nil, errors.New("truncated extension blocks")
		}
		if _, err := read(raw[b:], 21); err != nil {
			return nil, err
		}
		ext = raw[b+504] != 0
	}
	return frags, nil
}

// parseNumeric decodes a tar numeric field: octal text, or base-256 when
// the high bit of the first byte is set.
func parseNumeric(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var v int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v > (1<<55)-1 {
				return 0, errors.New("overflow")
			}
			v = v<<8 | int64(c)
		}
		return v, nil
	}
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 8, 64)
}

// sparseReader serves a sparse file from its map: fragments are read from
// the stream where they are stored, holes are zeros.
type sparseReader struct {
	stream io.ReaderAt
	e      *Entry
	phys   []int64 // stream offset of each fragment
}

func newSparseReader(stream io.ReaderAt, e *Entry) *sparseReader {
	r := &sparseReader{stream: stream, e: e, phys: make([]int64, len(e.SparseMap))}
	p := e.Offset
	for i, f := range e.SparseMap {
		r.phys[i] = p
		p += f.Len
	}
	return r
}

func (s *sparseReader) ReadAt(p []byte, off int64) (int, error) {
	return s.ReadAtContext(context.Background(), p, off)
}

func (s *sparseReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= s.e.Size {
		return 0, io.EOF
	}
	want := int64(len(p))
	if rem := s.e.Size - off; want > rem {
		want = rem
	}
	w := p[:want]
	clear(w)
	m := s.e.SparseMap
	i := sort.Search(len(m), func(i int) bool { return m[i].Off+m[i].Len > off })
	for ; i < len(m) && m[i].Off < off+want; i++ {
		lo, hi := max(m[i].Off, off), min(m[i].Off+m[i].Len, off+want)
		if _, err := ReadAtContext(ctx, s.stream, w[lo-off:hi-off], s.phys[i]+lo-m[i].Off); err != nil {
			return 0, fmt.Errorf("sparse entry %q: %w", s.e.Name, err)
		}
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}
