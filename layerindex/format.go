package layerindex

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format is one way a layer blob is encoded, and the single home of
// everything that depends on it: which media types and leading bytes mean
// it, how the indexing pass decodes it (recording checkpoints), how a
// span is decoded from a checkpoint, and how a layer of it is served once
// indexed. Adding a format is one new Format value in a file of its own,
// listed in formats, plus its tests; nothing outside this package
// switches on formats.
type Format struct {
	// Compression is how index files record the format.
	Compression Compression
	// Name is what users see ("tar+gzip"), in status and inspect output.
	Name string
	// MediaType is the OCI media type of the format, for descriptors
	// made up for layers that have none (docker-archive).
	MediaType string

	magic []byte // leading bytes; nil: the fallback when none match
	// plain: the blob is the uncompressed tar stream itself.
	plain bool
	// newIndexer returns the decoder the indexing pass reads from;
	// release, if set, returns its resources once the pass ends.
	newIndexer func(ir *IndexingReader) (stream io.Reader, release func())
	// openSpan returns the uncompressed stream from checkpoint i up to
	// the uncompressed offset limit (see Checkpoints.openSpan).
	openSpan func(c *Checkpoints, blob io.ReaderAt, i int, limit int64, verify bool) (spanStream, error)
	// serving decides how an indexed layer is read (see Serving).
	serving func(ix *Index, span int64) Serving
	// decodedCopy: the indexing pass may need to keep the decoded stream
	// (Options.Tee), because serving can say ServeDecodedCopy.
	decodedCopy bool
}

// Serving is where the reads of an indexed layer go.
type Serving uint8

const (
	// ServeBlob: the blob is the tar stream; reads go to the blob.
	ServeBlob Serving = iota + 1
	// ServeSpans: reads decode the spans they touch from the checkpoints
	// (Checkpoints.NewReaderAt), through the span cache.
	ServeSpans
	// ServeDecodedCopy: the spans are too long to decode per read (a
	// single-frame zstd layer), so the indexing pass keeps the decoded
	// stream in a local file and reads go there (DecodedCopy).
	ServeDecodedCopy
)

func (s Serving) String() string {
	switch s {
	case ServeBlob:
		return "blob"
	case ServeSpans:
		return "spans"
	case ServeDecodedCopy:
		return "decoded copy"
	}
	return fmt.Sprintf("serving(%d)", uint8(s))
}

// formats is every format, indexed by Compression.
var formats = [...]*Format{None: &tarFormat, Gzip: &gzipFormat, Zstd: &zstdFormat}

var tarFormat = Format{
	Compression: None,
	Name:        "tar",
	MediaType:   "application/vnd.oci.image.layer.v1.tar",
	plain:       true,
	newIndexer: func(ir *IndexingReader) (io.Reader, func()) {
		ir.points = append(ir.points, Checkpoint{Kind: CheckpointRaw})
		return nil, nil // IndexingReader reads the blob itself
	},
	openSpan: func(c *Checkpoints, blob io.ReaderAt, i int, limit int64, verify bool) (spanStream, error) {
		p := &c.Points[i]
		if p.Kind != CheckpointRaw || p.In != p.Out {
			return nil, fmt.Errorf("span %d: invalid checkpoint kind %v for uncompressed blob: %w", i, p.Kind, ErrCorrupt)
		}
		return &rawStream{r: io.NewSectionReader(blob, p.In, limit-p.In)}, nil
	},
	serving: func(*Index, int64) Serving { return ServeBlob },
}

var gzipFormat = Format{
	Compression: Gzip,
	Name:        "tar+gzip",
	MediaType:   "application/vnd.oci.image.layer.v1.tar+gzip",
	magic:       []byte{0x1f, 0x8b},
	newIndexer: func(ir *IndexingReader) (io.Reader, func()) {
		g := newGzipIndexer(ir)
		return g, g.release
	},
	openSpan: func(c *Checkpoints, blob io.ReaderAt, i int, limit int64, verify bool) (spanStream, error) {
		// Only a span that ends at a member's end (or the blob's) can
		// check the member trailer.
		verifyEnd := verify && (i+1 == len(c.Points) || c.Points[i+1].Kind == CheckpointGzipMember)
		return openGzipSpan(blob, c.CompressedSize, &c.Points[i], limit, verifyEnd, i)
	},
	serving: func(*Index, int64) Serving { return ServeSpans },
}

