package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/gzip"
)

// eStargz (stargz-snapshotter's docs/estargz.md): a tar+gzip layer in
// which every file's data (or every chunk of a large file) starts a new
// gzip member, whose last tar entry is the TOC, stargz.index.json (in a
// member of its own), and which ends with a 51-byte footer: an empty gzip
// member whose extra field holds the TOC's compressed offset. The
// manifest's layer annotation gives the sha256 of the TOC JSON, so the
// manifest digest covers the TOC, and the TOC's chunk digests cover every
// byte a read serves.
const (
	annotationStargzTOC = "containerd.io/snapshot/stargz/toc.digest"
	estargzTOCName      = "stargz.index.json"
	estargzFooterSize   = 51
)

var estargzFormat = TOCFormat{
	Name:      "eStargz",
	Source:    "eStargz TOC",
	Base:      &gzipFormat,
	announced: func(ann map[string]string) bool { return ann[annotationStargzTOC] != "" },
	load:      loadEstargz,
	hidden:    []string{estargzTOCName, ".prefetch.landmark", ".no.prefetch.landmark"},
}

// parseEstargzFooter returns the TOC offset a footer gives.
func parseEstargzFooter(p []byte) (int64, error) {
	if len(p) != estargzFooterSize {
		return 0, fmt.Errorf("eStargz footer of %d bytes: %w", len(p), ErrBadTOC)
	}
	z, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		return 0, fmt.Errorf("eStargz footer: %v: %w", err, ErrBadTOC)
	}
	z.Multistream(false)
	if n, err := io.Copy(io.Discard, io.LimitReader(z, 1)); n != 0 || err != nil {
		return 0, fmt.Errorf("eStargz footer is not an empty gzip member: %w", ErrBadTOC)
	}
	x := z.Extra
	if len(x) != 4+22 || x[0] != 'S' || x[1] != 'G' || int(x[2])|int(x[3])<<8 != 22 || string(x[20:]) != "STARGZ" {
		return 0, fmt.Errorf("eStargz footer has no STARGZ subfield: %w", ErrBadTOC)
	}
	off, err := strconv.ParseUint(string(x[4:20]), 16, 63)
	if err != nil {
		return 0, fmt.Errorf("eStargz footer: TOC offset %q: %w", x[4:20], ErrBadTOC)
	}
	return int64(off), nil
}

func loadEstargz(ctx context.Context, blob io.ReaderAt, size int64, ann map[string]string) (*tocBuild, error) {
	want, ok := sha256Of(ann[annotationStargzTOC])
	if !ok {
		return nil, fmt.Errorf("annotation %s=%q is not a sha256 digest: %w", annotationStargzTOC, ann[annotationStargzTOC], ErrBadTOC)
	}
	if size < estargzFooterSize+20 {
		return nil, fmt.Errorf("blob of %d bytes has no room for an eStargz footer: %w", size, ErrBadTOC)
	}
	footerAt := size - estargzFooterSize
	foot, err := readRange(blob, footerAt, estargzFooterSize)
	if err != nil {
		return nil, fmt.Errorf("reading the eStargz footer: %w", err)
	}
	tocOff, err := parseEstargzFooter(foot)
	if err != nil {
		return nil, err
	}
	if tocOff <= 0 || tocOff >= footerAt || footerAt-tocOff > maxTOCCompressed {
		return nil, fmt.Errorf("eStargz footer puts the TOC at %d, footer at %d: %w", tocOff, footerAt, ErrBadTOC)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	comp, err := readRange(blob, tocOff, footerAt-tocOff)
	if err != nil {
		return nil, fmt.Errorf("reading the eStargz TOC: %w", err)
	}
	hdr, jsonAt, raw, err := parseEstargzTOCMember(comp)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(raw) != want {
		return nil, fmt.Errorf("TOC JSON is sha256:%x, annotation %s says %s: %w", sha256.Sum256(raw), annotationStargzTOC, ann[annotationStargzTOC], ErrBadTOC)
	}
	var toc tocJSON
	if err := json.Unmarshal(raw, &toc); err != nil {
		return nil, fmt.Errorf("TOC JSON: %v: %w", err, ErrBadTOC)
	}
	b, err := buildTOC(&toc, tocOff)
	if err != nil {
		return nil, err
	}
	// The TOC's own tar entry, last in the layer: shown by a raw view of
	// the layer, its bytes are the TOC JSON (sha256: the annotation).
	e, err := entryFromHeader(hdr)
	if err != nil {
		return nil, &EntryError{Entry: hdr.Name, Err: err}
	}
	e.Offset = b.out
	b.entries = append(b.entries, e)
	if e.Size > 0 {
		b.chunks = append(b.chunks, TOCChunk{Out: b.out, Len: e.Size, In: tocOff, InEnd: footerAt, Skip: jsonAt, Sum: want, Entry: int32(len(b.entries) - 1)})
		b.out += e.Size
	}
	return b, nil
}

// parseEstargzTOCMember decodes the TOC's gzip member: the tar header of
// stargz.index.json, then the JSON. It returns the header, where the JSON
// starts in the member's uncompressed bytes, and the JSON.
func parseEstargzTOCMember(comp []byte) (*tar.Header, int64, []byte, error) {
	z, err := gzip.NewReader(bytes.NewReader(comp))
	if err != nil {
		return nil, 0, nil, fmt.Errorf("eStargz TOC member: %v: %w", err, ErrBadTOC)
	}
	z.Multistream(false)
	cr := &tocCounter{r: io.LimitReader(z, maxTOCJSON+(1<<20))}
	tr := tar.NewReader(cr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("eStargz TOC member: tar header: %v: %w", err, ErrBadTOC)
	}
	if name, err := CleanPath(hdr.Name); err != nil || name != estargzTOCName || hdr.Typeflag != tar.TypeReg {
		return nil, 0, nil, fmt.Errorf("eStargz TOC member holds %q (type %q), not %s: %w", hdr.Name, hdr.Typeflag, estargzTOCName, ErrBadTOC)
	}
	if hdr.Size <= 0 || hdr.Size > maxTOCJSON {
		return nil, 0, nil, fmt.Errorf("eStargz TOC of %d bytes: %w", hdr.Size, ErrBadTOC)
	}
	at := cr.n
	raw, err := io.ReadAll(tr)
	if err != nil || int64(len(raw)) != hdr.Size {
		return nil, 0, nil, fmt.Errorf("eStargz TOC: %d of %d bytes (%v): %w", len(raw), hdr.Size, err, ErrBadTOC)
	}
	return hdr, at, raw, nil
}

// tocCounter counts the bytes read through it.
type tocCounter struct {
	r io.Reader
	n int64
}

func (c *tocCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
