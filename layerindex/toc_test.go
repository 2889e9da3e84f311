package layerindex_test

// Tests of indexes built from eStargz and zstd:chunked tables of contents,
// on layers written by stargz-snapshotter's own writer: the TOC index must
// describe the same entries as a full pass over the same blob, serve the
// same bytes, and refuse hostile TOCs.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

// tocTar is a layer with every kind of entry a TOC records.
func tocTar(t testing.TB) []byte {
	return tartest.Tar(t,
		tartest.Dir("etc", 0o755),
		tartest.File("etc/os-release", "ID=test\n", 0o644),
		tartest.FileBytes("big", pseudoRandom(70000, 3), 0o600, tartest.Owner(1000, 1001)),
		tartest.File("empty", "", 0o644),
		tartest.File("x", "with xattrs", 0o644, tartest.Xattr("user.a", "1"), tartest.Xattr("security.capability", "\x00\x01bin")),
		tartest.Hardlink("etc/link", "etc/os-release"),
		tartest.Symlink("sym", "../etc/os-release"),
		tartest.Char("dev/c", 1, 3),
		tartest.Block("dev/b", 8, 0),
		tartest.FIFO("fifo"),
		tartest.Dir("opq", 0o700),
		tartest.Opaque("opq"),
		tartest.Whiteout("gone"),
		tartest.FileBytes("zeros", make([]byte, 9000), 0o644),
	)
}

type tocCase struct {
	name   string
	format string // TOCFormat.Name
	base   layerindex.Compression
	make   func(t testing.TB, tarb []byte, chunk int) tartest.TOCLayer
}

var tocCases = []tocCase{
	{"estargz", "eStargz", layerindex.Gzip, tartest.EStargz},
	{"zstd-chunked", "zstd:chunked", layerindex.Zstd, tartest.ZstdChunked},
}

// packedCase: small files share gzip members (innerOffset).
var packedCase = tocCase{"estargz-packed", "eStargz", layerindex.Gzip, func(t testing.TB, tarb []byte, chunk int) tartest.TOCLayer {
	return tartest.EStargzPacked(t, tarb, chunk, 100000)
}}

