package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUmountRefusesForeignMount: `ocimount umount` takes down ocimount's
// mounts only; on anything else it names the path and what is mounted
// there, exits 1 and leaves it alone (issue #10).
func TestUmountRefusesForeignMount(t *testing.T) {
	requireIntegration(t)
	for _, name := range []string{"plain", "with space"} {
		t.Run(name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			f := mountTmpfs(t, d)
			for _, args := range [][]string{{"umount", d}, {"umount", "--lazy", d}, {"unmount", d + "/"}} {
				r := run(t, 30*time.Second, args...)
				if r.code != 1 || !strings.Contains(r.stderr, d) || !strings.Contains(r.stderr, "tmpfs") {
					t.Errorf("want exit 1 and a message naming %s and tmpfs: %s", d, r)
				}
				requireTmpfsIntact(t, d, f)
			}
		})
	}
	// ocimount's own mount is still unmounted, also at a path that
	// mountinfo escapes.
	t.Run("ours-escaped-path", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), `a b\c`)
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { forceUnmount(t, mnt) })
		if r := run(t, 2*time.Minute, "mount", "--cache-dir", t.TempDir(), bundleImage(t), mnt); r.code != 0 {
			t.Fatalf("mount: %s", r)
		}
		if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
			t.Fatalf("umount: %s", r)
		}
		if m := findMount(t, mnt); m != nil {
			t.Errorf("still mounted: %+v", m)
		}
	})
}

// TestBundleRemoveRefusesForeignMount: `bundle --remove` and `umount DIR`
// unmount only what the bundle mounted and never delete through someone
// else's mount, whatever the state file says.
func TestBundleRemoveRefusesForeignMount(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	refused := func(t *testing.T, dir, where string) {
		t.Helper()
		for _, args := range [][]string{{"bundle", "--remove", dir}, {"bundle", "--remove", "--lazy", dir}, {"umount", dir}} {
			r := run(t, time.Minute, args...)
			if r.code != 1 || !strings.Contains(r.stderr, where) || !strings.Contains(r.stderr, "tmpfs") {
				t.Errorf("want exit 1 and a message naming %s and tmpfs: %s", where, r)
			}
		}
	}

	// The FUSE mount was taken off (`ocimount umount DIR`), then someone
	// mounted a tmpfs on the empty rootfs.
	t.Run("tmpfs-on-rootfs", func(t *testing.T) {
		dir := newBundleDir(t)
		makeBundle(t, src, dir)
		if r := run(t, time.Minute, "umount", dir); r.code != 0 {
			t.Fatalf("umount: %s", r)
		}
		rootfs := filepath.Join(dir, "rootfs")
		f := mountTmpfs(t, rootfs)
		refused(t, dir, rootfs)
		requireTmpfsIntact(t, rootfs, f)
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
			t.Errorf("a refused --remove deleted files: %v", err)
		}
		if err := unix.Unmount(rootfs, 0); err != nil {
			t.Fatal(err)
		}
		if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
			t.Fatalf("remove once the tmpfs is gone: %s", r)
		}
	})

	// A tmpfs stacked on the live FUSE mount: neither comes off.
	t.Run("tmpfs-over-fuse", func(t *testing.T) {
		dir := newBundleDir(t)
		makeBundle(t, src, dir)
		rootfs := filepath.Join(dir, "rootfs")
		f := mountTmpfs(t, rootfs)
		refused(t, dir, rootfs)
		requireTmpfsIntact(t, rootfs, f)
		if ms := mountsAt(t, rootfs); len(ms) != 2 || ms[0].FSType != "fuse.ocimount" {
			t.Errorf("mounts at rootfs: %+v, want the FUSE mount under the tmpfs", ms)
		}
		if err := unix.Unmount(rootfs, 0); err != nil {
			t.Fatal(err)
		}
		if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
			t.Fatalf("remove once the tmpfs is gone: %s", r)
		}
		requireNothingMounted(t, dir)
	})

	// Something mounted inside upper/ (which --remove deletes
	// recursively): nothing in it is deleted.
	t.Run("mount-inside-upper", func(t *testing.T) {
		dir := newBundleDir(t)
		makeBundle(t, src, dir, "--writable")
		if r := run(t, time.Minute, "umount", dir); r.code != 0 {
			t.Fatalf("umount: %s", r)
		}
		vol := filepath.Join(dir, "upper", "vol")
		if err := os.Mkdir(vol, 0o755); err != nil {
			t.Fatal(err)
		}
		f := mountTmpfs(t, vol)
		for _, args := range [][]string{{"bundle", "--remove", dir}, {"bundle", "--remove", "--lazy", dir}} {
			r := run(t, time.Minute, args...)
			if r.code != 1 || !strings.Contains(r.stderr, vol) {
				t.Errorf("want exit 1 and a message naming %s: %s", vol, r)
			}
			requireTmpfsIntact(t, vol, f)
		}
	})

	// A directory that merely looks like a bundle (a state file, a
	// rootfs with someone's tmpfs on it).
	t.Run("lookalike", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "fake")
		rootfs := filepath.Join(dir, "rootfs")
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			t.Fatal(err)
		}
		st, _ := json.Marshal(map[string]any{"version": 1, "source": "x", "mounts": []string{"rootfs"}, "created": []string{"rootfs", "config.json"}})
		if err := os.WriteFile(filepath.Join(dir, ".ocimount-bundle.json"), st, 0o644); err != nil {
			t.Fatal(err)
		}
		f := mountTmpfs(t, rootfs)
		refused(t, dir, rootfs)
		requireTmpfsIntact(t, rootfs, f)
	})
}

