package tests

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
	"golang.org/x/sys/unix"
)

// TestRootFSTypeRefused: config.md says rootfs.type MUST be "layers" and an
// unknown value MUST be an error when unpacking. Every command that opens
// the image refuses it, naming the config blob and the value.
func TestRootFSTypeRefused(t *testing.T) {
	requireIntegration(t)
	dir := filepath.Join(t.TempDir(), "layout")
	info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "latest", RootFSType: "snapshot",
		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("f", "f", 0o644))}}})
	src := "oci:" + dir + ":latest"
	want := []string{info[0].Config.Digest.String(), `rootfs.type "snapshot"`}
	cache := t.TempDir()
	out := filepath.Join(t.TempDir(), "out.tar")
	for _, args := range [][]string{
		{"mount", src, newMountpoint(t)},
		{"inspect", src},
		{"ls", src},
		{"cat", src, "f"},
		{"history", src, "f"},
		{"diff", src, "--layer", "0"},
		{"diff", src, src},
		{"waste", src},
		{"export", src, out},
		{"index", src},
		{"bundle", src, filepath.Join(t.TempDir(), "bundle")},
	} {
		args = append(args[:1], append([]string{"--cache-dir", cache}, args[1:]...)...)
		r := run(t, time.Minute, args...)
		if r.code == 0 {
			t.Errorf("accepted rootfs.type snapshot: %s", r)
			continue
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr does not name %q: %s", w, r)
			}
		}
	}
}

// TestGzipTrailingJunk: a valid gzip member followed by bytes that are not
// another member (zeros, garbage) is refused, as umoci (Go's compress/gzip,
// read to the end of the blob) refuses it; the error names the layer blob
// and the offset where the junk starts.
func TestGzipTrailingJunk(t *testing.T) {
	requireIntegration(t)
	tb := tartest.Tar(t, tartest.File("f", "f", 0o644))
	gz := tartest.Compress(t, tartest.Gzip, tb)
	for name, junk := range map[string][]byte{"zeros": make([]byte, 1024), "garbage": []byte("garbage\n")} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "latest",
				Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tb, Blob: append(bytes.Clone(gz), junk...)}}})
			out, err := exec.Command("umoci", "raw", "unpack", "--image", dir+":latest", filepath.Join(t.TempDir(), "rootfs")).CombinedOutput()
			if err == nil {
				t.Fatalf("umoci accepted the layer; the reference changed:\n%s", out)
			}
			t.Logf("umoci: %s", bytes.TrimSpace(out))
			r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), "oci:"+dir+":latest", newMountpoint(t))
			if r.code == 0 {
				t.Fatalf("mounted: %s", r)
			}
			for _, w := range []string{info[0].Layers[0].Digest.String(), fmt.Sprintf("at offset %d", len(gz))} {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not name %q: %s", w, r)
				}
			}
		})
	}
}

// TestEscapingSymlinkParent: p -> ../../../../tmp/x in one layer and
// p/evil in the next. umoci resolves the parent inside the rootfs (".." at
// the root stays there) and writes tmp/x/evil; the mount shows the file
// there, and `ocimount cat` finds it through both paths: one rule for the
// merge, the mount and the commands.
func TestEscapingSymlinkParent(t *testing.T) {
	requireIntegration(t)
	dir := filepath.Join(t.TempDir(), "layout")
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.Symlink("p", "../../../../tmp/x"))},
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("p/evil", "evil\n", 0o644))},
	}})
	ref := umociRef(t, dir, "latest")
	if n := ref.Nodes["tmp/x/evil"]; n == nil {
		t.Fatalf("umoci did not write tmp/x/evil; the reference changed: %q", ref.Paths)
	}
	src := "oci:" + dir + ":latest"
	mnt := mountImage(t, src)
	got, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, ref, got, rootDirException, implicitDirException(nil))
	cache := t.TempDir()
	for _, p := range []string{"p/evil", "tmp/x/evil"} {
		if out := ocimountOK(t, "cat", "--cache-dir", cache, src, p); out != "evil\n" {
			t.Errorf("cat %s = %q", p, out)
		}
	}
	// Seen from the host, p/evil leads out of the mountpoint (as on any
	// extracted rootfs); inside the image, as `cat` sees it, it is
	// tmp/x/evil.
	if b, err := os.ReadFile(filepath.Join(mnt, "tmp/x/evil")); err != nil || string(b) != "evil\n" {
		t.Errorf("mount tmp/x/evil = %q, %v", b, err)
	}
}