func formatOf(t testing.TB, c layerindex.Compression) *layerindex.Format {
	f, err := c.Format()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func loadTOC(t testing.TB, c tocCase, l tartest.TOCLayer) (*layerindex.Index, error) {
	t.Helper()
	tf := layerindex.TOCFormatOf(formatOf(t, c.base), l.Annotations)
	if tf == nil {
		t.Fatalf("annotations %v announce no TOC", l.Annotations)
	}
	if tf.Name != c.format {
		t.Fatalf("format %s, want %s", tf.Name, c.format)
	}
	return tf.Load(context.Background(), bytes.NewReader(l.Blob), int64(len(l.Blob)), digest.FromBytes(l.Blob), digest.FromBytes(l.Tar), l.Annotations)
}

func TestTOCMatchesFullPass(t *testing.T) {
	tarb := tocTar(t)
	for _, c := range append(tocCases, packedCase) {
		for _, chunk := range []int{0, 1000} {
			t.Run(fmt.Sprintf("%s/chunk%d", c.name, chunk), func(t *testing.T) {
				l := c.make(t, tarb, chunk)
				full, err := layerindex.Build(context.Background(), bytes.NewReader(l.Blob), c.base, layerindex.Options{DiffID: digest.FromBytes(l.Tar)})
				if err != nil {
					t.Fatalf("full pass: %v", err)
				}
				ix, err := loadTOC(t, c, l)
				if err != nil {
					t.Fatalf("TOC: %v", err)
				}
				if ix.TOC == nil || ix.Checkpoints != nil {
					t.Fatalf("not a TOC index")
				}
				if chunk > 0 && len(ix.TOC.Chunks) < 70 {
					t.Errorf("%d chunks: the 70000-byte file should be in 1000-byte chunks", len(ix.TOC.Chunks))
				}
				if c.name == "estargz-packed" {
					inner := 0
					for _, ch := range ix.TOC.Chunks {
						if ch.Skip > 0 {
							inner++
						}
					}
					if inner == 0 {
						t.Errorf("no chunk shares a member: the packed writer was not exercised")
					}
				}
				opts := cmpopts.IgnoreFields(layerindex.Entry{}, "Offset")
				if d := cmp.Diff(full.Entries, ix.Entries, opts, cmpopts.EquateEmpty()); d != "" {
					t.Fatalf("entries differ from the full pass (-full +toc):\n%s", d)
				}
				fullStream := full.Checkpoints.NewReaderAt(bytes.NewReader(l.Blob), nil, "full")
				cache := layerindex.NewSpanCache(1 << 20)
				defer cache.Close()
				tocStream := ix.TOC.NewReaderAt(bytes.NewReader(l.Blob), cache, "toc", layerindex.ChunkCache{})
				files := 0
				for i := range ix.Entries {
					e := &ix.Entries[i]
					if e.Kind != layerindex.KindReg {
						continue
					}
					want, err := readContent(fullStream, &full.Entries[i])
					if err != nil {
						t.Fatal(err)
					}
					for pass := 0; pass < 2; pass++ { // decoded, then cached
						got, err := readContent(tocStream, e)
						if err != nil {
							t.Fatalf("%s: %v", e.Name, err)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("%s: %d bytes differ from the full pass's %d", e.Name, len(got), len(want))
						}
					}
					files++
				}
				// An unaligned read across chunk boundaries.
				big := entryNamed(t, ix, "big")
				p := make([]byte, 2500)
				if _, err := layerindex.Content(tocStream, big).ReadAt(p, 999); err != nil || !bytes.Equal(p, pseudoRandom(70000, 3)[999:3499]) {
					t.Fatalf("read across chunks: %v", err)
				}
				if files < 6 {
					t.Fatalf("only %d files", files)
				}
				if _, err := ix.MarshalBinary(); err == nil {
					t.Fatal("a TOC index was serialized as an index file")
				}
			})
		}
	}
}

func entryNamed(t testing.TB, ix *layerindex.Index, name string) *layerindex.Entry {
	for i := range ix.Entries {
		if ix.Entries[i].Name == name {
			return &ix.Entries[i]
		}
	}
	t.Fatalf("no entry %q", name)
	return nil
}

func TestTOCFormatOf(t *testing.T) {
	gz, zs := formatOf(t, layerindex.Gzip), formatOf(t, layerindex.Zstd)
	sum := "sha256:" + strings.Repeat("a", 64)
	for _, c := range []struct {
		f    *layerindex.Format
		ann  map[string]string
		want string
	}{
		{gz, nil, ""},
		{gz, map[string]string{"containerd.io/snapshot/stargz/toc.digest": sum}, "eStargz"},
		{zs, map[string]string{"containerd.io/snapshot/stargz/toc.digest": sum}, ""}, // wrong base format
		{zs, map[string]string{"io.github.containers.zstd-chunked.manifest-checksum": sum, "io.github.containers.zstd-chunked.manifest-position": "1:2:3:1"}, "zstd:chunked"},
		{zs, map[string]string{"io.containers.zstd-chunked.manifest-checksum": sum, "io.containers.zstd-chunked.manifest-position": "1:2:3:1"}, "zstd:chunked"},
		{zs, map[string]string{"io.containers.zstd-chunked.manifest-checksum": sum}, ""}, // no position
		{zs, map[string]string{"io.github.containers.zstd-chunked.manifest-checksum": sum, "io.containers.zstd-chunked.manifest-position": "1:2:3:1"}, ""},
	} {
		got := ""
		if tf := layerindex.TOCFormatOf(c.f, c.ann); tf != nil {
			got = tf.Name
		}
		if got != c.want {
			t.Errorf("%s %v: %q, want %q", c.f, c.ann, got, c.want)
		}
	}
}

// forge rewrites the TOC of l with mutate (on the JSON as generic values)
// and returns the layer with annotations that match the forged TOC: what a
// hostile image's manifest can say.
func forge(t *testing.T, c tocCase, l tartest.TOCLayer, mutate func(entries []map[string]any) []map[string]any) tartest.TOCLayer {
	t.Helper()
	var toc map[string]any
	var tocOff int64
	switch c.base {
	case layerindex.Gzip:
		foot := l.Blob[len(l.Blob)-51:]
		zr, err := gzip.NewReader(bytes.NewReader(foot))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Sscanf(string(zr.Extra[4:20]), "%x", &tocOff)
		zr, err = gzip.NewReader(bytes.NewReader(l.Blob[tocOff:]))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		tr := tar.NewReader(zr)
		if _, err := tr.Next(); err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(tr).Decode(&toc); err != nil {
			t.Fatal(err)
		}
	default:
		var off, n, raw, typ int64
		fmt.Sscanf(l.Annotations["io.containers.zstd-chunked.manifest-position"], "%d:%d:%d:%d", &off, &n, &raw, &typ)
		zr, err := zstd.NewReader(bytes.NewReader(l.Blob[off : off+n]))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(zr).Decode(&toc); err != nil {
			t.Fatal(err)
		}
		zr.Close()
		tocOff = off - 8
	}
	var entries []map[string]any
	for _, e := range toc["entries"].([]any) {
		entries = append(entries, e.(map[string]any))
	}
	toc["entries"] = mutate(entries)
	js, err := json.Marshal(toc)
	if err != nil {
		t.Fatal(err)
	}
	out := tartest.TOCLayer{Tar: l.Tar, Annotations: map[string]string{}}
	var b bytes.Buffer
	b.Write(l.Blob[:tocOff])
	switch c.base {
	case layerindex.Gzip:
		zw := gzip.NewWriter(&b)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "stargz.index.json", Size: int64(len(js))})
		tw.Write(js)
		tw.Close()
		zw.Close()
		b.Write(l.Blob[len(l.Blob)-51:]) // the same TOC offset
		out.Annotations["containerd.io/snapshot/stargz/toc.digest"] = digest.FromBytes(js).String()
	default:
		var z bytes.Buffer
		zw, _ := zstd.NewWriter(&z)
		zw.Write(js)
		zw.Close()
		frame := func(p []byte) {
			var h [8]byte
			binary.LittleEndian.PutUint32(h[:], 0x184D2A50)
			binary.LittleEndian.PutUint32(h[4:], uint32(len(p)))
			b.Write(h[:])
			b.Write(p)
		}
		frame(z.Bytes())
		foot := make([]byte, 40)
		le := binary.LittleEndian
		le.PutUint64(foot, uint64(tocOff+8))
		le.PutUint64(foot[8:], uint64(z.Len()))
		le.PutUint64(foot[16:], uint64(len(js)))
		le.PutUint64(foot[24:], 1)
		copy(foot[32:], "GnUlInUx")
		frame(foot)
		out.Annotations["io.containers.zstd-chunked.manifest-checksum"] = digest.FromBytes(z.Bytes()).String()
		out.Annotations["io.containers.zstd-chunked.manifest-position"] = fmt.Sprintf("%d:%d:%d:1", tocOff+8, z.Len(), len(js))
	}
	out.Blob = b.Bytes()
	return out
}

