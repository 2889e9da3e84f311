package layerindex

import "io"

// Content returns random access to entry e's bytes, given random access to
// the layer's uncompressed stream. It reads nothing until asked.
func Content(stream io.ReaderAt, e *Entry) io.ReaderAt {
	if e.Sparse {
		return newSparseReader(stream, e)
	}
	return io.NewSectionReader(stream, e.Offset, e.Size)
}
