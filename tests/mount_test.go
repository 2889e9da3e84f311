package tests

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
	"golang.org/x/sys/unix"
)

// TestMountVariants mounts every encoding and container of the fixture
// image, each by an explicit transport and by a bare path, and compares the
// tree with umoci's extraction of the gzip image (same diff_ids, so the
// same tree: umoci 0.4 cannot read zstd layers itself).
func TestMountVariants(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	d := f.Dir
	cases := []struct{ name, src string }{
		{"oci-gzip", "oci:" + d + "/gzip:latest"},
		{"oci-gzip-bare", d + "/gzip"},
		{"oci-gzip-notag", "oci:" + d + "/gzip"},
		{"oci-zstd", "oci:" + d + "/zstd:latest"},
		{"oci-zstd-bare", d + "/zstd"},
		{"oci-uncompressed", "oci:" + d + "/tar:latest"},
		{"oci-uncompressed-bare", d + "/tar"},
		{"oci-archive", "oci-archive:" + d + "/oci-archive.tar:latest"},
		{"oci-archive-bare", d + "/oci-archive.tar"},
		{"docker-archive", "docker-archive:" + d + "/docker-archive.tar"},
		{"docker-archive-ref", "docker-archive:" + d + "/docker-archive.tar:ocimount/test:latest"},
		{"docker-archive-bare", d + "/docker-archive.tar"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mnt := mountImage(t, c.src)
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTree(t, ref, got)
		})
	}
}

// TestShorthand: `ocimount SOURCE MOUNTPOINT` is `ocimount mount ...`.
func TestShorthand(t *testing.T) {
	f := images(t)
	mnt := newMountpoint(t)
	r := run(t, 2*time.Minute, "--cache-dir", t.TempDir(), f.Dir+"/gzip", mnt)
	if r.code != 0 || findMount(t, mnt) == nil {
		t.Fatalf("shorthand did not mount: %s", r)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
		t.Fatalf("etc/hostname = %q, %v", b, err)
	}
}

// TestExecFromMount runs the static busybox straight from the mount, and a
// shell in a chroot of it (applets are absolute symlinks to /bin/busybox,
// which only resolve inside the image).
func TestExecFromMount(t *testing.T) {
	f := images(t)
	mnt := mountImage(t, f.Dir+"/gzip")
	out, err := exec.Command(filepath.Join(mnt, "bin/busybox"), "echo", "hi").CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("busybox echo hi: %q, %v", out, err)
	}
	if err := exec.Command(filepath.Join(mnt, "bin/busybox"), "true").Run(); err != nil {
		t.Fatalf("busybox true: %v", err)
	}
	if _, err := exec.LookPath("chroot"); err != nil {
		return
	}
	script := `echo $((6*7)); /usr/bin/awk 'BEGIN{print "awk"}'; cat /data/dir2file; ls /data/file2dir; /usr/bin/wc -c < /data/seq.txt`
	out, err = exec.Command("chroot", mnt, "/bin/sh", "-c", script).CombinedOutput()
	want := "42\nawk\nwas a directory\ninside\n12488896\n"
	if err != nil || string(out) != want {
		t.Fatalf("chroot sh: %v\ngot:\n%s\nwant:\n%s", err, out, want)
	}
}

// TestMountOptions: the mount is read-only, nosuid and nodev unless asked,
// and --allow-other / --suid / --dev change exactly that.
func TestMountOptions(t *testing.T) {
	f := images(t)
	t.Run("defaults", func(t *testing.T) {
		mnt := mountImage(t, f.Dir+"/gzip")
		m := findMount(t, mnt)
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if !m.hasOpt(o) {
				t.Errorf("mount options %q lack %s", m.Options, o)
			}
		}
		if m.hasSuperOpt("allow_other") {
			t.Errorf("allow_other without --allow-other: %q", m.SuperOptions)
		}
		if !strings.HasPrefix(m.FSType, "fuse") {
			t.Errorf("fstype %q is not FUSE", m.FSType)
		}
		// nodev: opening the image's char device 1,3 must not reach the
		// host's /dev/null.
		if fd, err := os.Open(filepath.Join(mnt, "special/null")); err == nil {
			fd.Close()
			t.Error("opened a device node on a nodev mount")
		}
	})
	t.Run("suid-dev-allow-other", func(t *testing.T) {
		mnt := mountImage(t, f.Dir+"/gzip", "--suid", "--dev", "--allow-other")
		m := findMount(t, mnt)
		if !m.hasOpt("ro") || m.hasOpt("nosuid") || m.hasOpt("nodev") {
			t.Errorf("mount options %q: want ro without nosuid/nodev", m.Options)
		}
		if !m.hasSuperOpt("allow_other") {
			t.Errorf("super options %q lack allow_other", m.SuperOptions)
		}
		fd, err := os.Open(filepath.Join(mnt, "special/null"))
		if err != nil {
			t.Fatalf("open char device 1,3 with --dev: %v", err)
		}
		defer fd.Close()
		if n, err := fd.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("reading the 1,3 device: n=%d err=%v, want EOF like /dev/null", n, err)
		}
	})
}

