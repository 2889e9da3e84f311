package layerindex_test

// Tests of layerindex.Build on the tar features layers use in the wild.
// Each layer is built for every encoding (plain, gzip, zstd, compressed
// with klauspost by tartest) and two checkpoint spans, and must give the
// same entries, the right digests, and contents that read back exactly,
// both from the uncompressed stream and through the checkpoints.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

type encoding struct {
	c    layerindex.Compression
	tc   tartest.Compression
	span int64
}

func (e encoding) String() string {
	s := "default"
	if e.span != 0 {
		s = fmt.Sprintf("%dKiB", e.span>>10)
	}
	return e.c.String() + "/span=" + s
}

var encodings = func() []encoding {
	var out []encoding
	for _, c := range []struct {
		c  layerindex.Compression
		tc tartest.Compression
	}{{layerindex.None, tartest.Uncompressed}, {layerindex.Gzip, tartest.Gzip}, {layerindex.Zstd, tartest.Zstd}} {
		for _, span := range []int64{64 << 10, 0} {
			out = append(out, encoding{c.c, c.tc, span})
		}
	}
	return out
}()

// built is one layer built with one encoding.
type built struct {
	enc  encoding
	tar  []byte // the uncompressed stream
	blob []byte
	ix   *layerindex.Index
	// streams gives random access to the uncompressed stream: the tar
	// itself, and for compressed layers the checkpoint reader over blob.
	streams map[string]io.ReaderAt
}

// buildEach builds tarball with every encoding, checks what holds for any
// valid layer (digests, sizes, Tee, checkpoints) and calls check.
func buildEach(t *testing.T, tarball []byte, check func(t *testing.T, b *built)) {
	t.Helper()
	for _, enc := range encodings {
		t.Run(enc.String(), func(t *testing.T) {
			blob := tartest.Compress(t, enc.tc, tarball)
			var tee bytes.Buffer
			ix, err := layerindex.Build(context.Background(), bytes.NewReader(blob), enc.c, layerindex.Options{Span: enc.span, Tee: &tee})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if ix.Compression != enc.c {
				t.Errorf("Compression = %v, want %v", ix.Compression, enc.c)
			}
			if want := digest.FromBytes(tarball); ix.DiffID != want {
				t.Errorf("DiffID = %s, want %s", ix.DiffID, want)
			}
			if want := digest.FromBytes(blob); ix.Digest != want {
				t.Errorf("Digest = %s, want %s", ix.Digest, want)
			}
			if ix.CompressedSize != int64(len(blob)) || ix.UncompressedSize != int64(len(tarball)) {
				t.Errorf("sizes = %d/%d, want %d/%d", ix.CompressedSize, ix.UncompressedSize, len(blob), len(tarball))
			}
			if !bytes.Equal(tee.Bytes(), tarball) {
				t.Errorf("Tee got %d bytes, differing from the %d-byte tar", tee.Len(), len(tarball))
			}
			b := &built{enc: enc, tar: tarball, blob: blob, ix: ix, streams: map[string]io.ReaderAt{"tar": bytes.NewReader(tarball)}}
			if enc.c == layerindex.None {
				if ix.Checkpoints != nil {
					t.Errorf("Checkpoints = %+v for an uncompressed layer, want nil", ix.Checkpoints)
				}
			} else {
				if ix.Checkpoints == nil {
					t.Fatalf("no Checkpoints for a %v layer", enc.c)
				}
				ra := ix.Checkpoints.NewReaderAt(bytes.NewReader(blob), nil, "")
				all := make([]byte, len(tarball))
				if n, err := ra.ReadAt(all, 0); n != len(all) || (err != nil && err != io.EOF) || !bytes.Equal(all, tarball) {
					t.Errorf("checkpoint reader: %d bytes, %v; equal=%v", n, err, bytes.Equal(all, tarball))
				}
				b.streams["checkpoints"] = ra
			}
			check(t, b)
		})
	}
}

