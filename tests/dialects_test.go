package tests

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
	"golang.org/x/sys/unix"
)

// TestTarDialects mounts one layer full of the older and rarer tar
// encodings real images contain (git archive's global header, V7 and
// contiguous typeflags, GNU long links, USTAR prefixes, base-256 numbers)
// and compares it with GNU tar's own extraction, since umoci rejects some of
// them.
func TestTarDialects(t *testing.T) {
	requireIntegration(t, "tar")
	longTarget := strings.Repeat("target/", 30)
	longDir := strings.Repeat("p", 90) + "/" + strings.Repeat("q", 40)
	layer := tartest.Tar(t,
		// git archive starts with a global header holding the commit id.
		tartest.RawBlocks(tartest.PAXBlocks(true, [2]string{"comment", "0123456789abcdef0123456789abcdef01234567"})),
		tartest.Dir("d", 0o755),
		// V7 regular file: typeflag NUL; and a V7 directory: NUL + "/".
		tartest.RawBlocks(append(tartest.HeaderBlock(tartest.RawHeader{Name: "d/v7file", Typeflag: 0, Mode: 0o644, Size: 3, MTime: 1000}), "v7\n"...)),
		tartest.RawBlocks(tartest.HeaderBlock(tartest.RawHeader{Name: "d/v7dir/", Typeflag: 0, Mode: 0o750, MTime: 1000})),
		// Contiguous file ('7'): read as a regular file.
		tartest.RawBlocks(append(tartest.HeaderBlock(tartest.RawHeader{Name: "d/contiguous", Typeflag: '7', Mode: 0o644, Size: 4, MTime: 1000}), "cont"...)),
		// Old-GNU header with base-256 uid/gid.
		tartest.RawBlocks(append(tartest.HeaderBlock(tartest.RawHeader{Name: "d/base256", Typeflag: '0', Mode: 0o600, UID: 4294967294, GID: 3000000, Size: 2, MTime: 1000, GNU: true}), "b2"...)),
		// Directory entry without a trailing slash.
		tartest.Raw(&tar.Header{Typeflag: tar.TypeDir, Name: "d/noslash", Mode: 0o700, ModTime: time.Unix(1000, 0)}, nil),
		// GNU ././@LongLink: 'K' for a long symlink target, 'L' for names.
		tartest.Symlink("d/longlink", longTarget, tartest.Format(tar.FormatGNU)),
		tartest.File("d/"+strings.Repeat("L", 150), "gnu long name", 0o644, tartest.Format(tar.FormatGNU)),
		// USTAR prefix field for a 135-byte path, and a PAX hard link to it.
		tartest.File("d/"+longDir, "ustar prefix", 0o644, tartest.Format(tar.FormatUSTAR)),
		tartest.Hardlink("d/"+strings.Repeat("H", 120), "d/"+longDir, tartest.Format(tar.FormatPAX)),
		// PAX uid/gid records beyond the octal fields.
		tartest.File("d/paxids", "ids", 0o644, tartest.Owner(3000000, 4294967294), tartest.Format(tar.FormatPAX)),
	)
	refDir := filepath.Join(t.TempDir(), "ref")
	if err := os.Mkdir(refDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("tar", "-x", "-p", "--numeric-owner", "--same-owner", "--xattrs", "--xattrs-include=*", "-C", refDir, "-f", "-")
	cmd.Stdin = bytes.NewReader(layer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}
	ref, err := Snapshot(refDir)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Nodes["d/v7dir"] == nil || ref.Nodes["d/contiguous"] == nil {
		t.Fatalf("GNU tar did not extract the fixture as expected: %q", ref.Paths)
	}
	for _, c := range []tartest.Compression{tartest.Gzip, tartest.Uncompressed} {
		t.Run(string(c), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{{Compression: c, Tar: layer}}})
			mnt := mountImage(t, "oci:"+dir+":latest")
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			// GNU tar gives the extraction directory itself no metadata, and
			// d/ppp... has no entry of its own (it is only the USTAR prefix of
			// a file), so its mtime is the extraction time there.
			implicit := "d/" + strings.Repeat("p", 90)
			requireSameTree(t, ref, got, func(path, field string, _, _ *Node) bool {
				return path == "." || path == implicit && field == "mtime"
			})
		})
	}
}

// TestLibarchiveXattrs: bsdtar writes xattrs as LIBARCHIVE.xattr.NAME with
// a base64 value (NAME URL-encoded). Neither umoci nor GNU tar reads them,
// so the expected values are spelled out.
func TestLibarchiveXattrs(t *testing.T) {
	requireIntegration(t)
	bin := "\x00\x01binary\xff"
	layer := tartest.Tar(t,
		tartest.File("la", "libarchive", 0o644,
			tartest.PAX("LIBARCHIVE.xattr.user.text", base64.StdEncoding.EncodeToString([]byte("hello"))),
			tartest.PAX("LIBARCHIVE.xattr.user.bin", base64.StdEncoding.EncodeToString([]byte(bin))),
			tartest.PAX("LIBARCHIVE.xattr.user.sp%20ace", base64.StdEncoding.EncodeToString([]byte("s")))),
	)
	dir := filepath.Join(t.TempDir(), "layout")
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: layer}}})
	mnt := mountImage(t, "oci:"+dir+":latest")
	n := &Node{}
	got := readXattrs(filepath.Join(mnt, "la"), n)
	want := map[string]string{"user.text": "hello", "user.bin": bin, "user.sp ace": "s"}
	if !equalXattrs(got, want) || len(n.Errs) > 0 {
		t.Errorf("xattrs %s (errors %q), want %s", fmtXattrs(got), n.Errs, fmtXattrs(want))
	}
}

// TestLargeSparse: a 16 GiB sparse file (past every 32-bit and 8 GiB octal
// limit) has the right size and reads back its data at both ends, without
// the test reading 16 GiB.
func TestLargeSparse(t *testing.T) {
	requireIntegration(t)
	const size = 16 << 30
	head, tail := []byte("head of a huge file"), bytes.Repeat([]byte("T"), 4096)
	for _, f := range []tartest.SparseFormat{tartest.SparseGNU, tartest.SparsePAX10} {
		layer := tartest.Tar(t,
			tartest.Sparse("huge", size, []tartest.Chunk{{Offset: 0, Data: append(head, make([]byte, 512-len(head))...)}, {Offset: size - 4096, Data: tail}}, f, 0o644),
			tartest.File("after", "after", 0o644))
		dir := filepath.Join(t.TempDir(), "layout")
		tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{{Compression: tartest.Zstd, Tar: layer}}})
		mnt := mountImage(t, "oci:"+dir+":latest")
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(mnt, "huge"), &st); err != nil || st.Size != size {
			t.Fatalf("format %d: size %d, %v; want %d", f, st.Size, err, int64(size))
		}
		checks := []struct {
			off  int64
			want []byte
		}{
			{0, head},
			{8 << 30, make([]byte, 4096)},
			{size - 4096 - 100, append(make([]byte, 100), tail[:100]...)},
			{size - 4096, tail},
		}
		for _, c := range checks {
			if err := readAtCheck(filepath.Join(mnt, "huge"), c.off, c.want); err != nil {
				t.Errorf("format %d: %v", f, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "after")); err != nil || string(b) != "after" {
			t.Errorf("format %d: entry after the sparse file: %q %v", f, b, err)
		}
	}
}
