package layerindex

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
)

// Content returns random access to entry e's bytes, given random access to
// the layer's uncompressed stream. It reads nothing until asked.
func Content(stream io.ReaderAt, e *Entry) io.ReaderAt {
	if e.Sparse {
		return &sparseReader{stream: stream, e: e}
	}
	return io.NewSectionReader(stream, e.Offset, e.Size)
}

// sparseReader serves a GNU/PAX sparse file by re-parsing its headers with
// archive/tar from the entry's header offset and skipping forward. That is
// O(offset) per read, which is acceptable because sparse entries are rare
// in layers (Go-written tars never contain them) and the span cache below
// makes the skipped bytes cheap; it keeps the sparse-map formats in one
// well-tested parser instead of a second one of our own.
type sparseReader struct {
	stream io.ReaderAt
	e      *Entry
}

func (s *sparseReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= s.e.Size {
		return 0, io.EOF
	}
	tr := tar.NewReader(io.NewSectionReader(s.stream, s.e.Offset, math.MaxInt64-s.e.Offset))
	for {
		h, err := tr.Next()
		if err != nil {
			return 0, fmt.Errorf("re-reading sparse entry %q: %w", s.e.Name, err)
		}
		if h.Typeflag != tar.TypeXGlobalHeader {
			break
		}
	}
	if _, err := io.CopyN(io.Discard, tr, off); err != nil {
		return 0, fmt.Errorf("sparse entry %q: %w", s.e.Name, err)
	}
	want := len(p)
	if rem := s.e.Size - off; int64(want) > rem {
		want = int(rem)
	}
	n, err := io.ReadFull(tr, p[:want])
	if err != nil {
		return n, fmt.Errorf("sparse entry %q: %w", s.e.Name, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