// readContent reads all of e through layerindex.Content.
func readContent(stream io.ReaderAt, e *layerindex.Entry) ([]byte, error) {
	buf := make([]byte, e.Size)
	n, err := layerindex.Content(stream, e).ReadAt(buf, 0)
	if int64(n) == e.Size && (err == nil || err == io.EOF) {
		return buf, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return buf[:n], err
}

// checkContents reads every regular entry named in want from every stream,
// whole and in odd pieces, and checks non-sparse Offsets point at the data.
func checkContents(t *testing.T, b *built, want map[string][]byte) {
	t.Helper()
	seen := map[string]bool{}
	for i := range b.ix.Entries {
		e := &b.ix.Entries[i]
		w, ok := want[e.Name]
		if !ok || e.Kind != layerindex.KindReg {
			continue
		}
		seen[e.Name] = true
		if e.Size != int64(len(w)) {
			t.Errorf("%s: Size %d, want %d", e.Name, e.Size, len(w))
			continue
		}
		if !e.Sparse {
			if e.Offset%512 != 0 || e.Offset+e.Size > int64(len(b.tar)) || !bytes.Equal(b.tar[e.Offset:e.Offset+e.Size], w) {
				t.Errorf("%s: Offset %d does not point at its content", e.Name, e.Offset)
			}
		}
		for sname, s := range b.streams {
			got, err := readContent(s, e)
			if err != nil || !bytes.Equal(got, w) {
				t.Errorf("%s via %s: read %d bytes (%v), equal=%v", e.Name, sname, len(got), err, bytes.Equal(got, w))
				continue
			}
			// A read straddling the middle, and one past the end.
			if len(w) > 10 {
				mid := int64(len(w) / 3)
				p := make([]byte, len(w)/2)
				n, err := layerindex.Content(s, e).ReadAt(p, mid)
				if n != len(p) || (err != nil && err != io.EOF) || !bytes.Equal(p, w[mid:mid+int64(len(p))]) {
					t.Errorf("%s via %s: ReadAt(%d bytes, %d) = %d, %v", e.Name, sname, len(p), mid, n, err)
				}
			}
			p := make([]byte, 8)
			if n, err := layerindex.Content(s, e).ReadAt(p, e.Size); n != 0 || err != io.EOF {
				t.Errorf("%s via %s: ReadAt at Size = %d, %v; want 0, EOF", e.Name, sname, n, err)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no regular entry %q", name)
		}
	}
}

var dmt = tartest.DefaultMTime.Unix()

func reg(name string, mode uint32, size int64) layerindex.Entry {
	return layerindex.Entry{Name: name, Kind: layerindex.KindReg, Mode: mode, Size: size, ModSec: dmt}
}

func dirE(name string, mode uint32) layerindex.Entry {
	return layerindex.Entry{Name: name, Kind: layerindex.KindDir, Mode: mode, ModSec: dmt}
}

func symE(name, target string) layerindex.Entry {
	return layerindex.Entry{Name: name, Kind: layerindex.KindSymlink, Mode: 0o777, Link: target, ModSec: dmt}
}

func hardE(name, target string) layerindex.Entry {
	return layerindex.Entry{Name: name, Kind: layerindex.KindHardlink, Mode: 0o644, Link: target, ModSec: dmt}
}

func with(e layerindex.Entry, f func(*layerindex.Entry)) layerindex.Entry { f(&e); return e }

func pseudoRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// rawEntry is a hand-encoded header (USTAR magic) with body.
func rawEntry(h tartest.RawHeader, body string) tartest.Entry {
	if h.MTime == 0 {
		h.MTime = dmt
	}
	h.Size = int64(len(body))
	return tartest.RawBlocks(append(tartest.HeaderBlock(h), body...))
}

var capV2 = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // cap_net_bind_service=ep

type featureCase struct {
	name    string
	entries []tartest.Entry
	want    []layerindex.Entry
	content map[string]string
}

func featureCases() []featureCase {
	n150 := "d/" + strings.Repeat("n", 150)
	n301 := strings.Repeat("abcdefghi/", 30) + "f"
	nSplit := strings.Repeat("p", 150) + "/" + strings.Repeat("q", 99) // fits USTAR prefix+name
	t120 := strings.Repeat("t", 120)
	t301 := "/" + strings.Repeat("lnk/", 75)
	long := func(o ...tartest.Opt) []tartest.Entry {
		return []tartest.Entry{
			tartest.Dir("d", 0o755, o...),
			tartest.File(n150, "L1", 0o644, o...),
			tartest.File(n301, "L2", 0o644, o...),
			tartest.File(nSplit, "L3", 0o644, o...),
			tartest.Symlink("s1", t120, o...),
			tartest.Symlink("s2", t301, o...),
			tartest.Hardlink("h1", n150, o...),
			tartest.Hardlink("h2", n301, o...),
		}
	}
	longWant := []layerindex.Entry{
		dirE("d", 0o755), reg(n150, 0o644, 2), reg(n301, 0o644, 2), reg(nSplit, 0o644, 2),
		symE("s1", t120), symE("s2", t301), hardE("h1", n150), hardE("h2", n301),
	}
	longContent := map[string]string{n150: "L1", n301: "L2", nSplit: "L3"}
	big := string(pseudoRandom(300<<10, 1))
	odd := string(pseudoRandom(1000, 2))
	block := string(pseudoRandom(512, 3))
	ids := func(e layerindex.Entry, u, g uint32) layerindex.Entry {
		return with(e, func(e *layerindex.Entry) { e.UID, e.GID = u, g })
	}
	mt := func(e layerindex.Entry, tm time.Time) layerindex.Entry {
		return with(e, func(e *layerindex.Entry) { e.ModSec, e.ModNsec = tm.Unix(), uint32(tm.Nanosecond()) })
	}
	xa := func(e layerindex.Entry, kv ...string) layerindex.Entry {
		return with(e, func(e *layerindex.Entry) {
			for i := 0; i < len(kv); i += 2 {
				e.Xattrs = append(e.Xattrs, layerindex.Xattr{Name: kv[i], Value: kv[i+1]})
			}
		})
	}
	tNs := time.Unix(1700000000, 123456789)
	tNeg := time.Unix(-86400, 0)
	tNegNs := time.Unix(-5, 250)
	tFar := time.Unix(1<<33+1, 999999999)
	return []featureCase{
		{name: "PAX long names and targets", entries: long(), want: longWant, content: longContent},
		{name: "GNU long names and targets", entries: long(tartest.Format(tar.FormatGNU)), want: longWant, content: longContent},
		{
			name: "large uid and gid",
			entries: []tartest.Entry{
				tartest.File("a", "A", 0o644, tartest.Owner(1<<32-1, 70000)),
				tartest.File("b", "B", 0o644, tartest.Owner(70000, 1<<32-1), tartest.Format(tar.FormatGNU)),
				tartest.File("c", "C", 0o644, tartest.Owner(2097151, 2097152), tartest.Names("user", "group")),
				tartest.Dir("d", 0o755, tartest.Owner(1<<32-1, 1<<32-1), tartest.Format(tar.FormatPAX)),
			},
			want: []layerindex.Entry{
				ids(reg("a", 0o644, 1), 1<<32-1, 70000),
				ids(reg("b", 0o644, 1), 70000, 1<<32-1),
				ids(reg("c", 0o644, 1), 2097151, 2097152),
				ids(dirE("d", 0o755), 1<<32-1, 1<<32-1),
			},
			content: map[string]string{"a": "A", "b": "B", "c": "C"},
		},
		{
			name: "mtimes",
			entries: []tartest.Entry{
				tartest.File("ns", "", 0o644, tartest.MTime(tNs)),
				tartest.File("neg", "", 0o644, tartest.MTime(tNeg)),
				tartest.File("negns", "", 0o644, tartest.MTime(tNegNs)),
				tartest.Dir("far", 0o755, tartest.MTime(tFar)),
				tartest.Symlink("lns", "ns", tartest.MTime(tNs)),
			},
			want: []layerindex.Entry{
				mt(reg("ns", 0o644, 0), tNs), mt(reg("neg", 0o644, 0), tNeg), mt(reg("negns", 0o644, 0), tNegNs),
				mt(dirE("far", 0o755), tFar), mt(symE("lns", "ns"), tNs),
			},
			content: map[string]string{"ns": ""},
		},
		{
			name: "xattrs",
			entries: []tartest.Entry{
				tartest.File("x", "X", 0o755,
					tartest.Xattr("user.bin", "a\x00b\xff"),
					tartest.Xattr("security.capability", capV2),
					tartest.PAX("LIBARCHIVE.xattr.user.la%20b", base64.StdEncoding.EncodeToString([]byte("v\x00w!"))),
					tartest.PAX("LIBARCHIVE.xattr.user.raw", "YWI"), // unpadded base64 of "ab"
					tartest.Xattr("user.both", "schily"),
					tartest.PAX("LIBARCHIVE.xattr.user.both", base64.StdEncoding.EncodeToString([]byte("libarchive"))),
					tartest.Xattr("user.empty", ""),
				),
				tartest.Dir("d", 0o755, tartest.Xattr("trusted.overlay.opaque", "y")),
				tartest.Symlink("s", "x", tartest.Xattr("user.l", "1")),
			},
			want: []layerindex.Entry{
				xa(reg("x", 0o755, 1),
					"security.capability", capV2, "user.bin", "a\x00b\xff", "user.both", "schily",
					"user.empty", "", "user.la b", "v\x00w!", "user.raw", "ab"),
				xa(dirE("d", 0o755), "trusted.overlay.opaque", "y"),
				xa(symE("s", "x"), "user.l", "1"),
			},
			content: map[string]string{"x": "X"},
		},
		{
			name: "typeflags",
			entries: []tartest.Entry{
				tartest.File("reg", "R", 0o644),
				rawEntry(tartest.RawHeader{Name: "rega", Mode: 0o644, Typeflag: '\x00'}, "RA"),
				rawEntry(tartest.RawHeader{Name: "cont", Mode: 0o600, Typeflag: tar.TypeCont}, "CT"),
				tartest.Dir("dir", 0o755),
				tartest.Symlink("sym", "reg"),
				tartest.Hardlink("hard", "reg"),
				tartest.Char("chr", 1, 3),
				tartest.Block("blk", 8, 1),
				tartest.Char("bigdev", 4095, 1048575, tartest.Format(tar.FormatGNU)),
				tartest.FIFO("fifo"),
			},
			want: []layerindex.Entry{
				reg("reg", 0o644, 1), reg("rega", 0o644, 2), reg("cont", 0o600, 2), dirE("dir", 0o755),
				symE("sym", "reg"), hardE("hard", "reg"),
				{Name: "chr", Kind: layerindex.KindChar, Mode: 0o666, DevMajor: 1, DevMinor: 3, ModSec: dmt},
				{Name: "blk", Kind: layerindex.KindBlock, Mode: 0o660, DevMajor: 8, DevMinor: 1, ModSec: dmt},
				{Name: "bigdev", Kind: layerindex.KindChar, Mode: 0o666, DevMajor: 4095, DevMinor: 1048575, ModSec: dmt},
				{Name: "fifo", Kind: layerindex.KindFIFO, Mode: 0o644, ModSec: dmt},
			},
			content: map[string]string{"reg": "R", "rega": "RA", "cont": "CT"},
		},
		{
			name: "mode bits",
			entries: []tartest.Entry{
				tartest.File("suid", "", 0o4755),
				tartest.File("sgid", "", 0o2755),
				tartest.Dir("sticky", 0o1777),
				tartest.File("all", "", 0o7777),
				tartest.File("typebits", "", 0o644, tartest.ModeBits(0o100644)),
				tartest.Dir("dirbits", 0, tartest.ModeBits(0o40750)),
			},
			want: []layerindex.Entry{
				reg("suid", 0o4755, 0), reg("sgid", 0o2755, 0), dirE("sticky", 0o1777), reg("all", 0o7777, 0),
				reg("typebits", 0o644, 0), dirE("dirbits", 0o750),
			},
		},
		{
			name: "global header, root entry, name forms",
			entries: []tartest.Entry{
				tartest.Raw(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "hello"}}, nil),
				tartest.Dir("./", 0o700, tartest.Owner(1, 2)),
				tartest.File("./a", "A", 0o644),
				tartest.File("/abs/b", "B", 0o644),
				tartest.Dir(".//c/./d//", 0o755),
				tartest.Hardlink("e", "/abs//b/"),
			},
			want: []layerindex.Entry{
				ids(dirE("", 0o700), 1, 2), reg("a", 0o644, 1), reg("abs/b", 0o644, 1), dirE("c/d", 0o755), hardE("e", "abs/b"),
			},
			content: map[string]string{"a": "A", "abs/b": "B"},
		},
		{
			name: "sizes and offsets",
			entries: []tartest.Entry{
				tartest.File("empty", "", 0o644),
				tartest.File("block", block, 0o644),
				tartest.File("big", big, 0o644),
				tartest.File("odd", odd, 0o644),
				tartest.File("after", "tail", 0o644),
			},
			want: []layerindex.Entry{
				reg("empty", 0o644, 0), reg("block", 0o644, 512), reg("big", 0o644, int64(len(big))),
				reg("odd", 0o644, 1000), reg("after", 0o644, 4),
			},
			content: map[string]string{"empty": "", "block": block, "big": big, "odd": odd, "after": "tail"},
		},
	}
}

