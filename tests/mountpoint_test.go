package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMountRefusesOccupiedMountpoint: mount does not stack on a mount
// point or cover a non-empty directory unless --force says so.
func TestMountRefusesOccupiedMountpoint(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	mount := func(t *testing.T, mnt string, flags ...string) result {
		t.Helper()
		args := append([]string{"mount", "--cache-dir", t.TempDir()}, flags...)
		return run(t, 2*time.Minute, append(args, src, mnt)...)
	}

	t.Run("tmpfs", func(t *testing.T) {
		mnt := newMountpoint(t)
		f := mountTmpfs(t, mnt)
		r := mount(t, mnt)
		if r.code != 1 || !strings.Contains(r.stderr, mnt) || !strings.Contains(r.stderr, "tmpfs") || !strings.Contains(r.stderr, "--force") {
			t.Errorf("want exit 1 and a message naming %s, tmpfs and --force: %s", mnt, r)
		}
		requireTmpfsIntact(t, mnt, f)
		if n := len(mountsAt(t, mnt)); n != 1 {
			t.Errorf("%d mounts at %s, want 1", n, mnt)
		}
	})

	t.Run("mounted-twice", func(t *testing.T) {
		mnt := mountImage(t, src)
		for _, flags := range [][]string{nil, {"--foreground"}} {
			// Short: a foreground mount that succeeded would serve
			// until killed.
			args := append([]string{"mount", "--cache-dir", t.TempDir()}, flags...)
			r := run(t, 20*time.Second, append(args, src, mnt)...)
			if r.code != 1 || !strings.Contains(r.stderr, "already a mount point") || !strings.Contains(r.stderr, "fuse.ocimount") {
				t.Errorf("second mount %v: %s", flags, r)
			}
		}
		if ms := mountsAt(t, mnt); len(ms) != 1 {
			t.Errorf("mounts at %s: %+v, want exactly one", mnt, ms)
		}
		if !waitFor(10*time.Second, func() bool { return len(serverPIDs(t, mnt)) == 1 }) {
			t.Errorf("server processes for %s: %v, want one", mnt, serverPIDs(t, mnt))
		}
	})

	t.Run("not-empty", func(t *testing.T) {
		mnt := newMountpoint(t)
		mine := filepath.Join(mnt, "mine.txt")
		if err := os.WriteFile(mine, []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := mount(t, mnt)
		if r.code != 1 || !strings.Contains(r.stderr, mnt) || !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "--force") {
			t.Errorf("want exit 1 and a 'not empty' message naming %s and --force: %s", mnt, r)
		}
		if m := findMount(t, mnt); m != nil {
			t.Fatalf("mounted anyway: %+v", m)
		}
		// --force covers it; unmounting shows it again.
		if r := mount(t, mnt, "--force"); r.code != 0 {
			t.Fatalf("mount --force: %s", r)
		}
		if _, err := os.Stat(filepath.Join(mnt, "srv/app/hello.txt")); err != nil {
			t.Errorf("the image is not at %s: %v", mnt, err)
		}
		if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
			t.Fatalf("umount: %s", r)
		}
		if b, err := os.ReadFile(mine); err != nil || string(b) != "mine\n" {
			t.Errorf("%s after unmount: %q, %v", mine, b, err)
		}
	})

	t.Run("force-stacks", func(t *testing.T) {
		mnt := mountImage(t, src)
		if r := mount(t, mnt, "--force"); r.code != 0 {
			t.Fatalf("mount --force on a mount point: %s", r)
		}
		if n := len(mountsAt(t, mnt)); n != 2 {
			t.Errorf("%d mounts at %s, want 2", n, mnt)
		}
		for i := 0; i < 2; i++ {
			if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
				t.Fatalf("umount %d: %s", i, r)
			}
		}
	})

	// Two mounts started together on one empty directory: exactly one
	// wins, the other fails with a message and leaves nothing behind.
	t.Run("concurrent", func(t *testing.T) {
		for round := 0; round < 4; round++ {
			mnt := newMountpoint(t)
			raceTwo(t, round, mnt, func() result {
				return run(t, 2*time.Minute, "mount", "--cache-dir", t.TempDir(), src, mnt)
			})
			if ms := mountsAt(t, mnt); len(ms) != 1 || ms[0].FSType != "fuse.ocimount" {
				t.Fatalf("round %d: mounts at %s: %+v, want exactly one", round, mnt, ms)
			}
			if !waitFor(10*time.Second, func() bool { return len(serverPIDs(t, mnt)) == 1 }) {
				t.Errorf("round %d: servers %v, want one", round, serverPIDs(t, mnt))
			}
			if r := run(t, 30*time.Second, "umount", mnt); r.code != 0 {
				t.Fatalf("umount: %s", r)
			}
		}
	})
}

