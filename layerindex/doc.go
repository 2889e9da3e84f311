// Package layerindex turns a layer blob (tar, tar+gzip, tar+zstd) into an
// Index: its tar entries with their offsets in the uncompressed stream,
// the checkpoints where decoding can restart, and the digests every byte
// it serves is checked against. It then gives random access to the
// uncompressed stream that decodes only the spans a read touches.
//
// # Data flow
//
// Build reads a blob once, sequentially (local file or a registry
// stream): the format's decoder (Format) records checkpoints as it goes,
// the tar parser records entries, and side goroutines hash the blob (its
// digest and 512 KiB chunk digests) and the uncompressed stream (the
// DiffID, and the pieces of a decoded copy when one is kept). Reads then
// go where the layer's Format says (Format.Serving): to the blob itself
// (plain tar), to spans decoded from checkpoints through a SpanCache, or
// to a DecodedCopy checked piece by piece. Index files (MarshalBinary,
// UnmarshalIndex, UnmarshalHeader) let later mounts skip Build.
//
// Layers that carry a table of contents (eStargz, zstd:chunked: a
// TOCFormat, toc.go) need no Build at all: TOCFormat.Load reads the
// footer and the TOC, checks the TOC against the digest in the layer's
// annotations, and builds an Index whose TOC chunk table serves reads
// (TOC.NewReaderAt), each chunk checked against its digest.
//
// # Formats
//
// Everything format-specific lives in one Format value per format
// (format.go): the media types and leading bytes that mean it (FormatOf,
// Sniff, Detect: the one mapping from media type to format), its indexing
// decoder, its span decoder and its serving rule. A new format is one
// new Format in its own file plus its tests.
//
// # Invariants
//
//   - Nothing unverified is served. Build fails unless the blob digest,
//     size and DiffID match; a truncated or trailing-garbage stream fails
//     with ErrCorrupt naming the offset. Span decodes check what the
//     format can check (gzip member CRC and size, zstd frame checksums)
//     before a span is released whole; a gzip span that ends inside a
//     member is released as it decodes (its bytes cannot be contradicted
//     later). Index files are checked by sha256 (head, and the whole file
//     when loaded whole), their windows by CRC-32C, their length against
//     the head; a decoded copy's pieces by sha256 before first use; a
//     TOC layer's chunks by the TOC's sha256 before any byte is served
//     (the TOC itself by the annotation the manifest covers).
//   - A checkpoint's Out offsets increase; a span is the stream between two
//     checkpoints; the first checkpoint is at 0.
//   - Every parser of untrusted bytes (tar headers, compressed streams,
//     index files, published indexes, TOCs and their footers) has a fuzz target (make fuzz) and
//     never panics on hostile input.
//
// # Concurrency
//
// An Index is immutable once built and safe for concurrent use. A
// SpanCache is shared by all readers of an image: one decode per span
// under concurrency, no lock held while decoding, buffers recycled only
// when no reader holds them. The cache owns every goroutine the read path
// starts (span decodes, sequential read-ahead bounded by its slots);
// SpanCache.Close waits for them. Reads that wait (a span decode, a
// registry fetch) take a context through ReaderAtContext, so an
// interrupted FUSE read stops waiting at once; the decode goes on for the
// cache.
package layerindex