// TestWhiteoutDirMatchesUmoci: layers holding a ".wh.X" directory (or
// file) with entries below it. umoci 0.4.7 takes the ".wh.X" entry for the
// whiteout of X and then creates what is below it, with ".wh.X" as an
// implied parent (0755 root, extraction-time mtime); a whiteout below a
// ".wh." directory hides only that lower path. The mount must show
// exactly umoci's tree.
func TestWhiteoutDirMatchesUmoci(t *testing.T) {
	requireIntegration(t)
	mt := tartest.MTime(time.Unix(1500000000, 0))
	lower := []tartest.Entry{tartest.Dir("d", 0o700, mt), tartest.File("d/old", "old", 0o644, mt), tartest.File("x", "x", 0o644, mt),
		tartest.Dir("a", 0o755, mt), tartest.Dir("a/b", 0o755, mt), tartest.File("a/b/k", "k", 0o644, mt),
		tartest.Dir(".wh.q", 0o755, mt), tartest.File(".wh.q/old", "q", 0o644, mt)}
	cases := map[string][]tartest.Entry{
		"dir-entry-and-child": {tartest.Dir(".wh.d", 0o711, tartest.Owner(5, 6), mt), tartest.File(".wh.d/child", "child", 0o600, mt)},
		"child-only":          {tartest.File(".wh.d/child", "child", 0o600, mt)},
		"whiteouts-below":     {tartest.File(".wh.d/.wh.child", "", 0o600, mt), tartest.File(".wh.x/.wh.y", "", 0o600, mt), tartest.File(".wh.q/.wh.old", "", 0o644, mt)},
		"file-entry-hardlink": {tartest.File(".wh.d", "", 0o644, mt), tartest.File(".wh.d/child", "c", 0o644, mt), tartest.Hardlink("hl", ".wh.d/child")},
		"deep":                {tartest.File("a/.wh.b/c/d", "deep", 0o644, mt)},
		"subdirs":             {tartest.Dir(".wh.a", 0o755, mt), tartest.Dir(".wh.a/sub", 0o750, mt), tartest.File(".wh.a/sub/z", "z", 0o644, mt)},
	}
	for name, upper := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{
				{Compression: tartest.Gzip, Tar: tartest.Tar(t, lower...)}, {Compression: tartest.Gzip, Tar: tartest.Tar(t, upper...)}}})
			ref := umociRef(t, dir, "latest")
			got, err := Snapshot(mountImage(t, "oci:"+dir+":latest"))
			if err != nil {
				t.Fatal(err)
			}
			// A directory entry named .wh.X is a whiteout, so a .wh.X
			// directory that appears is always an implied one: only its
			// mtime (the extraction time for umoci) is excused.
			impliedWh := func(path, field string, want, _ *Node) bool {
				return field == "mtime" && strings.HasPrefix(filepath.Base(path), ".wh.") && want != nil && want.Type == unix.S_IFDIR
			}
			requireSameTree(t, ref, got, rootDirException, implicitDirException([][]tartest.Entry{lower, upper}), umociTouchedParent(ref, lower, upper), impliedWh)
		})
	}
}

// umociTouchedParent: when umoci creates an implied directory (os.MkdirAll)
// inside a directory an earlier layer declared, that directory's mtime
// becomes the extraction time (it restores parents' mtimes after creating
// entries, not after MkdirAll). Excused: the mtime of a declared directory
// that has an undeclared child directory.
func umociTouchedParent(ref *Tree, layers ...[]tartest.Entry) Exception {
	declared := map[string]bool{".": true}
	for _, l := range layers {
		for _, e := range l {
			if e.Header != nil && e.Header.Typeflag == tar.TypeDir {
				declared[filepath.Clean(e.Header.Name)] = true
			}
		}
	}
	return func(path, field string, _, _ *Node) bool {
		if field != "mtime" {
			return false
		}
		for _, p := range ref.Paths {
			if filepath.Dir(p) == path && !declared[p] && ref.Nodes[p] != nil && ref.Nodes[p].Type == unix.S_IFDIR {
				return true
			}
		}
		return false
	}
}