func TestTOCHostile(t *testing.T) {
	tarb := tocTar(t)
	for _, c := range tocCases {
		t.Run(c.name, func(t *testing.T) {
			l := c.make(t, tarb, 1000)
			// The unmodified rewrite loads: the forging itself is sound.
			if _, err := loadTOC(t, c, forge(t, c, l, func(e []map[string]any) []map[string]any { return e })); err != nil {
				t.Fatalf("identity rewrite: %v", err)
			}
			named := func(es []map[string]any, name string) map[string]any {
				for _, e := range es {
					if e["name"] == name {
						return e
					}
				}
				t.Fatalf("no TOC entry %q", name)
				return nil
			}
			chunks := func(es []map[string]any, name string) []map[string]any {
				var out []map[string]any
				for _, e := range es {
					if e["name"] == name && (e["type"] == "reg" || e["type"] == "chunk") {
						out = append(out, e)
					}
				}
				return out
			}
			for _, h := range []struct {
				name   string
				mutate func(es []map[string]any) []map[string]any
				want   error
			}{
				{"offset-past-blob", func(es []map[string]any) []map[string]any {
					named(es, "etc/os-release")["offset"] = float64(len(l.Blob) + 100)
					return es
				}, layerindex.ErrBadTOC},
				{"overlapping", func(es []map[string]any) []map[string]any {
					cs := chunks(es, "big")
					cs[3]["offset"] = cs[1]["offset"]
					return es
				}, layerindex.ErrBadTOC},
				{"end-inside-next", func(es []map[string]any) []map[string]any {
					cs := chunks(es, "big")
					cs[1]["endOffset"] = cs[2]["offset"].(float64) + 5
					return es
				}, layerindex.ErrBadTOC},
				{"file-end-before-its-chunks", func(es []map[string]any) []map[string]any {
					cs := chunks(es, "big")
					cs[0]["endOffset"] = cs[2]["offset"].(float64) - 1
					return es
				}, layerindex.ErrBadTOC},
				{"escapes-root", func(es []map[string]any) []map[string]any {
					named(es, "x")["name"] = "../../../x"
					return es
				}, layerindex.ErrUnsafePath},
				{"hardlink-escapes-root", func(es []map[string]any) []map[string]any {
					named(es, "etc/link")["linkName"] = "../../etc/shadow"
					return es
				}, layerindex.ErrUnsafePath},
				{"chunks-short", func(es []map[string]any) []map[string]any {
					cs := chunks(es, "big")
					last := cs[len(cs)-1]
					out := es[:0]
					for _, e := range es {
						if !(e["name"] == last["name"] && e["chunkOffset"] == last["chunkOffset"] && e["type"] == "chunk") {
							out = append(out, e)
						}
					}
					return out
				}, layerindex.ErrBadTOC},
				{"no-chunk-digest", func(es []map[string]any) []map[string]any {
					delete(chunks(es, "big")[2], "chunkDigest")
					return es
				}, layerindex.ErrBadTOC},
				{"version", func(es []map[string]any) []map[string]any {
					es[0]["type"] = "whiteout"
					return es
				}, layerindex.ErrBadTOC},
			} {
				t.Run(h.name, func(t *testing.T) {
					_, err := loadTOC(t, c, forge(t, c, l, h.mutate))
					if !errors.Is(err, h.want) {
						t.Fatalf("got %v, want %v", err, h.want)
					}
					t.Logf("refused: %v", err)
				})
			}
			t.Run("chunk-digest-mismatch", func(t *testing.T) {
				f := forge(t, c, l, func(es []map[string]any) []map[string]any {
					chunks(es, "big")[2]["chunkDigest"] = digest.FromString("other").String()
					return es
				})
				ix, err := loadTOC(t, c, f)
				if err != nil {
					t.Fatal(err)
				}
				s := ix.TOC.NewReaderAt(bytes.NewReader(f.Blob), nil, "k", layerindex.ChunkCache{})
				big := entryNamed(t, ix, "big")
				p := make([]byte, 100)
				if _, err := layerindex.Content(s, big).ReadAt(p, 1000); err != nil {
					t.Fatalf("an intact chunk: %v", err)
				}
				_, err = layerindex.Content(s, big).ReadAt(p, 2050)
				if !errors.Is(err, layerindex.ErrDigestMismatch) || !strings.Contains(err.Error(), `"big"`) {
					t.Fatalf("damaged chunk: %v, want a digest mismatch naming the entry", err)
				}
				t.Logf("refused: %v", err)
			})
			t.Run("wrong-annotation", func(t *testing.T) {
				bad := tartest.TOCLayer{Blob: l.Blob, Tar: l.Tar, Annotations: map[string]string{}}
				for k, v := range l.Annotations {
					bad.Annotations[k] = v
					if strings.HasSuffix(k, "toc.digest") || strings.HasSuffix(k, "manifest-checksum") {
						bad.Annotations[k] = digest.FromString("another TOC").String()
					}
				}
				_, err := loadTOC(t, c, bad)
				if !errors.Is(err, layerindex.ErrBadTOC) {
					t.Fatalf("got %v, want ErrBadTOC", err)
				}
				t.Logf("refused: %v", err)
			})
			t.Run("damaged-footer", func(t *testing.T) {
				bad := l
				bad.Blob = append([]byte{}, l.Blob...)
				bad.Blob[len(bad.Blob)-3] ^= 0xff
				if _, err := loadTOC(t, c, bad); !errors.Is(err, layerindex.ErrBadTOC) {
					t.Fatalf("got %v, want ErrBadTOC", err)
				}
			})
			t.Run("damaged-data", func(t *testing.T) {
				// Bytes changed after the TOC was written: the TOC loads,
				// the damaged chunk fails its digest and nothing else.
				ix, err := loadTOC(t, c, l)
				if err != nil {
					t.Fatal(err)
				}
				big := entryNamed(t, ix, "big")
				var ch *layerindex.TOCChunk
				for i := range ix.TOC.Chunks {
					if ix.TOC.Chunks[i].Out == big.Offset+5000 {
						ch = &ix.TOC.Chunks[i]
					}
				}
				if ch == nil {
					t.Fatal("no chunk at 5000")
				}
				blob := append([]byte{}, l.Blob...)
				blob[ch.In+(ch.InEnd-ch.In)/2] ^= 0x40
				s := ix.TOC.NewReaderAt(bytes.NewReader(blob), nil, "k", layerindex.ChunkCache{})
				p := make([]byte, 10)
				_, err = layerindex.Content(s, big).ReadAt(p, 5000)
				if err == nil {
					t.Fatal("damaged chunk served")
				}
				if _, err := layerindex.Content(s, big).ReadAt(p, 7000); err != nil {
					t.Fatalf("intact chunk: %v", err)
				}
			})
		})
	}
}