// TestUnmountMethods: ocimount umount, umount(8) and fusermount3 -u all
// take the mount down, and the server process goes away with it.
func TestUnmountMethods(t *testing.T) {
	f := images(t)
	methods := []struct {
		name string
		cmd  func(mnt string) *exec.Cmd
	}{
		{"ocimount-umount", func(mnt string) *exec.Cmd { return exec.Command(ocimountBin(t), "umount", mnt) }},
		{"umount", func(mnt string) *exec.Cmd { return exec.Command("umount", mnt) }},
		{"fusermount3", func(mnt string) *exec.Cmd { return exec.Command("fusermount3", "-u", mnt) }},
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			mnt := mountImage(t, f.Dir+"/gzip")
			pids := serverPIDs(t, mnt)
			if out, err := m.cmd(mnt).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", m.name, err, out)
			}
			if !waitFor(5*time.Second, func() bool { return findMount(t, mnt) == nil }) {
				t.Fatalf("%s mount still present after %s", mnt, m.name)
			}
			ents, err := os.ReadDir(mnt)
			if err != nil || len(ents) != 0 {
				t.Errorf("mountpoint after unmount: %d entries, %v", len(ents), err)
			}
			for _, pid := range pids {
				if !waitFor(10*time.Second, func() bool { return !pidAlive(pid) }) {
					t.Errorf("server pid %d still running 10s after %s", pid, m.name)
				}
			}
		})
	}
	t.Run("umount-not-mounted", func(t *testing.T) {
		r := run(t, 30*time.Second, "umount", t.TempDir())
		if r.code == 0 {
			t.Errorf("ocimount umount of a plain directory succeeded: %s", r)
		}
	})
}

// TestStaleMountAfterSIGKILL: a killed server leaves a dead mount ("transport
// endpoint is not connected"); ocimount umount must clean it up.
func TestStaleMountAfterSIGKILL(t *testing.T) {
	f := images(t)
	check := func(t *testing.T, mnt string) {
		t.Helper()
		// statfs always reaches the server (stat may be answered from the
		// kernel's attribute cache), so it shows a dead connection.
		var sfs unix.Statfs_t
		if !waitFor(5*time.Second, func() bool {
			return errors.Is(unix.Statfs(mnt, &sfs), syscall.ENOTCONN)
		}) {
			err := unix.Statfs(mnt, &sfs)
			_, rerr := os.ReadFile(filepath.Join(mnt, "etc/passwd"))
			t.Errorf("statfs of a mount whose server was killed: %v, want ENOTCONN (reading a file: %v)", err, rerr)
		}
		if findMount(t, mnt) == nil {
			t.Fatal("mount vanished by itself; the test cannot check stale-mount cleanup")
		}
		r := run(t, 30*time.Second, "umount", mnt)
		if r.code != 0 {
			t.Errorf("ocimount umount of a stale mount: %s", r)
		}
		if findMount(t, mnt) != nil {
			t.Fatal("stale mount still present after ocimount umount")
		}
		if _, err := os.Stat(mnt); err != nil {
			t.Errorf("mountpoint unusable after cleanup: %v", err)
		}
	}
	t.Run("foreground", func(t *testing.T) {
		mnt := newMountpoint(t)
		srv := startForeground(t, f.Dir+"/gzip", mnt)
		srv.cmd.Process.Signal(syscall.SIGKILL)
		if _, ok := srv.wait(10 * time.Second); !ok {
			t.Fatal("server survived SIGKILL")
		}
		check(t, mnt)
	})
	t.Run("daemon", func(t *testing.T) {
		mnt := mountImage(t, f.Dir+"/gzip")
		pids := serverPIDs(t, mnt)
		if len(pids) == 0 {
			t.Skip("cannot find the daemon's pid by its command line")
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		check(t, mnt)
	})
}

// TestForegroundSignals: in --foreground mode SIGTERM and SIGINT unmount and
// exit.
func TestForegroundSignals(t *testing.T) {
	f := images(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			mnt := newMountpoint(t)
			srv := startForeground(t, f.Dir+"/gzip", mnt)
			if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
				t.Fatalf("foreground mount not serving: %q %v", b, err)
			}
			srv.cmd.Process.Signal(sig)
			err, ok := srv.wait(15 * time.Second)
			if !ok {
				t.Fatalf("still running 15s after %v", sig)
			}
			if findMount(t, mnt) != nil {
				t.Errorf("mount left behind after %v", sig)
			}
			if err != nil {
				t.Errorf("exit after %v: %v (want status 0)\n%s", sig, err, srv.output())
			}
		})
	}
}

