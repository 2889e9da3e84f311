package tartest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type readEntry struct {
	hdr  *tar.Header
	body []byte
}

func readTar(t *testing.T, b []byte) []readEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []readEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("archive/tar cannot read our stream: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %q: %v", h.Name, err)
		}
		out = append(out, readEntry{h, body})
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	nano := time.Unix(1234567890, 123456789)
	cap := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	long := strings.Repeat("d/", 60) + "f"
	b := Tar(t,
		Dir("a", 0o755),
		File("a/f", "hello", 0o4755, Owner(1000, 70000), MTime(nano), Xattr("security.capability", cap), Xattr("user.bin", "\x00\xff")),
		Symlink("a/s", "/nowhere"),
		Hardlink("a/h", "a/f"),
		Char("a/c", 1, 3),
		Block("a/b", 8, 0),
		FIFO("a/p"),
		Whiteout("a/gone"),
		Opaque("a"),
		File(long, "x", 0o644, Format(tar.FormatGNU)),
		File("big-uid", "", 0o600, Owner(4294967294, 4294967294)),
		Raw(&tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Size: 1, Mode: 0o644}, []byte("!")),
	)
	got := readTar(t, b)
	want := []struct {
		name string
		typ  byte
	}{
		{"a/", tar.TypeDir}, {"a/f", tar.TypeReg}, {"a/s", tar.TypeSymlink}, {"a/h", tar.TypeLink},
		{"a/c", tar.TypeChar}, {"a/b", tar.TypeBlock}, {"a/p", tar.TypeFifo}, {"a/.wh.gone", tar.TypeReg},
		{"a/.wh..wh..opq", tar.TypeReg}, {long, tar.TypeReg}, {"big-uid", tar.TypeReg}, {"../escape", tar.TypeReg},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].hdr.Name != w.name || got[i].hdr.Typeflag != w.typ {
			t.Errorf("entry %d = %q %q, want %q %q", i, got[i].hdr.Name, got[i].hdr.Typeflag, w.name, w.typ)
		}
	}
	f := got[1].hdr
	if string(got[1].body) != "hello" || f.Mode != 0o4755 || f.Uid != 1000 || f.Gid != 70000 || !f.ModTime.Equal(nano) {
		t.Errorf("a/f = %+v %q", f, got[1].body)
	}
	if f.PAXRecords["SCHILY.xattr.security.capability"] != cap || f.PAXRecords["SCHILY.xattr.user.bin"] != "\x00\xff" {
		t.Errorf("xattrs lost: %q", f.PAXRecords)
	}
	if got[3].hdr.Linkname != "a/f" || got[2].hdr.Linkname != "/nowhere" {
		t.Errorf("link targets: %q %q", got[3].hdr.Linkname, got[2].hdr.Linkname)
	}
	if got[4].hdr.Devmajor != 1 || got[4].hdr.Devminor != 3 {
		t.Errorf("char dev: %d,%d", got[4].hdr.Devmajor, got[4].hdr.Devminor)
	}
	if got[9].hdr.Format != tar.FormatGNU {
		t.Errorf("long name format = %v, want GNU", got[9].hdr.Format)
	}
	if got[10].hdr.Uid != 4294967294 {
		t.Errorf("big uid = %d", got[10].hdr.Uid)
	}
	if !got[0].hdr.ModTime.Equal(DefaultMTime) {
		t.Errorf("default mtime = %v", got[0].hdr.ModTime)
	}
}

