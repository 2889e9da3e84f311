package layerindex

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// zstd:chunked (containers/storage pkg/chunked): a tar+zstd layer in which
// every file's data (or chunk of it) is its own zstd frame, followed by
// the TOC ("manifest": zstd-compressed JSON, the eStargz TOC's fields
// plus endOffset and chunkType) in a skippable frame, optionally the
// tar-split data, and a footer in a last skippable frame ending with the
// magic "GnUlInUx". The manifest's layer annotations give the TOC's
// position (offset:length:uncompressed length:type) and the sha256 of its
// compressed bytes, so the manifest digest covers it. containers/storage
// before 1.44 (and skopeo 1.9, the estargz package) wrote the annotations
// under io.containers.zstd-chunked.*.
const (
	zstdChunkedMagic = "GnUlInUx"
	// zstdChunkedTypeTOC is the manifest type of the JSON TOC ("CRFS").
	zstdChunkedTypeTOC = 1
)

var (
	zstdChunkedChecksum = []string{"io.github.containers.zstd-chunked.manifest-checksum", "io.containers.zstd-chunked.manifest-checksum"}
	zstdChunkedPosition = []string{"io.github.containers.zstd-chunked.manifest-position", "io.containers.zstd-chunked.manifest-position"}
)

var zstdChunkedFormat = TOCFormat{
	Name:   "zstd:chunked",
	Source: "zstd:chunked TOC",
	Base:   &zstdFormat,
	announced: func(ann map[string]string) bool {
		_, _, ok := zstdChunkedAnnotations(ann)
		return ok
	},
	load:   loadZstdChunked,
	hidden: []string{".prefetch.landmark", ".no.prefetch.landmark"},
}

// zstdChunkedAnnotations returns the checksum and position annotations,
// new names first; both must come under the same generation of names.
func zstdChunkedAnnotations(ann map[string]string) (sum, pos string, ok bool) {
	for i := range zstdChunkedChecksum {
		sum, pos = ann[zstdChunkedChecksum[i]], ann[zstdChunkedPosition[i]]
		if sum != "" && pos != "" {
			return sum, pos, true
		}
	}
	return "", "", false
}

// zstdChunkedPos is the parsed manifest-position annotation.
type zstdChunkedPos struct{ off, n, raw, typ int64 }

func parseZstdChunkedPos(s string) (zstdChunkedPos, error) {
	var p zstdChunkedPos
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return p, fmt.Errorf("manifest position %q is not offset:length:uncompressed:type: %w", s, ErrBadTOC)
	}
	vs := []*int64{&p.off, &p.n, &p.raw, &p.typ}
	for i, part := range parts {
		v, err := strconv.ParseInt(part, 10, 64)
		if err != nil || v < 0 {
			return p, fmt.Errorf("manifest position %q: %w", s, ErrBadTOC)
		}
		*vs[i] = v
	}
	if p.typ != zstdChunkedTypeTOC {
		return p, fmt.Errorf("manifest position %q: type %d, want %d (JSON TOC): %w", s, p.typ, zstdChunkedTypeTOC, ErrBadTOC)
	}
	return p, nil
}

// checkZstdChunkedFooter checks that the blob ends with a zstd:chunked
// footer that places the TOC where the annotation does. Two layouts are
// in use: 40 bytes (offset, compressed length, uncompressed length, type,
// magic; the estargz package, containers/storage before tar-split) and 64
// bytes (the same plus tar-split's offset and lengths, before the magic).
func checkZstdChunkedFooter(tail []byte, p zstdChunkedPos) error {
	if len(tail) < 40 || string(tail[len(tail)-8:]) != zstdChunkedMagic {
		return fmt.Errorf("no zstd:chunked footer (magic %s) at the end of the blob: %w", zstdChunkedMagic, ErrBadTOC)
	}
	for _, n := range []int{40, 64} {
		if len(tail) < n {
			continue
		}
		f := tail[len(tail)-n:]
		le := binary.LittleEndian
		if int64(le.Uint64(f[0:])) == p.off && int64(le.Uint64(f[8:])) == p.n && int64(le.Uint64(f[16:])) == p.raw && int64(le.Uint64(f[24:])) == p.typ {
			return nil
		}
	}
	return fmt.Errorf("the zstd:chunked footer does not place the TOC at %d (%d bytes) as the annotation does: %w", p.off, p.n, ErrBadTOC)
}

func loadZstdChunked(ctx context.Context, blob io.ReaderAt, size int64, ann map[string]string) (*tocBuild, error) {
	sumS, posS, _ := zstdChunkedAnnotations(ann)
	want, ok := sha256Of(sumS)
	if !ok {
		return nil, fmt.Errorf("zstd:chunked manifest checksum %q is not a sha256 digest: %w", sumS, ErrBadTOC)
	}
	p, err := parseZstdChunkedPos(posS)
	if err != nil {
		return nil, err
	}
	// The TOC sits in a skippable frame (8-byte header) before the footer.
	if p.off < 8 || p.n <= 0 || p.n > maxTOCCompressed || p.raw <= 0 || p.raw > maxTOCJSON || p.off > size-p.n-48 {
		return nil, fmt.Errorf("zstd:chunked TOC at %d (%d bytes, %d uncompressed) does not fit a blob of %d bytes: %w", p.off, p.n, p.raw, size, ErrBadTOC)
	}
	tailN := min(int64(72), size-p.off-p.n)
	tail, err := readRange(blob, size-tailN, tailN)
	if err != nil {
		return nil, fmt.Errorf("reading the zstd:chunked footer: %w", err)
	}
	if err := checkZstdChunkedFooter(tail, p); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	comp, err := readRange(blob, p.off, p.n)
	if err != nil {
		return nil, fmt.Errorf("reading the zstd:chunked TOC: %w", err)
	}
	if sha256.Sum256(comp) != want {
		return nil, fmt.Errorf("zstd:chunked TOC is sha256:%x, its manifest-checksum annotation says %s: %w", sha256.Sum256(comp), sumS, ErrBadTOC)
	}
	raw, err := decodeZstdTOC(comp, p.raw)
	if err != nil {
		return nil, err
	}
	var toc tocJSON
	if err := json.Unmarshal(raw, &toc); err != nil {
		return nil, fmt.Errorf("zstd:chunked TOC JSON: %v: %w", err, ErrBadTOC)
	}
	return buildTOC(&toc, p.off-8)
}

// decodeZstdTOC decodes the compressed TOC, which must be exactly n bytes.
func decodeZstdTOC(comp []byte, n int64) ([]byte, error) {
	z := zstdPool.Get().(*zstd.Decoder)
	defer func() { z.Reset(nil); zstdPool.Put(z) }()
	if err := z.Reset(bytes.NewReader(comp)); err != nil {
		return nil, fmt.Errorf("zstd:chunked TOC: %v: %w", err, ErrBadTOC)
	}
	raw, err := io.ReadAll(io.LimitReader(z, n+1))
	if err != nil || int64(len(raw)) != n {
		return nil, fmt.Errorf("zstd:chunked TOC decodes to %d bytes, the annotation says %d (%v): %w", len(raw), n, err, ErrBadTOC)
	}
	return raw, nil
}