func TestBuildFeatures(t *testing.T) {
	for _, c := range featureCases() {
		t.Run(c.name, func(t *testing.T) {
			tarball := tartest.Tar(t, c.entries...)
			want := map[string][]byte{}
			for k, v := range c.content {
				want[k] = []byte(v)
			}
			buildEach(t, tarball, func(t *testing.T, b *built) {
				if diff := cmp.Diff(c.want, b.ix.Entries, cmpopts.IgnoreFields(layerindex.Entry{}, "Offset"), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("entries (-want +got):\n%s", diff)
				}
				checkContents(t, b, want)
			})
		})
	}
}

func TestBuildUnknownTypeflag(t *testing.T) {
	for _, flag := range []byte{'Z', 'D', 'A', '8'} {
		t.Run(string(flag), func(t *testing.T) {
			tarball := tartest.Tar(t,
				tartest.File("ok", "ok", 0o644),
				rawEntry(tartest.RawHeader{Name: "weird", Mode: 0o644, Typeflag: flag}, "data"),
			)
			for _, enc := range encodings {
				_, err := layerindex.Build(context.Background(), bytes.NewReader(tartest.Compress(t, enc.tc, tarball)), enc.c, layerindex.Options{Span: enc.span})
				var ee *layerindex.EntryError
				if !errors.Is(err, layerindex.ErrFormat) || !errors.As(err, &ee) || ee.Entry != "weird" {
					t.Errorf("%v: err = %v, want an EntryError for \"weird\" wrapping ErrFormat", enc, err)
				}
			}
		})
	}
}