// TestConcurrentReaders: several goroutines hashing every file, and others
// doing random-offset reads in the big files (which crosses compressed
// checkpoints in both directions), all get the reference bytes.
func TestConcurrentReaders(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	var files []string
	for _, p := range ref.Paths {
		if ref.Nodes[p].Type == unix.S_IFREG {
			files = append(files, p)
		}
	}
	big := []string{"data/seq.txt", "data/random2.bin", "special/ping"}
	bigData := map[string][]byte{}
	for _, p := range big {
		b, err := os.ReadFile(filepath.Join(f.Ref, p))
		if err != nil {
			t.Fatal(err)
		}
		bigData[p] = b
	}
	for _, variant := range []string{"gzip", "zstd"} {
		t.Run(variant, func(t *testing.T) {
			mnt := mountImage(t, f.Dir+"/"+variant)
			var wg sync.WaitGroup
			errs := make(chan string, 100)
			report := func(s string) {
				select {
				case errs <- s:
				default:
				}
			}
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					order := append([]string{}, files...)
					rand.New(rand.NewSource(int64(g))).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
					for _, p := range order {
						sum, err := hashFile(filepath.Join(mnt, p))
						if err != nil || sum != ref.Nodes[p].SHA256 {
							report(p + ": " + sum + " " + errString(err))
						}
					}
				}()
			}
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(100 + g)))
					for i := 0; i < 150; i++ {
						p := big[rng.Intn(len(big))]
						want := bigData[p]
						off := rng.Int63n(int64(len(want)))
						n := rng.Intn(256 << 10)
						if off+int64(n) > int64(len(want)) {
							n = len(want) - int(off)
						}
						if err := readAtCheck(filepath.Join(mnt, p), off, want[off:off+int64(n)]); err != nil {
							report(err.Error())
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			var all []string
			for e := range errs {
				all = append(all, e)
			}
			if len(all) > 0 {
				t.Errorf("%d+ wrong reads, e.g.:\n  %s", len(all), strings.Join(all[:min(len(all), 20)], "\n  "))
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func readAtCheck(p string, off int64, want []byte) error { return readAt(p, off, want, false) }

// readAtCheckRandom is readAtCheck with the kernel's read-ahead off for
// the file (POSIX_FADV_RANDOM), so the mount sees just this read, not a
// sequential run that starts its own read-ahead: for tests that count
// what a read fetches.
func readAtCheckRandom(p string, off int64, want []byte) error { return readAt(p, off, want, true) }

func readAt(p string, off int64, want []byte, random bool) error {
	fd, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fd.Close()
	if random {
		if err := unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
			return err
		}
	}
	got := make([]byte, len(want))
	n, err := fd.ReadAt(got, off)
	if err != nil && !(err == io.EOF && n == len(want)) {
		return errors.New(p + ": ReadAt: " + err.Error())
	}
	if !bytes.Equal(got, want) {
		return errors.New(p + ": wrong bytes at offset " + strconv.FormatInt(off, 10))
	}
	return nil
}

// TestReadOnly: every kind of modification fails with EROFS.
func TestReadOnly(t *testing.T) {
	f := images(t)
	mnt := mountImage(t, f.Dir+"/gzip")
	p := func(s string) string { return filepath.Join(mnt, s) }
	ops := []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(p("newfile"), nil, 0o644) }},
		{"open-wronly", func() error {
			fd, err := os.OpenFile(p("etc/hostname"), os.O_WRONLY, 0)
			if err == nil {
				fd.Close()
			}
			return err
		}},
		{"open-rdwr", func() error {
			fd, err := os.OpenFile(p("etc/hostname"), os.O_RDWR, 0)
			if err == nil {
				fd.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(p("etc/hostname"), 0) }},
		{"mkdir", func() error { return os.Mkdir(p("newdir"), 0o755) }},
		{"unlink", func() error { return os.Remove(p("etc/hostname")) }},
		{"rmdir", func() error { return unix.Rmdir(p("special/emptydir")) }},
		{"rename", func() error { return os.Rename(p("etc/hostname"), p("etc/hostname2")) }},
		{"symlink", func() error { return os.Symlink("x", p("newlink")) }},
		{"link", func() error { return os.Link(p("etc/hostname"), p("etc/hl")) }},
		{"chmod", func() error { return os.Chmod(p("etc/hostname"), 0o600) }},
		{"chown", func() error { return os.Lchown(p("etc/hostname"), 1, 1) }},
		{"utimes", func() error { return os.Chtimes(p("etc/hostname"), time.Now(), time.Now()) }},
		{"setxattr", func() error { return unix.Lsetxattr(p("etc/hostname"), "user.x", []byte("1"), 0) }},
		{"removexattr", func() error { return unix.Lremovexattr(p("special/xattrs"), "user.text") }},
		{"mknod", func() error { return unix.Mkfifo(p("newfifo"), 0o644) }},
	}
	for _, o := range ops {
		if err := o.op(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: got %v, want EROFS", o.name, err)
		}
	}
}