func TestHeaderBlock(t *testing.T) {
	b := Tar(t,
		RawBlocks(HeaderBlock(RawHeader{Name: "hostile/../../x", Typeflag: tar.TypeReg, Mode: 0o644, UID: 4294967294, GID: 70000, MTime: -1})),
		RawBlocks(append(HeaderBlock(RawHeader{Name: "gnu", Typeflag: tar.TypeReg, Mode: 0o600, Size: 3, GNU: true}), "abc"...)),
	)
	got := readTar(t, b)
	if len(got) != 2 || got[0].hdr.Name != "hostile/../../x" || got[0].hdr.Uid != 4294967294 || got[0].hdr.ModTime.Unix() != -1 {
		t.Fatalf("got %+v", got[0].hdr)
	}
	if string(got[1].body) != "abc" || got[1].hdr.Format != tar.FormatGNU {
		t.Fatalf("gnu entry: %+v %q", got[1].hdr, got[1].body)
	}
	bad := Tar(t, RawBlocks(HeaderBlock(RawHeader{Name: "x", Typeflag: tar.TypeReg, BadChecksum: true})))
	if _, err := tar.NewReader(bytes.NewReader(bad)).Next(); err == nil {
		t.Fatal("bad checksum accepted")
	}
	if rec := paxRecord("k", strings.Repeat("v", 94)); !strings.HasPrefix(rec, "101 ") || len(rec) != 101 {
		t.Fatalf("pax record length: %q", rec)
	}
}

func sparseChunks(n int) []Chunk {
	var c []Chunk
	for i := range n {
		// Whole 512-byte blocks except the last chunk: see the Sparse doc.
		size := 512 * (1 + i%3)
		if i == n-1 {
			size = 100 + i
		}
		c = append(c, Chunk{Offset: int64(i) * 10000, Data: bytes.Repeat([]byte{byte('a' + i%26)}, size)})
	}
	return c
}

func TestSparse(t *testing.T) {
	for _, f := range []SparseFormat{SparseGNU, SparsePAX01, SparsePAX10} {
		for _, n := range []int{0, 1, 4, 5, 30} {
			chunks := sparseChunks(n)
			size := int64(n)*10000 + 5000
			name := "dir/sparse"
			if n == 5 {
				name = strings.Repeat("n", 120) // long name path
			}
			b := Tar(t,
				Sparse(name, size, chunks, f, 0o640, Owner(1, 2), MTime(time.Unix(100, 0))),
				File("after", "tail", 0o644))
			got := readTar(t, b)
			if len(got) != 2 {
				t.Fatalf("format %d n=%d: %d entries", f, n, len(got))
			}
			if testing.Verbose() {
				t.Logf("format %d n=%d", f, n)
			}
			h := got[0].hdr
			if h.Name != name || h.Size != size || h.Uid != 1 || h.Gid != 2 || h.Mode != 0o640 {
				t.Errorf("format %d n=%d: header %+v", f, n, h)
			}
			if !bytes.Equal(got[0].body, SparseContent(size, chunks)) {
				t.Errorf("format %d n=%d: content differs", f, n)
			}
			if string(got[1].body) != "tail" {
				t.Errorf("format %d n=%d: next entry misaligned: %q", f, n, got[1].hdr.Name)
			}
			gnuExtract(t, b, name, SparseContent(size, chunks))
		}
	}
}

// gnuExtract checks our hand-made sparse encoding against GNU tar itself,
// an independent reader.
func gnuExtract(t *testing.T, b []byte, name string, want []byte) {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		return
	}
	dir := t.TempDir()
	cmd := exec.Command("tar", "-x", "-C", dir, "-f", "-")
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar on %q: %v\n%s", name, err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("GNU tar extracts %q differently (len %d, want %d)", name, len(got), len(want))
	}
}

func TestCompress(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		for _, chunk := range []int{0, 7000} {
			z := CompressMulti(t, c, data, chunk)
			var r io.Reader = bytes.NewReader(z)
			switch c {
			case Gzip:
				zr, err := gzip.NewReader(r)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			case Zstd:
				if chunk > 0 {
					z = ZstdSkippable([]byte("skip me"), z)
				}
				zr, err := zstd.NewReader(bytes.NewReader(z))
				if err != nil {
					t.Fatal(err)
				}
				defer zr.Close()
				r = zr
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s chunk %d: round trip failed: %v", c, chunk, err)
			}
		}
	}
	if got := Compress(t, Gzip, nil); len(got) == 0 {
		t.Error("empty gzip stream has no member")
	}
}

