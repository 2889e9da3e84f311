package fs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	ocifs "github.com/ocimount/ocimount/fs"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// canMount reports whether this test can mount FUSE; with
// OCIMOUNT_INTEGRATION=1 a missing prerequisite is a failure.
func canMount(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	if why == "" {
		return
	}
	if os.Getenv("OCIMOUNT_INTEGRATION") == "1" {
		t.Fatalf("cannot mount FUSE: %s", why)
	}
	t.Skipf("cannot mount FUSE: %s", why)
}

func build(t *testing.T, c tartest.Compression, tarball []byte) overlay.Layer {
	t.Helper()
	blob := tartest.Compress(t, c, tarball)
	comp := map[tartest.Compression]layerindex.Compression{tartest.Uncompressed: layerindex.None, tartest.Gzip: layerindex.Gzip, tartest.Zstd: layerindex.Zstd}[c]
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(blob), comp, layerindex.Options{Span: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var content io.ReaderAt = bytes.NewReader(blob)
	if ix.Checkpoints != nil {
		content = ix.Checkpoints.NewReaderAt(bytes.NewReader(blob), layerindex.NewSpanCache(1<<20), string(ix.Digest))
	}
	return overlay.Layer{Index: ix, Content: content}
}

// fileLayer is a plain tar layer kept in a local file at an offset, as a
// blob inside an archive is, so reads take the splice path.
type fileLayer struct {
	f    *os.File
	base int64
}

func (l fileLayer) ReadAt(p []byte, off int64) (int, error) { return l.f.ReadAt(p, l.base+off) }
func (l fileLayer) File() (*os.File, int64)                 { return l.f, l.base }

func buildFile(t *testing.T, tarball []byte) overlay.Layer {
	t.Helper()
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(p, append(bytes.Repeat([]byte{'x'}, 777), tarball...), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return overlay.Layer{Index: ix, Content: fileLayer{f, 777}}
}

func mount(t *testing.T, layers ...overlay.Layer) string {
	t.Helper()
	tree, err := overlay.Merge(layers)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := ocifs.Mount(mnt, tree, ocifs.Options{FsName: "test", Debug: os.Getenv("OCIMOUNT_FUSE_DEBUG") != ""})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

func TestServe(t *testing.T) {
	canMount(t)
	big := make([]byte, 3<<20+123)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.IntN(16)) // compressible but not trivially
	}
	mt := time.Date(2020, 2, 29, 12, 34, 56, 123456789, time.UTC)
	capv := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	l0 := build(t, tartest.Gzip, tartest.Tar(t,
		tartest.Dir("etc", 0o755),
		tartest.File("etc/passwd", "root:x:0:0\n", 0o644, tartest.MTime(mt), tartest.Owner(70000, 4294967294)),
		tartest.File("etc/shadow", "secret\n", 0o000),
		tartest.FileBytes("big.bin", big, 0o644),
		tartest.File("suid", "x", 0o4755),
		tartest.Char("null", 1, 3),
		tartest.FIFO("fifo"),
		tartest.Symlink("link", "/etc/passwd"),
		tartest.File("cap", "c", 0o755, tartest.Xattr("security.capability", capv), tartest.Xattr("user.bin", "a\x00b\xff")),
	))
	l1 := build(t, tartest.Zstd, tartest.Tar(t,
		tartest.Whiteout("etc/shadow"),
		tartest.Hardlink("etc/passwd2", "etc/passwd"),
	))
	plain := make([]byte, 1<<20+5)
	for i := range plain {
		plain[i] = byte(i * 7)
	}
	l2 := buildFile(t, tartest.Tar(t, tartest.FileBytes("plain.bin", plain, 0o644), tartest.File("small", "hello", 0o644)))
	mnt := mount(t, l0, l1, l2)

	// Spliced from the backing file at the right offset.
	if got, err := os.ReadFile(filepath.Join(mnt, "plain.bin")); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("plain.bin: %v, equal=%v", err, bytes.Equal(got, plain))
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "small")); err != nil || string(got) != "hello" {
		t.Errorf("small = %q, %v", got, err)
	}

	ents, err := os.ReadDir(filepath.Join(mnt, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"passwd", "passwd2"}; !sort.StringsAreSorted(names) || len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("readdir etc = %v, want %v", names, want)
	}

	// Raw readdir lists "." and ".." too, as a disk filesystem does.
	df, err := os.Open(filepath.Join(mnt, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4096)
	nb, err := unix.ReadDirent(int(df.Fd()), raw)
	df.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, _, all := unix.ParseDirent(raw[:nb], -1, nil) // drops . and ..
	if got := fmt.Sprint(all); got != "[passwd passwd2]" {
		t.Errorf("dirents = %s", got)
	}
	// A linux_dirent64 name follows its d_type byte: DT_DIR (4) ".\0".
	if !bytes.Contains(raw[:nb], []byte{unix.DT_DIR, '.', 0}) || !bytes.Contains(raw[:nb], []byte{unix.DT_DIR, '.', '.', 0}) {
		t.Errorf("readdir of etc lacks . or ..")
	}

	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "etc/passwd"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(mnt, "etc/passwd2"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlinks: ino %d vs %d, nlink %d; want same ino, nlink 2", a.Ino, b.Ino, a.Nlink)
	}
	if a.Uid != 70000 || a.Gid != 4294967294 || a.Mode != syscall.S_IFREG|0o644 || a.Size != 11 {
		t.Errorf("passwd stat: uid %d gid %d mode %o size %d", a.Uid, a.Gid, a.Mode, a.Size)
	}
	if a.Mtim.Sec != mt.Unix() || a.Mtim.Nsec != int64(mt.Nanosecond()) {
		t.Errorf("mtime = %v, want %v", a.Mtim, mt)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "etc/shadow")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whited-out etc/shadow: %v, want ENOENT", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "null"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("null: %v mode %o rdev %d:%d", err, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := unix.Lstat(filepath.Join(mnt, "suid"), &st); err != nil || st.Mode != syscall.S_IFREG|0o4755 {
		t.Errorf("suid: %v mode %o", err, st.Mode)
	}
	if err := unix.Lstat(filepath.Join(mnt, "fifo"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Errorf("fifo: %v mode %o", err, st.Mode)
	}
	if tg, err := os.Readlink(filepath.Join(mnt, "link")); err != nil || tg != "/etc/passwd" {
		t.Errorf("readlink = %q, %v", tg, err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(mnt, "cap"), "security.capability", buf)
	if err != nil || string(buf[:n]) != capv {
		t.Errorf("security.capability = %q, %v", buf[:n], err)
	}
	n, err = unix.Lgetxattr(filepath.Join(mnt, "cap"), "user.bin", buf)
	if err != nil || string(buf[:n]) != "a\x00b\xff" {
		t.Errorf("user.bin = %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "cap"), "user.none", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("missing xattr: %v, want ENODATA", err)
	}
	n, err = unix.Llistxattr(filepath.Join(mnt, "cap"), buf)
	if err != nil || string(buf[:n]) != "security.capability\x00user.bin\x00" {
		t.Errorf("listxattr = %q, %v", buf[:n], err)
	}
	if _, err := os.OpenFile(filepath.Join(mnt, "big.bin"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for write: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create: %v, want EROFS", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Files == 0 {
		t.Errorf("statfs: %v files %d", err, sfs.Files)
	}

	// Concurrent readers at random offsets of a file spanning many gzip
	// checkpoints (64 KiB span) must all get the right bytes.
	want := sha256.Sum256(big)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mnt, "big.bin"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if g%2 == 0 {
				h := sha256.New()
				if _, err := io.Copy(h, f); err != nil {
					t.Error(err)
				}
				if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
					t.Errorf("reader %d: sequential content hash mismatch", g)
				}
				return
			}
			r := rand.New(rand.NewPCG(uint64(g), 9))
			p := make([]byte, 10000)
			for range 50 {
				off := r.Int64N(int64(len(big)))
				n, err := f.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(p[:n], big[off:off+int64(n)]) {
					t.Errorf("reader %d: wrong bytes at %d", g, off)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Files that start mid-page in a local backing file (every blob inside an
// archive, most files of a plain layer) must never come back truncated.
// go-fuse's splice path sizes its pipe in bytes; data that starts
// mid-page needs one page slot more, and the short splice was sent as a
// short read — the kernel took it for end of file (a 59,085-byte file of a
// docker-archive read back as 57,856 bytes).
func TestUnalignedBackingFile(t *testing.T) {
	canMount(t)
	r := rand.New(rand.NewPCG(3, 4))
	var entries []tartest.Entry
	var want [][]byte
	// Sizes whose pipe is exactly 16 pages (header + 15 data slots) at
	// many different offsets within a page.
	for i := range 64 {
		b := make([]byte, 57400+i*61+r.IntN(50))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		want = append(want, b)
		entries = append(entries, tartest.FileBytes(fmt.Sprintf("f%02d", i), b, 0o644))
	}
	mnt := mount(t, buildFile(t, tartest.Tar(t, entries...)))
	for i, w := range want {
		got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)))
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("f%02d (%d bytes): read %d bytes, err %v, equal %v", i, len(w), len(got), err, bytes.Equal(got, w))
		}
	}
}

// stuckContent is layer content whose reads wait (as for a stalled
// registry) until their context ends.
type stuckContent struct {
	entered chan struct{}
	ended   chan error
}

func (s *stuckContent) ReadAt(p []byte, off int64) (int, error) {
	return s.ReadAtContext(context.Background(), p, off)
}

func (s *stuckContent) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		s.ended <- ctx.Err()
		return 0, ctx.Err()
	case <-time.After(20 * time.Second):
		s.ended <- nil
		return 0, errors.New("not interrupted")
	}
}