func TestBuildUnsafePaths(t *testing.T) {
	for _, c := range []struct {
		name string
		e    tartest.Entry
	}{
		{"../x", tartest.Raw(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}, nil)},
		{"a/../../x", tartest.Raw(&tar.Header{Name: "a/../../x", Typeflag: tar.TypeReg, Mode: 0o644}, nil)},
		{"/../x", tartest.Raw(&tar.Header{Name: "/../x", Typeflag: tar.TypeDir, Mode: 0o755}, nil)},
		{"symlink ..", tartest.Raw(&tar.Header{Name: "..", Typeflag: tar.TypeSymlink, Linkname: "x", Mode: 0o777}, nil)},
		{"hardlink target", tartest.Raw(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd", Mode: 0o644}, nil)},
		{"hardlink target a/../..", tartest.Raw(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "a/../../etc/passwd", Mode: 0o644}, nil)},
		{"GNU long name", tartest.Raw(&tar.Header{Name: strings.Repeat("a/../", 30) + "../x", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU}, nil)},
	} {
		t.Run(c.name, func(t *testing.T) {
			tarball := tartest.Tar(t, tartest.File("ok", "", 0o644), c.e)
			_, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
			if !errors.Is(err, layerindex.ErrUnsafePath) {
				t.Errorf("err = %v, want ErrUnsafePath", err)
			}
		})
	}
	// A symlink's target is stored verbatim: it is resolved, confined, at
	// merge time, so a climbing target is not an error here.
	tarball := tartest.Tar(t, tartest.Symlink("s", "../../../etc/passwd"))
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil || ix.Entries[0].Link != "../../../etc/passwd" {
		t.Errorf("symlink with climbing target: %v", err)
	}
}

// With GODEBUG=tarinsecurepath=0 archive/tar's Reader.Next returns
// ErrInsecurePath (with the header) for absolute and climbing names. The
// index must not depend on that setting: absolute names are still confined
// to the root, and climbing names still fail as ErrUnsafePath.
func TestBuildTarInsecurePathGODEBUG(t *testing.T) {
	t.Setenv("GODEBUG", "tarinsecurepath=0")
	tarball := tartest.Tar(t, tartest.File("/etc/x", "X", 0o644))
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Errorf("absolute name with tarinsecurepath=0: %v", err)
	} else if ix.Entries[0].Name != "etc/x" {
		t.Errorf("Name = %q, want etc/x", ix.Entries[0].Name)
	}
	tarball = tartest.Tar(t, tartest.Raw(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}, nil))
	if _, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{}); !errors.Is(err, layerindex.ErrUnsafePath) {
		t.Errorf("../x with tarinsecurepath=0: err = %v, want ErrUnsafePath", err)
	}
}

func TestBuildCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "", ".": "", "./": "", "/": "", "//": "", "a": "a", "./a//b/": "a/b", "/etc/x": "etc/x",
		"a/./b/.": "a/b", "a/b/../c": "a/c", "a/..": "", ".wh..wh..opq": ".wh..wh..opq", "...": "...",
	} {
		got, err := layerindex.CleanPath(in)
		if err != nil || got != want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../", "/..", "a/../..", "./../a", "a/b/../../../c"} {
		if got, err := layerindex.CleanPath(in); !errors.Is(err, layerindex.ErrUnsafePath) {
			t.Errorf("CleanPath(%q) = %q, %v; want ErrUnsafePath", in, got, err)
		}
	}
	if _, err := layerindex.CleanPath("a\x00b"); err == nil {
		t.Errorf("CleanPath with NUL succeeded")
	}
}

// sparseCases are hand-encoded sparse files in the three GNU formats.
func TestBuildSparseTartest(t *testing.T) {
	chunks := []tartest.Chunk{
		{Offset: 0, Data: []byte("head")},
		{Offset: 5000, Data: pseudoRandom(700, 4)},
		{Offset: 9000, Data: []byte("x")},
		{Offset: 20000, Data: pseudoRandom(3000, 5)},
		{Offset: 40000, Data: []byte("y")},
		{Offset: 70000, Data: pseudoRandom(100, 6)},
		{Offset: 99990, Data: []byte("0123456789")},
	}
	const size = 100000
	content := tartest.SparseContent(size, chunks)
	holey := []tartest.Chunk{{Offset: 4096, Data: []byte("mid")}}
	for _, f := range []struct {
		name string
		f    tartest.SparseFormat
	}{{"gnu", tartest.SparseGNU}, {"pax0.1", tartest.SparsePAX01}, {"pax1.0", tartest.SparsePAX10}} {
		t.Run(f.name, func(t *testing.T) {
			tarball := tartest.Tar(t,
				tartest.File("before", "B", 0o644),
				tartest.Sparse("dir/sparse", size, chunks, f.f, 0o640, tartest.Owner(3, 4)),
				tartest.Sparse("allholes", 8192, nil, f.f, 0o600),
				tartest.Sparse(strings.Repeat("L", 120), 10000, holey, f.f, 0o600),
				tartest.File("after", "A", 0o644),
			)
			buildEach(t, tarball, func(t *testing.T, b *built) {
				var sparse []string
				for _, e := range b.ix.Entries {
					if e.Sparse {
						sparse = append(sparse, e.Name)
					}
				}
				if diff := cmp.Diff([]string{"dir/sparse", "allholes", strings.Repeat("L", 120)}, sparse); diff != "" {
					t.Errorf("sparse entries (-want +got):\n%s", diff)
				}
				checkContents(t, b, map[string][]byte{
					"before": []byte("B"), "dir/sparse": content, "allholes": make([]byte, 8192),
					strings.Repeat("L", 120): tartest.SparseContent(10000, holey), "after": []byte("A"),
				})
			})
		})
	}
}