func readJSON(t *testing.T, dir string, d digest.Digest, v any) {
	t.Helper()
	b, err := os.ReadFile(BlobPath(dir, d))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != d {
		t.Fatalf("blob %s has wrong digest", d)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestWriteOCILayout(t *testing.T) {
	dir := t.TempDir()
	l1 := Tar(t, Dir("etc", 0o755), File("etc/hostname", "box\n", 0o644))
	l2 := Tar(t, Whiteout("etc/hostname"), File("etc/motd", "hi\n", 0o644))
	md := WriteOCILayout(t, dir, Image{Ref: "latest", Layers: []ImageLayer{{Compression: Gzip, Tar: l1}, {Compression: Zstd, Tar: l2}}})
	infos := WriteOCILayoutInfo(t, dir,
		Image{Ref: "multi", Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, Layers: []ImageLayer{{Tar: l1}}},
		Image{Ref: "multi", Platform: ocispec.Platform{OS: "linux", Architecture: "arm64"}, Layers: []ImageLayer{{Tar: l1, MediaType: "application/x-unknown"}}},
		Image{Ref: "docker", DockerMediaTypes: true, Layers: []ImageLayer{{Compression: Gzip, Tar: l1, DiffID: digest.Digest("sha256:" + strings.Repeat("0", 64))}}},
	)
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 3 {
		t.Fatalf("index.json has %d entries, want 3 (latest, multi, docker)", len(idx.Manifests))
	}
	if idx.Manifests[0].Digest != md || idx.Manifests[0].Annotations[ocispec.AnnotationRefName] != "latest" {
		t.Errorf("first entry %+v", idx.Manifests[0])
	}
	if idx.Manifests[1].MediaType != ocispec.MediaTypeImageIndex || infos[0].Index.Digest != idx.Manifests[1].Digest {
		t.Errorf("multi-platform entry %+v", idx.Manifests[1])
	}
	var m ocispec.Manifest
	readJSON(t, dir, md, &m)
	var cfg ocispec.Image
	readJSON(t, dir, m.Config.Digest, &cfg)
	if len(m.Layers) != 2 || m.Layers[1].MediaType != ocispec.MediaTypeImageLayerZstd {
		t.Fatalf("manifest %+v", m)
	}
	if cfg.RootFS.DiffIDs[0] != digest.FromBytes(l1) || cfg.RootFS.DiffIDs[1] != digest.FromBytes(l2) {
		t.Errorf("diff_ids %v", cfg.RootFS.DiffIDs)
	}
	for _, l := range m.Layers {
		blob, err := os.ReadFile(BlobPath(dir, l.Digest))
		if err != nil || digest.FromBytes(blob) != l.Digest || int64(len(blob)) != l.Size {
			t.Errorf("layer %s: %v", l.Digest, err)
		}
	}
	if infos[1].Layers[0].MediaType != "application/x-unknown" || infos[2].Manifest.MediaType != DockerManifest {
		t.Errorf("overrides ignored: %+v", infos)
	}

}

func TestWriteOCILayoutUmoci(t *testing.T) {
	if _, err := exec.LookPath("umoci"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs umoci and root")
	}
	dir := t.TempDir()
	l1 := Tar(t, Dir("etc", 0o755), File("etc/hostname", "box\n", 0o644), File("etc/x", "x", 0o644))
	l2 := Tar(t, Whiteout("etc/hostname"), Hardlink("etc/y", "etc/x"))
	WriteOCILayout(t, dir, Image{Ref: "latest", Layers: []ImageLayer{{Compression: Gzip, Tar: l1}, {Tar: l2}}})
	bundle := filepath.Join(t.TempDir(), "b")
	if out, err := exec.Command("umoci", "raw", "unpack", "--image", dir+":latest", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci rejects our layout: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(bundle, "etc/hostname")); err == nil {
		t.Error("whiteout not applied")
	}
	a, _ := os.Stat(filepath.Join(bundle, "etc/x"))
	b, _ := os.Stat(filepath.Join(bundle, "etc/y"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("hardlink across layers not applied")
	}
}