var zstdFormat = Format{
	Compression: Zstd,
	Name:        "tar+zstd",
	MediaType:   "application/vnd.oci.image.layer.v1.tar+zstd",
	magic:       []byte{0x28, 0xb5, 0x2f, 0xfd},
	newIndexer: func(ir *IndexingReader) (io.Reader, func()) {
		z := newZstdIndexer(ir)
		return z, z.release
	},
	openSpan: func(c *Checkpoints, blob io.ReaderAt, i int, limit int64, verify bool) (spanStream, error) {
		return openZstdSpan(blob, c.CompressedSize, &c.Points[i], limit, verify, i)
	},
	serving: func(ix *Index, span int64) Serving {
		if ix.Checkpoints != nil && ix.Checkpoints.MaxSpanLen() <= MaxFrameSpan(span) {
			return ServeSpans
		}
		return ServeDecodedCopy
	},
	decodedCopy: true,
}

// MaxFrameSpan is the longest zstd span (frames are its checkpoints)
// served by decoding from the frame start, for checkpoint spacing span; a
// layer with longer ones is served from a decoded copy. zstd decodes
// several times faster than gzip, so frames may be longer than gzip spans
// (and 8 MiB, the bound when spans were 2 MiB, keeps layers written with
// 4-8 MiB frames lazy).
func MaxFrameSpan(span int64) int64 {
	if span <= 0 {
		span = DefaultSpan
	}
	return max(4*span, 8<<20)
}

// Format returns the format of compression c.
func (c Compression) Format() (*Format, error) {
	if int(c) < len(formats) && formats[c] != nil {
		return formats[c], nil
	}
	return nil, fmt.Errorf("unknown compression %v", c)
}

// Serving says how a layer with index ix (built or loaded with checkpoint
// spacing span) is read.
func (f *Format) Serving(ix *Index, span int64) Serving { return f.serving(ix, span) }

// KeepsDecodedCopy says whether an indexing pass over a layer of this
// format should keep the decoded stream (Options.Tee): whether Serving
// may say ServeDecodedCopy once the index is known.
func (f *Format) KeepsDecodedCopy() bool { return f.decodedCopy }

func (f *Format) String() string { return f.Name }

// ErrUnknownMediaType: a layer's media type names no format we read.
var ErrUnknownMediaType = errors.New("unknown layer media type")

// layerMediaTypes maps every layer media type we read (OCI, including the
// deprecated non-distributable ones still in the wild, and Docker's) to
// its format. It is the one mapping from media types to formats.
var layerMediaTypes = map[string]*Format{
	"application/vnd.oci.image.layer.v1.tar":                       &tarFormat,
	"application/vnd.oci.image.layer.v1.tar+gzip":                  &gzipFormat,
	"application/vnd.oci.image.layer.v1.tar+zstd":                  &zstdFormat,
	"application/vnd.oci.image.layer.nondistributable.v1.tar":      &tarFormat,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": &gzipFormat,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": &zstdFormat,
	"application/vnd.docker.image.rootfs.diff.tar":                 &tarFormat,
	"application/vnd.docker.image.rootfs.diff.tar.gzip":            &gzipFormat,
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":    &gzipFormat,
}

// FormatOf returns the format a layer media type names. Parameters and
// case do not change a media type (RFC 6838).
func FormatOf(mediaType string) (*Format, error) {
	mt, _, _ := strings.Cut(mediaType, ";")
	if f := layerMediaTypes[strings.ToLower(strings.TrimSpace(mt))]; f != nil {
		return f, nil
	}
	return nil, fmt.Errorf("%q: %w", mediaType, ErrUnknownMediaType)
}

// IsLayerMediaType says whether FormatOf knows the media type.
func IsLayerMediaType(mediaType string) bool {
	_, err := FormatOf(mediaType)
	return err == nil
}

// Sniff recognises a format by a blob's first bytes (at least 4, fewer
// only for a shorter blob), for layers that come without a media type
// (docker-archive): anything that is neither gzip nor zstd is read as tar,
// whose own parser then decides.
func Sniff(prefix []byte) *Format {
	for _, f := range formats {
		if f.magic != nil && len(prefix) >= len(f.magic) && string(prefix[:len(f.magic)]) == string(f.magic) {
			return f
		}
	}
	return &tarFormat
}

// Detect returns the format of a layer: from its media type, or, when it
// has none, from its first bytes.
func Detect(mediaType string, blob io.ReaderAt) (*Format, error) {
	if mediaType != "" {
		return FormatOf(mediaType)
	}
	var m [4]byte
	n, err := blob.ReadAt(m[:], 0)
	if n < len(m) && err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return Sniff(m[:n]), nil
}