// TestCacheReuse: a second mount with the same cache dir (sequentially and
// while the first is still mounted) serves the same tree.
func TestCacheReuse(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	cache := t.TempDir()
	mountWith := func() string {
		mnt := newMountpoint(t)
		r := run(t, 2*time.Minute, "mount", "--cache-dir", cache, f.Dir+"/zstd", mnt)
		if r.code != 0 || findMount(t, mnt) == nil {
			t.Fatalf("mount with shared cache: %s", r)
		}
		return mnt
	}
	first := mountWith()
	second := mountWith()
	for _, mnt := range []string{first, second} {
		got, err := Snapshot(mnt)
		if err != nil {
			t.Fatal(err)
		}
		requireSameTree(t, ref, got)
	}
	if r := run(t, 30*time.Second, "umount", first); r.code != 0 {
		t.Fatal(r)
	}
	third := mountWith()
	got, err := Snapshot(third)
	if err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, ref, got)
}

// TestMountReleasesCallerPipes: `out=$(ocimount mount ...)` must return, so
// the daemon must not keep the caller's stdout/stderr open.
func TestMountReleasesCallerPipes(t *testing.T) {
	f := images(t)
	mnt := newMountpoint(t)
	cmd := exec.Command(ocimountBin(t), "mount", "--cache-dir", t.TempDir(), f.Dir+"/gzip", mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out // pipes, unlike run()
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		t.Fatal("ocimount mount exited but its daemon kept the caller's stdout/stderr pipe open")
	}
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, out.String())
	}
	if findMount(t, mnt) == nil {
		t.Fatal("not mounted")
	}
}

// TestPlatform picks one image of a multi-platform index.
func TestPlatform(t *testing.T) {
	requireIntegration(t)
	dir := multiPlatformLayout(t)
	t.Run("default", func(t *testing.T) {
		mnt := mountImage(t, "oci:"+dir+":multi")
		if b, _ := os.ReadFile(filepath.Join(mnt, "arch")); string(b) != runtime.GOARCH {
			t.Errorf("default platform picked %q, want host %q", b, runtime.GOARCH)
		}
	})
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			mnt := mountImage(t, "oci:"+dir+":multi", "--platform", "linux/"+arch)
			if b, _ := os.ReadFile(filepath.Join(mnt, "arch")); string(b) != arch {
				t.Errorf("--platform linux/%s picked %q", arch, b)
			}
		})
	}
	t.Run("absent", func(t *testing.T) {
		mnt := newMountpoint(t)
		r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), "--platform", "linux/s390x", "oci:"+dir+":multi", mnt)
		if r.code == 0 || !strings.Contains(r.stderr, "s390x") {
			t.Errorf("want failure naming linux/s390x: %s", r)
		}
		if findMount(t, mnt) != nil {
			t.Error("mount left behind")
		}
	})
}