// TestBuildSparseAfterHeaderOnlyEntry: archive/tar ignores the size field
// of header-only entries (symlink, hardlink, dir, devices, fifo: no data
// follows them), so the index must too when it works out where the next
// entry's headers start; a sparse file's Offset is that header start.
func TestBuildSparseAfterHeaderOnlyEntry(t *testing.T) {
	chunks := []tartest.Chunk{{Offset: 1000, Data: []byte("data")}}
	for _, typ := range []byte{tar.TypeSymlink, tar.TypeDir, tar.TypeLink, tar.TypeFifo} {
		t.Run(fmt.Sprintf("type%c", typ), func(t *testing.T) {
			h := tartest.HeaderBlock(tartest.RawHeader{Name: "x", Typeflag: typ, Linkname: "before", Mode: 0o755, Size: 1024, MTime: dmt})
			tarball := tartest.Tar(t,
				tartest.File("before", "B", 0o644),
				tartest.RawBlocks(h),
				tartest.Sparse("s", 4096, chunks, tartest.SparseGNU, 0o644),
			)
			ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			e := &ix.Entries[len(ix.Entries)-1]
			got, err := readContent(bytes.NewReader(tarball), e)
			if err != nil || !bytes.Equal(got, tartest.SparseContent(4096, chunks)) {
				t.Errorf("sparse %q after a %q entry with size field 1024: Offset %d, read %v (equal=%v)",
					e.Name, typ, e.Offset, err, err == nil && bytes.Equal(got, tartest.SparseContent(4096, chunks)))
			}
		})
	}
}

// TestBuildSparseAfterGlobalHeader: a PAX global header ('g') is skipped,
// but the next entry's header still starts at the next 512-byte block
// after its records; a sparse file's Offset must point there.
func TestBuildSparseAfterGlobalHeader(t *testing.T) {
	chunks := []tartest.Chunk{{Offset: 1000, Data: []byte("data")}}
	for _, f := range []struct {
		name string
		f    tartest.SparseFormat
	}{{"gnu", tartest.SparseGNU}, {"pax0.1", tartest.SparsePAX01}, {"pax1.0", tartest.SparsePAX10}} {
		t.Run(f.name, func(t *testing.T) {
			tarball := tartest.Tar(t,
				tartest.RawBlocks(tartest.PAXBlocks(true, [2]string{"comment", "a global header"})),
				tartest.Sparse("s", 4096, chunks, f.f, 0o644),
			)
			ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			e := &ix.Entries[0]
			got, err := readContent(bytes.NewReader(tarball), e)
			if err != nil || !bytes.Equal(got, tartest.SparseContent(4096, chunks)) {
				t.Errorf("sparse %q after a global header: Offset %d, read: %v", e.Name, e.Offset, err)
			}
		})
	}
}

