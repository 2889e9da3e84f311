package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/internal/mountinfo"
)

// result is one finished ocimount invocation.
type result struct {
	args           []string
	code           int // -1 when killed by the timeout
	stdout, stderr string
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("ocimount %s: exit %d after %v\nstdout: %s\nstderr: %s",
		strings.Join(r.args, " "), r.code, r.dur.Round(time.Millisecond), r.stdout, r.stderr)
}

// run runs the ocimount binary to completion. Output goes to files, not
// pipes: a daemon that kept an inherited pipe open would otherwise hang the
// test (TestMountReleasesCallerPipes checks that case on purpose).
func run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return runIn(t, "", timeout, args...)
}

// runIn is run with the working directory set to dir.
func runIn(t *testing.T, dir string, timeout time.Duration, args ...string) result {
	t.Helper()
	return runWith(t, dir, nil, timeout, args...)
}

// runWith runs ocimount in dir (if set) with env merged into the test's
// environment (see mergeEnv).
func runWith(t *testing.T, dir string, env []string, timeout time.Duration, args ...string) result {
	t.Helper()
	bin := ocimountBin(t)
	logs := t.TempDir()
	outF, err := os.Create(filepath.Join(logs, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(logs, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = mergeEnv(os.Environ(), env)
	}
	cmd.Stdout, cmd.Stderr = outF, errF
	start := time.Now()
	err = cmd.Run()
	r := result{args: args, dur: time.Since(start)}
	stdout, _ := os.ReadFile(outF.Name())
	stderr, _ := os.ReadFile(errF.Name())
	r.stdout, r.stderr = string(stdout), string(stderr)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.code = -1
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running ocimount: %v", err)
	}
	return r
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct{ mountinfo.Mount }

func (m mountInfo) hasOpt(o string) bool      { return m.HasOption(o) }
func (m mountInfo) hasSuperOpt(o string) bool { return m.HasSuperOption(o) }

// findMount returns the mount on top at dir, or nil.
func findMount(t *testing.T, dir string) *mountInfo {
	t.Helper()
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := mountinfo.Top(ms, filepath.Clean(dir)); ok {
		return &mountInfo{m}
	}
	return nil
}

// mountsAt returns every mount at dir, bottom first: more than one is a
// stack.
func mountsAt(t *testing.T, dir string) []mountinfo.Mount {
	t.Helper()
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	return mountinfo.At(ms, filepath.Clean(dir))
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newMountpoint makes an empty directory to mount on and registers a
// cleanup that takes down anything left mounted there, escalating to a lazy
// unmount, so a failing test never leaks a mount. Registered after the
// TempDir, it runs before the TempDir's removal.
func newMountpoint(t *testing.T) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forceUnmount(t, mnt) })
	return mnt
}

func forceUnmount(t *testing.T, mnt string) {
	if findMount(t, mnt) == nil {
		return
	}
	steps := [][]string{
		{binPath, "umount", mnt},
		{"fusermount3", "-u", mnt},
		{"umount", mnt},
		{"umount", "-l", mnt},
	}
	for _, s := range steps {
		if s[0] == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput()
		cancel()
		if err == nil && waitFor(5*time.Second, func() bool { return findMount(t, mnt) == nil }) {
			return
		}
		t.Logf("cleanup: %s: %v %s", strings.Join(s, " "), err, out)
	}
	t.Errorf("cleanup: could not unmount %s", mnt)
}

// mountImage mounts src with a fresh cache dir and returns the mountpoint.
func mountImage(t *testing.T, src string, flags ...string) string {
	t.Helper()
	mnt := newMountpoint(t)
	args := append([]string{"mount", "--cache-dir", t.TempDir()}, flags...)
	r := run(t, 2*time.Minute, append(args, src, mnt)...)
	if r.code != 0 {
		t.Fatalf("mount failed: %s", r)
	}
	if findMount(t, mnt) == nil {
		t.Fatalf("mount exited 0 but nothing is mounted at %s: %s", mnt, r)
	}
	return mnt
}

// startForeground starts `ocimount mount -f` and waits until it serves.
func startForeground(t *testing.T, src, mnt string, flags ...string) *fgServer {
	t.Helper()
	bin := ocimountBin(t)
	logs := t.TempDir()
	errF, err := os.Create(filepath.Join(logs, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { errF.Close() })
	args := append([]string{"mount", "--foreground", "--cache-dir", t.TempDir()}, flags...)
	cmd := exec.Command(bin, append(args, src, mnt)...)
	cmd.Stdout, cmd.Stderr = errF, errF
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Kill the server if the test ends early; harmless once it exited.
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	})
	ok := waitFor(time.Minute, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		return findMount(t, mnt) != nil
	})
	if !ok || findMount(t, mnt) == nil {
		b, _ := os.ReadFile(errF.Name())
		t.Fatalf("foreground mount did not come up at %s (ok=%v); output:\n%s", mnt, ok, b)
	}
	return &fgServer{cmd: cmd, exited: exited, log: errF.Name()}
}

// fgServer is a running `ocimount mount --foreground`.
type fgServer struct {
	cmd    *exec.Cmd
	exited chan error // receives Wait's result once
	log    string
}

// wait waits for the server to exit; ok is false on timeout.
func (s *fgServer) wait(timeout time.Duration) (err error, ok bool) {
	select {
	case err := <-s.exited:
		s.exited <- err
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (s *fgServer) output() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// serverPIDs finds processes whose command line names mnt: how a daemonised
// server can be found without the CLI telling its pid.
func serverPIDs(t *testing.T, mnt string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == mnt {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent just has not reaped it.
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// mountTmpfs mounts a small tmpfs at dir with one file, f, holding
// "data\n" — someone else's filesystem that ocimount must never take
// down — and unmounts it at the end of the test (before the cleanups
// registered earlier, such as newMountpoint's).
func mountTmpfs(t *testing.T, dir string) (file string) {
	t.Helper()
	if err := unix.Mount("none", dir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		for i := 0; i < 4; i++ {
			m := findMount(t, dir)
			if m == nil || m.FSType != "tmpfs" {
				return
			}
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("cleanup: unmount tmpfs at %s: %v", dir, err)
				return
			}
		}
	})
	file = filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// requireTmpfsIntact fails unless the tmpfs with file is still mounted on
// top at dir with its data.
func requireTmpfsIntact(t *testing.T, dir, file string) {
	t.Helper()
	if m := findMount(t, dir); m == nil || m.FSType != "tmpfs" {
		t.Fatalf("the tmpfs at %s is gone (top mount there now: %+v)", dir, m)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "data\n" {
		t.Fatalf("the tmpfs's file %s: %q, %v", file, b, err)
	}
}