// TestCorruptCache: whatever ocimount keeps in --cache-dir, damaging it
// between mounts must give either a correct mount or a clean failure, never
// wrong content.
func TestCorruptCache(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	cache := t.TempDir()
	src := f.Dir + "/gzip"
	mnt := newMountpoint(t)
	if r := run(t, 2*time.Minute, "mount", "--cache-dir", cache, src, mnt); r.code != 0 {
		t.Fatal(r)
	}
	if _, err := Snapshot(mnt); err != nil { // read everything so caches fill
		t.Fatal(err)
	}
	if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
		t.Fatal(r)
	}
	var damaged int
	filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || strings.HasSuffix(p, ".log") || fi.Size() == 0 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		// Flip bytes through the file, then cut it short.
		for i := 0; i < len(b); i += 997 {
			b[i] ^= 0x5a
		}
		os.WriteFile(p, b[:len(b)*3/4], fi.Mode())
		damaged++
		return nil
	})
	t.Logf("damaged %d cache files", damaged)
	r := run(t, 2*time.Minute, "mount", "--cache-dir", cache, src, mnt)
	if r.code != 0 {
		if findMount(t, mnt) != nil {
			t.Fatalf("failed but left a mount: %s", r)
		}
		t.Logf("clean failure on a damaged cache: %s", r.stderr)
		return
	}
	got, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, ref, got)
}

// TestRelativePaths: relative SOURCE, MOUNTPOINT and --cache-dir are
// relative to the caller's directory, even though the server daemonises
// (and may chdir); umount takes a relative path with a trailing slash.
func TestRelativePaths(t *testing.T) {
	requireIntegration(t)
	work := t.TempDir()
	tartest.WriteOCILayout(t, filepath.Join(work, "layout"), tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("hello", "relative\n", 0o644))}}})
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forceUnmount(t, mnt) })
	r := runIn(t, work, 2*time.Minute, "mount", "--cache-dir", "cache", "layout", "mnt")
	if r.code != 0 || findMount(t, mnt) == nil {
		t.Fatalf("relative mount: %s", r)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "relative\n" {
		t.Errorf("hello = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(work, "cache")); err != nil {
		t.Errorf("relative --cache-dir not created in the caller's directory: %v", err)
	}
	if r := runIn(t, work, 30*time.Second, "umount", "mnt/"); r.code != 0 || findMount(t, mnt) != nil {
		t.Errorf("relative umount with trailing slash: %s", r)
	}
}

// TestOtherUsers: without --allow-other only root (the mounter) sees the
// tree; with it, other users get the image's permissions enforced, not a
// free pass (a mode 000 file stays unreadable to them).
func TestOtherUsers(t *testing.T) {
	f := images(t)
	asNobody := func(args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(err.Error() + ": " + strings.TrimSpace(string(out)))
		}
		return nil
	}
	// t.TempDir() directories are 0700; let nobody reach the mountpoint.
	traversable := func(mnt string) {
		for d := filepath.Dir(mnt); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
	}
	t.Run("without-allow-other", func(t *testing.T) {
		mnt := mountImage(t, f.Dir+"/gzip")
		traversable(mnt)
		if err := asNobody("/bin/cat", filepath.Join(mnt, "etc/hostname")); err == nil {
			t.Error("another user read the mount without --allow-other")
		}
	})
	t.Run("allow-other", func(t *testing.T) {
		mnt := mountImage(t, f.Dir+"/gzip", "--allow-other")
		traversable(mnt)
		if err := asNobody("/bin/cat", filepath.Join(mnt, "etc/hostname")); err != nil {
			t.Errorf("other user cannot read a 0644 file with --allow-other: %v", err)
		}
		for _, p := range []string{"special/mode000", "special/dir000/f"} {
			if err := asNobody("/bin/cat", filepath.Join(mnt, p)); err == nil {
				t.Errorf("other user read %s despite its permissions", p)
			}
		}
		if err := asNobody("/bin/ls", filepath.Join(mnt, "root")); err == nil {
			t.Error("other user listed the image's 0700 /root")
		}
	})
}

// TestInodeStability: inode numbers survive the kernel forgetting its
// inodes (FUSE FORGET), so tools that remember st_ino across calls (tar,
// rsync -H, find -samefile, du) stay correct.
func TestInodeStability(t *testing.T) {
	f := images(t)
	mnt := mountImage(t, f.Dir+"/gzip")
	paths := []string{"etc/hostname", "special/hl1", "special/sub/hl3", "data/hl_to_lower_gnutar", "data/lowerfile", "usr/share", "bin/busybox"}
	before := map[string]uint64{}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
			t.Fatal(err)
		}
		before[p] = st.Ino
	}
	// Drop dentries and inodes (not page cache) so the kernel sends FORGET
	// and looks everything up again.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Skipf("cannot drop caches: %v", err)
	}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino != before[p] {
			t.Errorf("%s: inode %d became %d after the kernel forgot it", p, before[p], st.Ino)
		}
	}
}