// TestBuildSparseGNUTar uses real GNU tar --sparse output, for a file made
// sparse by truncate and dd.
func TestBuildSparseGNUTar(t *testing.T) {
	for _, tool := range []string{"tar", "truncate", "dd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(data, pseudoRandom(8192, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "truncate", "-s", "256K", "sparse")
	run(t, "dd", "if="+data, "of=sparse", "bs=4096", "seek=3", "count=1", "conv=notrunc", "status=none")
	run(t, "dd", "if="+data, "of=sparse", "bs=4096", "skip=1", "seek=40", "count=1", "conv=notrunc", "status=none")
	run(t, "dd", "if="+data, "of=sparse", "bs=1", "count=10", "seek=262134", "conv=notrunc", "status=none") // the last bytes
	run(t, "truncate", "-s", "128K", "holes")                                                               // all hole
	if err := os.WriteFile(filepath.Join(src, "plain"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, n := range []string{"sparse", "holes", "plain"} {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = b
	}
	for _, format := range [][]string{
		{"--format=gnu"},
		{"--format=posix"},
		{"--format=posix", "--sparse-version=0.1"},
		{"--format=posix", "--sparse-version=0.0"},
	} {
		t.Run(strings.Join(format, " "), func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out.tar")
			args := append([]string{"--sparse", "-b1", "--numeric-owner", "-cf", out}, format...)
			run(t, "tar", append(args, "plain", "sparse", "holes")...)
			tarball, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(tarball) > 64<<10 {
				t.Logf("tar is %d bytes: the file system may not have kept the holes", len(tarball))
			}
			buildEach(t, tarball, func(t *testing.T, b *built) {
				checkContents(t, b, want)
				for _, e := range b.ix.Entries {
					if e.Name == "sparse" && !e.Sparse && len(tarball) < 64<<10 {
						t.Errorf("%s: not marked Sparse", e.Name)
					}
				}
				// The same content through the merged tree's io/fs view.
				tr, err := overlay.Merge([]overlay.Layer{{Index: b.ix, Content: b.streams["tar"]}})
				if err != nil {
					t.Fatal(err)
				}
				for n, w := range want {
					got, err := fs.ReadFile(tr.FS(), n)
					if err != nil || !bytes.Equal(got, w) {
						t.Errorf("FS ReadFile(%s): %d bytes, %v, equal=%v", n, len(got), err, bytes.Equal(got, w))
					}
				}
			})
		})
	}
}

func truncTestTar(t *testing.T) []byte {
	return tartest.Tar(t,
		tartest.Dir("d", 0o755),
		tartest.File("d/a", string(pseudoRandom(1500, 8)), 0o644),
		tartest.File(strings.Repeat("long/", 30)+"name", "x", 0o644, tartest.Xattr("user.a", "b")),
		tartest.Symlink("s", "d/a"),
		tartest.File("z", "last", 0o644),
	)
}

// TestBuildTruncated cuts a layer at every byte. A tar stream is a
// sequence of 512-byte blocks, so a cut that is not on a block boundary is
// always a truncation and must fail, as must a cut inside a header run or
// inside data. Only a cut exactly between two entries leaves a valid prefix
// (archive/tar does not require the end-of-archive blocks), which the
// DiffID check must then catch.
func TestBuildTruncated(t *testing.T) {
	tarball := truncTestTar(t)
	full, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	boundary := map[int]bool{0: true}
	for _, e := range full.Entries {
		// where the next entry's first header (PAX/GNU ones included) starts
		boundary[int(e.Offset+(e.Size+511)&^511)] = true
	}
	endOfEntries := len(tarball) - 1024
	diffID := digest.FromBytes(tarball)
	var accepted []int
	for cut := 1; cut < len(tarball); cut++ {
		// Every block edge, plus a sample inside blocks (keeps -race fast).
		if r := cut % 512; r > 3 && r < 509 && cut%61 != 0 {
			continue
		}
		b := tarball[:cut]
		_, err := layerindex.Build(context.Background(), bytes.NewReader(b), layerindex.None, layerindex.Options{})
		if cut < endOfEntries && (cut%512 != 0 || !boundary[cut]) && err == nil {
			accepted = append(accepted, cut)
		}
		if err != nil && !errors.Is(err, layerindex.ErrFormat) {
			t.Errorf("cut at %d: err = %v, want one wrapping ErrFormat", cut, err)
		}
		_, err = layerindex.Build(context.Background(), bytes.NewReader(b), layerindex.None, layerindex.Options{DiffID: diffID})
		if err == nil {
			t.Errorf("cut at %d with DiffID: Build succeeded", cut)
		}
	}
	if len(accepted) > 0 {
		t.Errorf("Build accepted %d truncated streams (not a whole number of 512-byte blocks, or cut inside an entry), at offsets %s of %d",
			len(accepted), ranges(accepted), len(tarball))
	}
	for _, enc := range []encoding{encodings[2], encodings[4]} {
		blob := tartest.Compress(t, enc.tc, tarball)
		for cut := 1; cut < len(blob); cut += 1 + cut/64 {
			_, err := layerindex.Build(context.Background(), bytes.NewReader(blob[:cut]), enc.c, layerindex.Options{Span: enc.span})
			if err == nil {
				t.Errorf("%v: cut at %d of %d: Build succeeded", enc, cut, len(blob))
			} else if !errors.Is(err, layerindex.ErrCorrupt) && !errors.Is(err, layerindex.ErrFormat) {
				t.Errorf("%v: cut at %d: err = %v, want ErrCorrupt or ErrFormat", enc, cut, err)
			}
		}
	}
}

// ranges formats sorted ints as "a-b c-d".
func ranges(xs []int) string {
	var parts []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		parts = append(parts, fmt.Sprintf("%d-%d", xs[i], xs[j]))
		i = j + 1
	}
	return strings.Join(parts, " ")
}

func TestBuildDigests(t *testing.T) {
	tarball := truncTestTar(t)
	for _, enc := range encodings {
		t.Run(enc.String(), func(t *testing.T) {
			blob := tartest.Compress(t, enc.tc, tarball)
			good := layerindex.Options{Span: enc.span, Digest: digest.FromBytes(blob), DiffID: digest.FromBytes(tarball), Size: int64(len(blob))}
			build := func(o layerindex.Options) (*layerindex.Index, error) {
				return layerindex.Build(context.Background(), bytes.NewReader(blob), enc.c, o)
			}
			if _, err := build(good); err != nil {
				t.Fatalf("matching digests: %v", err)
			}
			h := sha512.Sum512(blob)
			d512 := digest.NewDigestFromBytes(digest.SHA512, h[:])
			o := good
			o.Digest = d512
			if ix, err := build(o); err != nil || ix.Digest != d512 {
				t.Errorf("sha512 digest: %v, Digest %s", err, ix.Digest)
			}
			flip := func(d digest.Digest) digest.Digest {
				s := []byte(d.String())
				if s[len(s)-1] == '0' {
					s[len(s)-1] = '1'
				} else {
					s[len(s)-1] = '0'
				}
				return digest.Digest(s)
			}
			bad := map[string]func(*layerindex.Options){
				"digest":            func(o *layerindex.Options) { o.Digest = flip(o.Digest) },
				"sha512 digest":     func(o *layerindex.Options) { o.Digest = flip(d512) },
				"diffID":            func(o *layerindex.Options) { o.DiffID = flip(o.DiffID) },
				"size+1":            func(o *layerindex.Options) { o.Size++ },
				"size-1":            func(o *layerindex.Options) { o.Size-- },
				"diffID as digest":  func(o *layerindex.Options) { o.Digest, o.DiffID = digest.FromBytes(tarball), digest.FromBytes(blob) },
				"digest of nothing": func(o *layerindex.Options) { o.Digest = digest.FromBytes(nil) },
			}
			if enc.c == layerindex.None {
				delete(bad, "diffID as digest") // the same thing for a plain tar
			}
			for name, f := range bad {
				o := good
				f(&o)
				if _, err := build(o); !errors.Is(err, layerindex.ErrDigestMismatch) {
					t.Errorf("%s: err = %v, want ErrDigestMismatch", name, err)
				}
			}
			// Trailing bytes after the blob change its digest and size.
			o = good
			if _, err := layerindex.Build(context.Background(), io.MultiReader(bytes.NewReader(blob), bytes.NewReader(make([]byte, 512))), enc.c, o); err == nil {
				t.Errorf("blob with 512 trailing zero bytes matched the descriptor")
			}
		})
	}
}

// TestWriteTestdata regenerates the FuzzBuild seeds in testdata:
// LAYERINDEX_WRITE_TESTDATA=1 go test -run TestWriteTestdata ./layerindex
func TestWriteTestdata(t *testing.T) {
	if os.Getenv("LAYERINDEX_WRITE_TESTDATA") == "" {
		t.Skip("set LAYERINDEX_WRITE_TESTDATA=1 to rewrite testdata")
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	write("basic.tar", tartest.Tar(t,
		tartest.Dir("./", 0o755),
		tartest.Dir("etc", 0o755),
		tartest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644, tartest.Xattr("user.x", "a\x00b")),
		tartest.Symlink("etc/mtab", "/proc/mounts"),
		tartest.Hardlink("etc/passwd-", "etc/passwd"),
		tartest.Whiteout("etc/shadow"),
		tartest.Opaque("var"),
		tartest.Char("dev/null", 1, 3),
		tartest.FIFO("run/fifo"),
		tartest.File("bin/su", "su", 0o4755, tartest.Owner(70000, 1<<32-1), tartest.MTime(time.Unix(1700000000, 5))),
	))
	write("gnu-long.tar", tartest.Tar(t,
		tartest.File(strings.Repeat("long/", 25)+"file", "L", 0o644, tartest.Format(tar.FormatGNU)),
		tartest.Hardlink("h", strings.Repeat("long/", 25)+"file", tartest.Format(tar.FormatGNU)),
		tartest.Symlink("s", strings.Repeat("t", 150), tartest.Format(tar.FormatGNU)),
	))
	chunks := []tartest.Chunk{{Offset: 10, Data: []byte("abc")}, {Offset: 3000, Data: []byte("def")}}
	write("sparse-gnu.tar", tartest.Tar(t, tartest.Sparse("s", 4096, chunks, tartest.SparseGNU, 0o644), tartest.File("after", "A", 0o644)))
	write("sparse-pax01.tar", tartest.Tar(t, tartest.Sparse("s", 4096, chunks, tartest.SparsePAX01, 0o644)))
	write("sparse-pax10.tar", tartest.Tar(t, tartest.Sparse("s", 4096, chunks, tartest.SparsePAX10, 0o644), tartest.File("after", "A", 0o644)))
}

// TestBuildHugeSparse: a sparse file's logical size costs nothing to
// store (the classic case is /var/log/lastlog after useradd with a large
// UID: over 1 TB of holes in a few KB of tar). Build must index such a
// layer in time proportional to the tar, not to the logical size, and a
// read near the end of the file must not walk through every hole either.
//
// The work runs in a child process killed after a deadline, so that a slow
// implementation cannot keep burning CPU under the other tests.
func TestBuildHugeSparse(t *testing.T) {
	if f := os.Getenv("LAYERINDEX_HUGE_SPARSE_CHILD"); f != "" {
		hugeSparseChild(t, f)
		return
	}
	for _, f := range []string{"gnu", "pax1.0"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBuildHugeSparse$", "-test.v")
			cmd.Env = append(os.Environ(), "LAYERINDEX_HUGE_SPARSE_CHILD="+f)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("indexing a 1 TiB sparse file (a few KB of tar) and reading its last bytes did not finish within 5s:\n%s", out)
			}
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
		})
	}
}

