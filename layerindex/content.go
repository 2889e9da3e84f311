package layerindex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Content returns random access to entry e's bytes, given random access to
// the layer's uncompressed stream. It reads nothing until asked. The
// result is a ReaderAtContext, passing ctx on to the stream if it is one.
func Content(stream io.ReaderAt, e *Entry) io.ReaderAt {
	if e.Sparse {
		return newSparseReader(stream, e)
	}
	return &section{r: stream, off: e.Offset, n: e.Size}
}

// ReaderAtContext is content whose reads may wait (for a span decode, a
// registry fetch) and can stop waiting when ctx ends, returning
// ctx.Err(): a FUSE read the kernel interrupts then returns EINTR at once
// instead of holding the reader until the wait ends.
type ReaderAtContext interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// ReadAtContext reads from r, passing ctx on if r takes one.
func ReadAtContext(ctx context.Context, r io.ReaderAt, p []byte, off int64) (int, error) {
	if rc, ok := r.(ReaderAtContext); ok {
		return rc.ReadAtContext(ctx, p, off)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return r.ReadAt(p, off)
}

// section is io.SectionReader's ReadAt, with ReadAtContext.
type section struct {
	r      io.ReaderAt
	off, n int64
}

func (s *section) ReadAt(p []byte, off int64) (int, error) {
	return s.ReadAtContext(context.Background(), p, off)
}

func (s *section) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off >= s.n {
		return 0, io.EOF
	}
	if max := s.n - off; int64(len(p)) > max {
		n, err := ReadAtContext(ctx, s.r, p[:max], s.off+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return ReadAtContext(ctx, s.r, p, s.off+off)
}

// ErrHeaderMismatch: the tar header in front of an entry's data does not
// describe that entry: the index does not belong to this layer (a forged
// or corrupt published index).
var ErrHeaderMismatch = errors.New("tar header does not match the index entry")

// CheckHeader reads the 512-byte tar header block that precedes a
// regular file's data in the uncompressed stream and checks that it is a
// valid header of a regular file of e.Size bytes and, when name != "" and
// the header's name is not truncated, that its last path component is
// name. It is how content served from an index that was not built here
// (one published in a registry) is tied to the layer's own tar stream:
// the chunk digests prove the bytes are the layer's, this proves they are
// this file's. Sparse entries fail: their layout cannot be checked this
// way.
func CheckHeader(stream io.ReaderAt, e *Entry, name string) error {
	if e.Sparse {
		// A sparse entry's data may start after a map stored in the data
		// area (PAX 1.0), so no header sits right before it to check.
		return fmt.Errorf("%w: sparse entries cannot be checked against their header", ErrHeaderMismatch)
	}
	if e.Offset < 512 || e.Offset%512 != 0 {
		return fmt.Errorf("%w: data offset %d is not right after a header block", ErrHeaderMismatch, e.Offset)
	}
	var h [512]byte
	if _, err := stream.ReadAt(h[:], e.Offset-512); err != nil && err != io.EOF {
		return err
	}
	// Checksum: the header's bytes summed with the checksum field as spaces.
	want, ok := parseOctal(h[148:156])
	var sum int64
	for i, c := range h {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	if !ok || sum != want {
		return fmt.Errorf("%w: no tar header before offset %d", ErrHeaderMismatch, e.Offset)
	}
	if t := h[156]; t != '0' && t != 0 && t != '7' {
		return fmt.Errorf("%w: header before offset %d is of type %q, not a regular file", ErrHeaderMismatch, e.Offset, t)
	}
	if size, err := parseNumeric(h[124:136]); err == nil && e.Size < 1<<33 && size != e.Size {
		return fmt.Errorf("%w: header before offset %d says %d bytes, the index %d", ErrHeaderMismatch, e.Offset, size, e.Size)
	}
	if name == "" {
		return nil
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] >= 0x7f {
			// Non-ASCII names travel in a PAX header; writers put an
			// ASCII-only stand-in in this one (Go's archive/tar drops
			// the other bytes).
			return nil
		}
	}
	raw := h[0:100]
	n := bytes.IndexByte(raw, 0)
	if n < 0 || n >= 99 {
		return nil // a long name, carried by an extra header: this one is truncated
	}
	hn := strings.TrimRight(string(raw[:n]), "/")
	if i := strings.LastIndexByte(hn, '/'); i >= 0 {
		hn = hn[i+1:]
	}
	if hn != name {
		return fmt.Errorf("%w: header before offset %d names %q, not %q", ErrHeaderMismatch, e.Offset, hn, name)
	}
	return nil
}

func parseOctal(b []byte) (int64, bool) {
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 8, 64)
	return v, err == nil
}