// TestUmountHiddenMount: an ocimount mount whose parent was covered since
// (a tmpfs moved over a directory above it) is still listed in mountinfo
// at its path, but a lookup of that path — and umount2 — reach whatever
// is visible there now. `ocimount umount PATH` unmounted that, someone
// else's tmpfs, because it took the last mount listed at the path for the
// one on top.
func TestUmountHiddenMount(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	// A private tmpfs to play in: mount --move needs unshared parents.
	sand := t.TempDir()
	if err := unix.Mount("none", sand, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sand, unix.MNT_DETACH) })
	if err := unix.Mount("", sand, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	p, x := filepath.Join(sand, "p"), filepath.Join(sand, "s", "x")
	mnt := filepath.Join(x, "mnt")
	for _, d := range []string{p, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The tmpfs mounts first: mountinfo lists mounts in the order they
	// were made, so the FUSE mount comes last at mnt.
	if err := unix.Mount("none", p, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(p, "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := mountTmpfs(t, filepath.Join(p, "mnt"))
	if r := run(t, 2*time.Minute, "mount", "--cache-dir", t.TempDir(), src, mnt); r.code != 0 {
		t.Fatalf("mount: %s", r)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) }) // the hidden one, once x is gone
	if err := unix.Mount(p, x, "", unix.MS_MOVE, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(x, unix.MNT_DETACH) })
	f = filepath.Join(mnt, filepath.Base(f))
	if ms := mountsAt(t, mnt); len(ms) != 2 {
		t.Fatalf("mounts at %s: %+v, want the hidden FUSE mount and the tmpfs", mnt, ms)
	}
	r := run(t, 30*time.Second, "umount", mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "tmpfs") {
		t.Errorf("want exit 1 and a message naming the tmpfs: %s", r)
	}
	requireTmpfsIntact(t, mnt, f)
}

// TestUmountRefusesMountInside: something mounted on a directory of an
// ocimount mount would go with it: a lazy unmount detaches the whole
// subtree. `ocimount umount --lazy` did that to someone's tmpfs (and the
// plain umount's "busy" error suggested --lazy); both now refuse, naming
// the mount inside.
func TestUmountRefusesMountInside(t *testing.T) {
	requireIntegration(t)
	mnt := mountImage(t, bundleImage(t))
	des, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	inner := ""
	for _, de := range des {
		if de.IsDir() {
			inner = filepath.Join(mnt, de.Name())
			break
		}
	}
	if inner == "" {
		t.Fatal("the image has no directory at its root")
	}
	f := mountTmpfs(t, inner)
	for _, args := range [][]string{{"umount", mnt}, {"umount", "--lazy", mnt}} {
		r := run(t, 30*time.Second, args...)
		if r.code != 1 || !strings.Contains(r.stderr, inner) || !strings.Contains(r.stderr, "tmpfs") {
			t.Errorf("want exit 1 and a message naming %s and tmpfs: %s", inner, r)
		}
		requireTmpfsIntact(t, inner, f)
	}
	if err := unix.Unmount(inner, 0); err != nil {
		t.Fatal(err)
	}
	if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
		t.Fatalf("umount once the tmpfs is gone: %s", r)
	}
}