func hugeSparseChild(t *testing.T, format string) {
	const size = 1 << 40
	chunks := []tartest.Chunk{{Offset: 0, Data: []byte("head")}, {Offset: size - 4, Data: []byte("tail")}}
	sf := tartest.SparseGNU
	if format == "pax1.0" {
		sf = tartest.SparsePAX10
	}
	tarball := tartest.Tar(t, tartest.Sparse("var/log/lastlog", size, chunks, sf, 0o644), tartest.File("after", "A", 0o644))
	start := time.Now()
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("Build took %v", time.Since(start))
	e := &ix.Entries[0]
	if !e.Sparse || e.Size != size {
		t.Fatalf("entry %+v, want a sparse file of %d bytes", e, int64(size))
	}
	p := make([]byte, 4)
	n, err := layerindex.Content(bytes.NewReader(tarball), e).ReadAt(p, size-4)
	if n != 4 || string(p) != "tail" || (err != nil && err != io.EOF) {
		t.Errorf("ReadAt(4, size-4) = %q, %d, %v", p[:n], n, err)
	}
	got := make([]byte, 4)
	if n, err := layerindex.Content(bytes.NewReader(tarball), e).ReadAt(got, 0); n != 4 || string(got) != "head" {
		t.Errorf("ReadAt(4, 0) = %q, %v", got[:n], err)
	}
}