// TestTOCZeroChunks: zstd:chunked chunks of type "zeros" are served as
// zeros without being fetched.
func TestTOCZeroChunks(t *testing.T) {
	c := tocCases[1]
	l := c.make(t, tocTar(t), 1000)
	f := forge(t, c, l, func(es []map[string]any) []map[string]any {
		for _, e := range es {
			if e["name"] == "zeros" {
				e["chunkType"] = "zeros"
				e["offset"] = float64(0)
				delete(e, "chunkDigest")
			}
		}
		return es
	})
	ix, err := loadTOC(t, c, f)
	if err != nil {
		t.Fatal(err)
	}
	z := entryNamed(t, ix, "zeros")
	got, err := readContent(ix.TOC.NewReaderAt(failingReader{}, nil, "k", layerindex.ChunkCache{}), z)
	if err != nil || !bytes.Equal(got, make([]byte, 9000)) {
		t.Fatalf("zeros: %v (%d bytes)", err, len(got))
	}
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, io.ErrUnexpectedEOF }

var _ = sha256.Sum256

// TestTOCDiskCache: chunks a reader checked are kept in its ChunkCache and
// served from there by the next reader without touching the blob; what
// the cache returns is checked again (a damaged entry is not served).
func TestTOCDiskCache(t *testing.T) {
	c := tocCases[0]
	l := c.make(t, tocTar(t), 1000)
	ix, err := loadTOC(t, c, l)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[[32]byte][]byte{}
	disk := layerindex.ChunkCache{
		Load:  func(sum [32]byte) ([]byte, bool) { b, ok := kept[sum]; return b, ok },
		Store: func(sum [32]byte, data []byte) { kept[sum] = append([]byte{}, data...) },
	}
	big := entryNamed(t, ix, "big")
	want := pseudoRandom(70000, 3)
	got, err := readContent(ix.TOC.NewReaderAt(bytes.NewReader(l.Blob), nil, "k", disk), big)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first read: %v", err)
	}
	if len(kept) < 70 {
		t.Fatalf("%d chunks kept", len(kept))
	}
	got, err = readContent(ix.TOC.NewReaderAt(failingReader{}, nil, "k", disk), big)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read from the disk cache alone: %v", err)
	}
	for sum, b := range kept {
		b[0] ^= 1 // damaged on disk
		kept[sum] = b
	}
	if _, err := readContent(ix.TOC.NewReaderAt(failingReader{}, nil, "k", disk), big); err == nil {
		t.Fatal("damaged cached chunks were served")
	}
	got, err = readContent(ix.TOC.NewReaderAt(bytes.NewReader(l.Blob), nil, "k", disk), big)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("damaged cache, intact blob: %v", err)
	}
}