// TestBundleConcurrent: two bundles made at the same time in one new or
// empty directory: exactly one wins and its bundle is whole; the loser
// fails, mounts nothing and removes nothing of the winner's.
func TestBundleConcurrent(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	for round := 0; round < 6; round++ {
		dir := newBundleDir(t)
		if round%2 == 1 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		raceTwo(t, round, dir, func() result {
			return run(t, 2*time.Minute, "bundle", "-q", "--cache-dir", t.TempDir(), src, dir)
		})
		rootfs := filepath.Join(dir, "rootfs")
		if ms := mountsAt(t, rootfs); len(ms) != 1 || ms[0].FSType != "fuse.ocimount" {
			t.Fatalf("round %d: mounts at %s: %+v, want exactly one", round, rootfs, ms)
		}
		for _, f := range []string{".ocimount-bundle.json", "config.json", "rootfs/srv/app/hello.txt"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("round %d: the winner's bundle lacks %s: %v", round, f, err)
			}
		}
		if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
			t.Fatalf("round %d: remove: %s", round, r)
		}
		requireNothingMounted(t, dir)
	}
}

// TestForegroundStopLeavesMountsOnTop: a foreground server told to stop
// unmounts by path, and umount2 takes off whatever is on top there. With a
// tmpfs mounted over its mount (or another ocimount stacked with --force),
// Ctrl-C took that one off instead, then hung waiting for its own mount to
// go. It now leaves both, says what is in the way, and exits.
func TestForegroundStopLeavesMountsOnTop(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	t.Run("tmpfs", func(t *testing.T) {
		mnt := newMountpoint(t)
		srv := startForeground(t, src, mnt)
		f := mountTmpfs(t, mnt)
		srv.cmd.Process.Signal(syscall.SIGINT)
		err, ok := srv.wait(20 * time.Second)
		if !ok {
			t.Fatalf("server did not exit after SIGINT; output:\n%s", srv.output())
		}
		if err == nil || !strings.Contains(srv.output(), "tmpfs") {
			t.Errorf("exit %v, want an error naming the tmpfs; output:\n%s", err, srv.output())
		}
		requireTmpfsIntact(t, mnt, f)
		if ms := mountsAt(t, mnt); len(ms) != 2 || ms[0].FSType != "fuse.ocimount" {
			t.Errorf("mounts at %s: %+v, want the FUSE mount under the tmpfs", mnt, ms)
		}
	})
	t.Run("stacked-ocimount", func(t *testing.T) {
		mnt := newMountpoint(t)
		srv := startForeground(t, src, mnt)
		if r := run(t, 2*time.Minute, "mount", "--force", "--cache-dir", t.TempDir(), src, mnt); r.code != 0 {
			t.Fatalf("mount --force: %s", r)
		}
		t.Cleanup(func() { forceUnmount(t, mnt) })
		top := findMount(t, mnt)
		srv.cmd.Process.Signal(syscall.SIGINT)
		if _, ok := srv.wait(20 * time.Second); !ok {
			t.Fatalf("server did not exit after SIGINT; output:\n%s", srv.output())
		}
		if now := findMount(t, mnt); now == nil || now.ID != top.ID {
			t.Errorf("the stacked mount %+v is gone (top now %+v)", top, now)
		}
	})
}

// raceTwo runs do twice at the same time: exactly one must succeed, and
// the other must fail with a message naming path.
func raceTwo(t *testing.T, round int, path string, do func() result) {
	t.Helper()
	var wg sync.WaitGroup
	res := make([]result, 2)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = do()
		}()
	}
	wg.Wait()
	codes := []int{res[0].code, res[1].code}
	slices.Sort(codes)
	if !slices.Equal(codes, []int{0, 1}) {
		t.Fatalf("round %d: exit codes %v, want one 0 and one 1:\n%s\n%s", round, codes, res[0], res[1])
	}
	loser := res[0]
	if loser.code == 0 {
		loser = res[1]
	}
	if !strings.Contains(loser.stderr, path) {
		t.Errorf("round %d: the loser's message does not name %s: %s", round, path, loser)
	}
}
