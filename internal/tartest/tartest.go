package tartest

import (
	"archive/tar"
	"bytes"
	"path"
	"strings"
	"testing"
	"time"
)

// DefaultMTime is the mtime of every entry unless [MTime] says otherwise. It
// is fixed so that layers, and so digests, are reproducible.
var DefaultMTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry (or, for [RawBlocks] and [Sparse], a run of
// pre-encoded 512-byte blocks). Header and Body may be edited by a test
// before calling [Tar].
type Entry struct {
	Header *tar.Header
	Body   []byte
	// raw, when non-nil, is written verbatim instead of Header/Body.
	raw []byte
}

// Opt adjusts an entry's header.
type Opt func(*tar.Header)

// Owner sets the numeric uid and gid.
func Owner(uid, gid int) Opt {
	return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
}

// Names sets the symbolic user and group names.
func Names(uname, gname string) Opt {
	return func(h *tar.Header) { h.Uname, h.Gname = uname, gname }
}

// MTime sets the modification time. A time with a non-zero sub-second part
// switches the entry to PAX format, because archive/tar rounds mtimes to the
// second in USTAR and GNU headers; a later [Format] overrides that.
func MTime(t time.Time) Opt {
	return func(h *tar.Header) {
		h.ModTime = t
		if t.Nanosecond() != 0 && h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
	}
}

// Xattr adds an extended attribute as a PAX SCHILY.xattr.NAME record. The
// value is raw bytes (NULs allowed), as security.capability needs.
func Xattr(name, value string) Opt {
	return PAX("SCHILY.xattr."+name, value)
}

// PAX adds an arbitrary PAX record. archive/tar silently drops records that
// conflict with header fields (path, size, ...) and GNU.sparse.* ones; use
// [RawBlocks] for those.
func PAX(key, value string) Opt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[key] = value
	}
}

// Format forces the header format (tar.FormatUSTAR, FormatPAX, FormatGNU).
// FormatGNU writes long names as GNU ././@LongLink entries.
func Format(f tar.Format) Opt {
	return func(h *tar.Header) { h.Format = f }
}

// ModeBits replaces the mode (permission, setuid/setgid/sticky bits).
func ModeBits(mode int64) Opt {
	return func(h *tar.Header) { h.Mode = mode }
}

func newEntry(h *tar.Header, body []byte, o []Opt) Entry {
	if h.ModTime.IsZero() {
		h.ModTime = DefaultMTime
	}
	for _, f := range o {
		f(h)
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(body))
	}
	return Entry{Header: h, Body: body}
}

// Dir is a directory entry; a trailing "/" is added to name.
func Dir(name string, mode int64, o ...Opt) Entry {
	if !strings.HasSuffix(name, "/") {
		name += "/"
	}
	return newEntry(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}, nil, o)
}

// File is a regular file with the given content.
func File(name, content string, mode int64, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, []byte(content), o)
}

// FileBytes is [File] with a []byte body (large or binary content).
func FileBytes(name string, content []byte, mode int64, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, content, o)
}

// Symlink is a symbolic link to target (stored verbatim). Mode 0777.
func Symlink(name, target string, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil, o)
}

// Hardlink is a hard link to target, a path inside the same or a lower layer.
// Mode 0644 (tar readers take the target's metadata, not this).
func Hardlink(name, target string, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}, nil, o)
}

// Char is a character device. Mode 0666.
func Char(name string, major, minor int64, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeChar, Name: name, Devmajor: major, Devminor: minor, Mode: 0o666}, nil, o)
}

// Block is a block device. Mode 0660.
func Block(name string, major, minor int64, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeBlock, Name: name, Devmajor: major, Devminor: minor, Mode: 0o660}, nil, o)
}

// FIFO is a named pipe. Mode 0644.
func FIFO(name string, o ...Opt) Entry {
	return newEntry(&tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}, nil, o)
}

// Whiteout deletes p from lower layers: it writes an empty regular file
// dir(p)/.wh.base(p).
func Whiteout(p string, o ...Opt) Entry {
	p = strings.TrimSuffix(p, "/")
	dir, base := path.Split(p)
	return File(dir+".wh."+base, "", 0o644, o...)
}

// Opaque hides everything lower layers put under dir: it writes an empty
// regular file dir/.wh..wh..opq. It does not write dir itself.
func Opaque(dir string, o ...Opt) Entry {
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" || dir == "." {
		return File(".wh..wh..opq", "", 0o644, o...)
	}
	return File(dir+"/.wh..wh..opq", "", 0o644, o...)
}

// Raw writes hdr and body through archive/tar exactly as given: no default
// mtime, no trailing slash, Size must already be right (it is not derived
// from body, so a lying header can be built on purpose only when archive/tar
// accepts it; otherwise use [RawBlocks]).
func Raw(hdr *tar.Header, body []byte) Entry {
	return Entry{Header: hdr, Body: body}
}

// RawBlocks writes b verbatim into the stream (padded with zeros to a
// multiple of 512). Use [HeaderBlock] to encode header blocks by hand.
func RawBlocks(b []byte) Entry {
	if b == nil {
		b = []byte{}
	}
	return Entry{raw: b}
}

// Tar encodes entries as a tar stream with the two zero end blocks.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, e := range entries {
		if e.raw != nil {
			if err := tw.Flush(); err != nil {
				t.Fatalf("tartest: entry %d: flush: %v", i, err)
			}
			buf.Write(e.raw)
			buf.Write(make([]byte, pad(int64(len(e.raw)))))
			continue
		}
		if err := tw.WriteHeader(e.Header); err != nil {
			t.Fatalf("tartest: entry %d %q: %v", i, e.Header.Name, err)
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatalf("tartest: entry %d %q: body: %v", i, e.Header.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tartest: close: %v", err)
	}
	return buf.Bytes()
}

func pad(n int64) int64 { return (512 - n%512) % 512 }
