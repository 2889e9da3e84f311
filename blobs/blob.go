package blobs

import (
	"fmt"
	"io"
	"os"
)

// Blob is random access to one blob's bytes (full io.ReaderAt contract:
// a short read returns a non-nil error, io.EOF at the end of the blob).
type Blob interface {
	io.ReaderAt
	Size() int64
}

// FileBlob is implemented by blobs backed by a region of a local file, so the
// FUSE layer can splice from the file descriptor instead of copying through
// user space. The region is [base, base+Size()) of f. The caller must not
// close f, seek it or change it; it is owned by the Image.
type FileBlob interface {
	Blob
	File() (f *os.File, base int64)
}

// fileBlob is a region of an open file. ReadAt uses pread (os.File.ReadAt),
// which does not touch the file offset, so it is safe for concurrent use and
// several fileBlobs can share one *os.File (the archive case).
type fileBlob struct {
	f    *os.File
	base int64
	size int64
	own  bool // f belongs to this blob alone (directory layouts)
}

var _ FileBlob = (*fileBlob)(nil)

func (b *fileBlob) Size() int64                    { return b.size }
func (b *fileBlob) File() (f *os.File, base int64) { return b.f, b.base }

// ReadAt reads within the region only: bytes of the enclosing file past the
// region (the next tar member, padding) must never leak into a blob.
func (b *fileBlob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob read at negative offset %d: %w", off, ErrInvalid)
	}
	if off >= b.size {
		return 0, io.EOF
	}
	q := p
	if rem := b.size - off; int64(len(q)) > rem {
		q = q[:rem]
	}
	n, err := b.f.ReadAt(q, b.base+off)
	if n < len(q) {
		// The file is shorter than the region claims (it was truncated
		// after we opened it): corruption, not a clean end of blob.
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	if len(q) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b *fileBlob) close() error {
	if b.own && b.f != nil {
		return b.f.Close()
	}
	return nil
}

// readAllCapped reads the whole blob if it is at most max bytes.
func readAllCapped(b Blob, max int64) ([]byte, error) {
	if b.Size() > max {
		return nil, fmt.Errorf("%d bytes is more than the %d byte limit: %w", b.Size(), max, ErrInvalid)
	}
	buf := make([]byte, b.Size())
	n, err := b.ReadAt(buf, 0)
	if n == len(buf) {
		return buf, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}
