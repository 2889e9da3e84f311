package tartest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strconv"
)

// RawHeader is a tar header block as it is laid out on disk, for
// [HeaderBlock]. Nothing is validated or cleaned: names may hold "..", NULs
// cut at the field width, and so on.
type RawHeader struct {
	Name         string // up to 100 bytes (silently cut)
	Mode         int64
	UID, GID     int64 // base-256 encoded when too big for octal
	Size         int64
	MTime        int64 // Unix seconds
	Typeflag     byte
	Linkname     string // up to 100 bytes
	Uname, Gname string
	Devmajor     int64
	Devminor     int64
	Prefix       string // USTAR prefix (ignored when GNU)
	// GNU selects the GNU magic "ustar  \x00" instead of USTAR "ustar\x0000".
	GNU bool
	// BadChecksum stores a wrong checksum on purpose.
	BadChecksum bool

	// Old-GNU sparse fields (GNU only).
	sparse     []sparseEntry
	isExtended bool
	realSize   int64
}

type sparseEntry struct{ off, n int64 }

// HeaderBlock encodes h as one 512-byte header block with a valid checksum
// (unless h.BadChecksum).
func HeaderBlock(h RawHeader) []byte {
	b := make([]byte, 512)
	copy(b[0:100], h.Name)
	putNum(b[100:108], h.Mode)
	putNum(b[108:116], h.UID)
	putNum(b[116:124], h.GID)
	putNum(b[124:136], h.Size)
	putNum(b[136:148], h.MTime)
	b[156] = h.Typeflag
	copy(b[157:257], h.Linkname)
	if h.GNU {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	copy(b[265:297], h.Uname)
	copy(b[297:329], h.Gname)
	putNum(b[329:337], h.Devmajor)
	putNum(b[337:345], h.Devminor)
	if h.GNU {
		for i, s := range h.sparse {
			o := 386 + 24*i
			putNum(b[o:o+12], s.off)
			putNum(b[o+12:o+24], s.n)
		}
		if h.isExtended {
			b[482] = 1
		}
		if h.realSize != 0 || h.Typeflag == tar.TypeGNUSparse {
			putNum(b[483:495], h.realSize)
		}
	} else {
		copy(b[345:500], h.Prefix)
	}
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	if h.BadChecksum {
		sum++
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// putNum writes n as zero-padded octal with a NUL terminator, or as base-256
// (GNU extension) when it does not fit.
func putNum(b []byte, n int64) {
	s := strconv.FormatInt(n, 8)
	if n >= 0 && len(s) <= len(b)-1 {
		copy(b, fmt.Sprintf("%0*s", len(b)-1, s))
		b[len(b)-1] = 0
		return
	}
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	b[0] |= 0x80
}

// PAXBlocks encodes an extended header ('x', or 'g' when global) with the
// given key/value pairs in order, as archive/tar would but without dropping
// any key.
func PAXBlocks(global bool, records ...[2]string) []byte {
	var data bytes.Buffer
	for _, kv := range records {
		data.WriteString(paxRecord(kv[0], kv[1]))
	}
	flag := byte(tar.TypeXHeader)
	if global {
		flag = tar.TypeXGlobalHeader
	}
	out := HeaderBlock(RawHeader{Name: "PaxHeaders.0/x", Mode: 0o644, Size: int64(data.Len()), Typeflag: flag})
	out = append(out, padded(data.Bytes())...)
	return out
}

// paxRecord formats "LEN KEY=VALUE\n" where LEN counts itself.
func paxRecord(k, v string) string {
	rest := " " + k + "=" + v + "\n"
	n := len(rest)
	for {
		s := strconv.Itoa(n) + rest
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

func padded(b []byte) []byte {
	out := append([]byte{}, b...)
	return append(out, make([]byte, pad(int64(len(b))))...)
}

// SparseFormat selects how [Sparse] encodes a sparse file.
type SparseFormat int

const (
	// SparseGNU is the old GNU format: typeflag 'S', map in the header and
	// extension blocks (what GNU tar --format=gnu --sparse writes).
	SparseGNU SparseFormat = iota
	// SparsePAX01 is PAX format 0.1: map in GNU.sparse.map.
	SparsePAX01
	// SparsePAX10 is PAX format 1.0: map at the start of the data (what GNU
	// tar --format=posix --sparse writes).
	SparsePAX10
)

// Chunk is a data region of a sparse file; everything else reads as zeros.
type Chunk struct {
	Offset int64
	Data   []byte
}

// SparseContent is the logical content of a sparse file of the given size.
func SparseContent(size int64, chunks []Chunk) []byte {
	b := make([]byte, size)
	for _, c := range chunks {
		copy(b[c.Offset:], c.Data)
	}
	return b
}

// Sparse is a sparse regular file of logical size size whose data regions
// are chunks (sorted, non-overlapping, within size), hand-encoded in format
// f since archive/tar cannot write sparse files. Opts apply as usual; Xattr
// and PAX records are only possible with the PAX formats (it panics
// otherwise), and names over 100 bytes get a GNU LongLink or a PAX path.
//
// Chunk data is stored back to back. GNU tar only ever writes chunks whose
// length is a multiple of 512 (except the last), and when reading it skips
// to the next 512-byte block after each chunk, while archive/tar does not: so
// keep every chunk but the last a multiple of 512 bytes unless the test is
// about that ambiguity.
func Sparse(name string, size int64, chunks []Chunk, f SparseFormat, mode int64, o ...Opt) Entry {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: DefaultMTime}
	for _, fn := range o {
		fn(h)
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].Offset < chunks[j].Offset })
	var sp []sparseEntry
	var data []byte
	for _, c := range chunks {
		sp = append(sp, sparseEntry{c.Offset, int64(len(c.Data))})
		data = append(data, c.Data...)
	}
	// GNU tar always records where the file ends, as a zero-length region.
	if len(sp) == 0 || sp[len(sp)-1].off+sp[len(sp)-1].n < size {
		sp = append(sp, sparseEntry{size, 0})
	}
	base := RawHeader{
		Mode: h.Mode, UID: int64(h.Uid), GID: int64(h.Gid), MTime: h.ModTime.Unix(),
		Uname: h.Uname, Gname: h.Gname,
	}
	var out []byte
	switch f {
	case SparseGNU:
		if len(h.PAXRecords) > 0 {
			panic("tartest.Sparse: PAX records need SparsePAX01 or SparsePAX10")
		}
		if len(name) > 100 {
			ll := HeaderBlock(RawHeader{Name: "././@LongLink", Typeflag: 'L', Size: int64(len(name) + 1), GNU: true})
			out = append(out, ll...)
			out = append(out, padded(append([]byte(name), 0))...)
		}
		rh := base
		rh.Name, rh.GNU, rh.Typeflag = name, true, tar.TypeGNUSparse
		rh.Size, rh.realSize = int64(len(data)), size
		first := sp
		if len(first) > 4 {
			first, rh.isExtended = sp[:4], true
		}
		rh.sparse = first
		out = append(out, HeaderBlock(rh)...)
		// Extension blocks: 21 entries each, byte 504 says another follows.
		for rest := sp[len(first):]; len(rest) > 0; {
			blk := make([]byte, 512)
			n := min(len(rest), 21)
			for i, s := range rest[:n] {
				putNum(blk[24*i:24*i+12], s.off)
				putNum(blk[24*i+12:24*i+24], s.n)
			}
			rest = rest[n:]
			if len(rest) > 0 {
				blk[504] = 1
			}
			out = append(out, blk...)
		}
		out = append(out, padded(data)...)
	case SparsePAX01, SparsePAX10:
		var recs [][2]string
		keys := make([]string, 0, len(h.PAXRecords))
		for k := range h.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			recs = append(recs, [2]string{k, h.PAXRecords[k]})
		}
		if h.ModTime.Nanosecond() != 0 {
			recs = append(recs, [2]string{"mtime", fmt.Sprintf("%d.%09d", h.ModTime.Unix(), h.ModTime.Nanosecond())})
		}
		dir, file := path.Split(name)
		fake := dir + "GNUSparseFile.0/" + file
		rh := base
		rh.Typeflag = tar.TypeReg
		if f == SparsePAX01 {
			var m []byte
			for i, s := range sp {
				if i > 0 {
					m = append(m, ',')
				}
				m = fmt.Appendf(m, "%d,%d", s.off, s.n)
			}
			recs = append(recs,
				[2]string{"GNU.sparse.size", strconv.FormatInt(size, 10)},
				[2]string{"GNU.sparse.numblocks", strconv.Itoa(len(sp))},
				[2]string{"GNU.sparse.map", string(m)},
				[2]string{"path", name})
			rh.Size = int64(len(data))
		} else {
			recs = append(recs,
				[2]string{"GNU.sparse.major", "1"},
				[2]string{"GNU.sparse.minor", "0"},
				[2]string{"GNU.sparse.name", name},
				[2]string{"GNU.sparse.realsize", strconv.FormatInt(size, 10)})
			var m []byte
			m = fmt.Appendf(m, "%d\n", len(sp))
			for _, s := range sp {
				m = fmt.Appendf(m, "%d\n%d\n", s.off, s.n)
			}
			data = append(padded(m), data...)
			rh.Size = int64(len(data))
		}
		rh.Name = fake
		if len(fake) > 100 {
			rh.Name = fake[:100]
		}
		out = append(out, PAXBlocks(false, recs...)...)
		out = append(out, HeaderBlock(rh)...)
		out = append(out, padded(data)...)
	default:
		panic("tartest.Sparse: unknown format")
	}
	return Entry{raw: out}
}