// A read the kernel interrupts (the reader got a signal) stops waiting at
// once instead of holding the request until the wait ends.
func TestReadHonoursInterrupt(t *testing.T) {
	canMount(t)
	tarball := tartest.Tar(t, tartest.File("f", string(make([]byte, 64<<10)), 0o644))
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tarball), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stuck := &stuckContent{entered: make(chan struct{}, 1), ended: make(chan error, 16)}
	mnt := mount(t, overlay.Layer{Index: ix, Content: stuck})
	// O_DIRECT: a synchronous READ of the reader's own; a buffered read
	// may go out as background read-ahead, which no signal interrupts.
	cmd := exec.Command("dd", "if="+filepath.Join(mnt, "f"), "of=/dev/null", "bs=4096", "count=1", "iflag=direct")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck.entered:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the read never reached the layer content")
	}
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-stuck.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the read's wait ended with %v, want context.Canceled", err)
		}
		t.Logf("interrupted read returned after %v", time.Since(t0))
	case <-time.After(10 * time.Second):
		t.Fatal("an interrupted read kept waiting")
	}
	cmd.Wait()
}

// TestNoXattrsListsEmpty: an image without any xattr answers listxattr
// with an empty list on every path, as an extracted tree does (ENOTSUP made
// `tar --xattrs -c` and `getfattr -d` warn on every file), while getxattr
// keeps its fast path (the kernel stops asking after the first ENOSYS, so
// lookups of security.capability on exec or write cost no round trip).
func TestNoXattrsListsEmpty(t *testing.T) {
	canMount(t)
	mnt := mount(t, build(t, tartest.Gzip, tartest.Tar(t,
		tartest.Dir("d", 0o755), tartest.File("d/f", "f", 0o644), tartest.Symlink("s", "d/f"), tartest.FIFO("p"))))
	buf := make([]byte, 256)
	for _, p := range []string{".", "d", "d/f", "s", "p"} {
		if n, err := unix.Llistxattr(filepath.Join(mnt, p), buf); n != 0 || err != nil {
			t.Errorf("llistxattr(%s) = %d, %v; want 0, nil", p, n, err)
		}
		if n, err := unix.Llistxattr(filepath.Join(mnt, p), nil); n != 0 || err != nil {
			t.Errorf("llistxattr(%s, size 0) = %d, %v; want 0, nil", p, n, err)
		}
		// EOPNOTSUPP comes from the kernel once the server said ENOSYS;
		// user.* on symlinks and FIFOs is ENODATA before any of that.
		want := unix.EOPNOTSUPP
		if p == "s" || p == "p" {
			want = unix.ENODATA
		}
		if _, err := unix.Lgetxattr(filepath.Join(mnt, p), "user.x", buf); !errors.Is(err, want) {
			t.Errorf("lgetxattr(%s, user.x): %v, want %v", p, err, want)
		}
	}
	for _, tool := range [][]string{
		{"getfattr", "-R", "-d", "-m", "-", mnt},
		{"tar", "--xattrs", "--xattrs-include=*", "-cf", "/dev/null", "-C", mnt, "."},
	} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			if os.Getenv("OCIMOUNT_INTEGRATION") == "1" {
				t.Fatalf("%s missing", tool[0])
			}
			continue
		}
		out, err := exec.Command(tool[0], tool[1:]...).CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Errorf("%s: %v, output:\n%s", tool, err, out)
		}
	}
}