// TestBuildSizePastEnd: an entry whose header size runs past the end of
// the layer is named in the error, with its size and where the layer
// ends, in every encoding (the compressed streams themselves are valid).
func TestBuildSizePastEnd(t *testing.T) {
	for _, last := range []bool{true, false} {
		var tb []byte
		tb = append(tb, tartest.Tar(t, tartest.File("ok", "ok", 0o644))...)
		tb = tb[:len(tb)-1024] // drop the end-of-archive blocks
		tb = append(tb, tartest.HeaderBlock(tartest.RawHeader{Name: "usr/bin/x", Typeflag: '0', Mode: 0o755, Size: 123456, MTime: 1000})...)
		tb = append(tb, pseudoRandom(1000, 3)...)
		if !last {
			// What follows looks like another entry, but lies inside x's
			// data as the header declares it.
			tb = append(tb, tartest.HeaderBlock(tartest.RawHeader{Name: "y", Typeflag: '0', Mode: 0o644, MTime: 1000})...)
		}
		tb = append(tb, make([]byte, 512-len(tb)%512)...)
		for _, enc := range encodings {
			blob := tartest.Compress(t, enc.tc, tb)
			_, err := layerindex.Build(context.Background(), bytes.NewReader(blob), enc.c, layerindex.Options{Span: enc.span})
			var ee *layerindex.EntryError
			if !errors.As(err, &ee) || ee.Entry != "usr/bin/x" || !errors.Is(err, layerindex.ErrFormat) {
				t.Errorf("%v: err = %v, want an EntryError for usr/bin/x wrapping ErrFormat", enc, err)
				continue
			}
			if want := fmt.Sprintf("size 123456 runs past the end of the layer at offset %d", len(tb)); !strings.Contains(err.Error(), want) {
				t.Errorf("%v: %v, want %q", enc, err, want)
			}
		}
	}
}

// TestBuildTrailingJunk: bytes after the last gzip member or zstd frame
// that are not another member or frame — zeros too — fail the layer, and
// the error says where they start. Go's compress/gzip, which umoci and
// containerd read layers with to their end, fails such gzip layers ("gzip:
// invalid header"), and klauspost's zstd decoder fails zstd ones of 4 bytes
// or more. Concatenated members and frames, and skippable frames, are
// valid.
func TestBuildTrailingJunk(t *testing.T) {
	tb := truncTestTar(t)
	skip := tartest.ZstdSkippable([]byte("skippable"), nil)
	good := map[string][]byte{
		"gzip":                  tartest.Compress(t, tartest.Gzip, tb),
		"gzip-multi":            tartest.CompressMulti(t, tartest.Gzip, tb, 1000),
		"zstd-multi":            tartest.CompressMulti(t, tartest.Zstd, tb, 1000),
		"zstd-skippable-at-end": append(tartest.Compress(t, tartest.Zstd, tb), skip...),
	}
	comp := func(name string) layerindex.Compression {
		if strings.HasPrefix(name, "gzip") {
			return layerindex.Gzip
		}
		return layerindex.Zstd
	}
	for name, blob := range good {
		if _, err := layerindex.Build(context.Background(), bytes.NewReader(blob), comp(name), layerindex.Options{DiffID: digest.FromBytes(tb)}); err != nil {
			t.Errorf("%s: valid blob refused: %v", name, err)
		}
		for _, junk := range [][]byte{{0}, make([]byte, 3), make([]byte, 512), []byte("garbage"), {0x1f}, {0x28, 0xb5, 0x2f}} {
			bad := append(bytes.Clone(blob), junk...)
			_, err := layerindex.Build(context.Background(), bytes.NewReader(bad), comp(name), layerindex.Options{})
			if err == nil {
				t.Errorf("%s + %d bytes %.8q: accepted", name, len(junk), junk)
				continue
			}
			if want := fmt.Sprintf("at offset %d after", len(blob)); !strings.Contains(err.Error(), want) || !errors.Is(err, layerindex.ErrCorrupt) {
				t.Errorf("%s + %d bytes %.8q: %v; want ErrCorrupt and %q", name, len(junk), junk, err, want)
			}
		}
	}
}

// Bytes that are not the layer's (a registry serving another blob under
// the layer's digest) are reported as a digest mismatch, not as the
// decoding error they cause first: garbage, another layer cut to this
// one's size, and a genuine but damaged blob, which keeps its decoding
// error when no digest is given to tell.
func TestBuildWrongBytesAreADigestMismatch(t *testing.T) {
	tarball := truncTestTar(t)
	for _, enc := range encodings {
		if enc.c == layerindex.None {
			continue
		}
		t.Run(enc.String(), func(t *testing.T) {
			blob := tartest.Compress(t, enc.tc, tarball)
			other := tartest.Compress(t, enc.tc, append(bytes.Repeat([]byte("x"), 512), tarball...))
			o := layerindex.Options{Span: enc.span, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
			for name, served := range map[string][]byte{
				"garbage":       bytes.Repeat([]byte{0x5a}, len(blob)),
				"another-layer": other[:min(len(other), len(blob))],
				"cut-in-half":   blob[:len(blob)/2],
			} {
				_, err := layerindex.Build(context.Background(), bytes.NewReader(served), enc.c, o)
				if !errors.Is(err, layerindex.ErrDigestMismatch) || !strings.Contains(err.Error(), "not the layer's bytes") {
					t.Errorf("%s: %v, want a digest mismatch", name, err)
				}
			}
			o.Digest, o.Size = "", 0
			if _, err := layerindex.Build(context.Background(), bytes.NewReader(blob[:len(blob)/2]), enc.c, o); err == nil || errors.Is(err, layerindex.ErrDigestMismatch) {
				t.Errorf("without a digest, a cut blob fails with %v, want its decoding error", err)
			}
		})
	}
}

// A blob longer than its descriptor says is read only one byte past the
// size to tell, so the error must not give that count as the blob's size.
func TestBuildWrongBytesLongerBlob(t *testing.T) {
	tarball := truncTestTar(t)
	blob := tartest.Compress(t, tartest.Gzip, tarball)
	served := append(bytes.Repeat([]byte{0x5a}, len(blob)), make([]byte, 1<<20)...)
	o := layerindex.Options{Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	_, err := layerindex.Build(context.Background(), bytes.NewReader(served), layerindex.Gzip, o)
	if !errors.Is(err, layerindex.ErrDigestMismatch) {
		t.Fatalf("%v, want a digest mismatch", err)
	}
	if m := regexp.MustCompile(`blob is (\d+) bytes`).FindStringSubmatch(err.Error()); m != nil && m[1] != fmt.Sprint(len(served)) {
		t.Errorf("%v: the blob is %d bytes, not %s", err, len(served), m[1])
	}
}
