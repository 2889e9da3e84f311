package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ocimount/ocimount/internal/tartest"
)

// The container command of the test image: a first line to time, then what
// the tests check (user, groups, cwd, env), then a distinctive exit code.
const bundleCmd = `echo first-line; id; pwd; env | sort; exit 7`

// bundleImageConfig: User "app" must be resolved through the image's own
// /etc/passwd and /etc/group (1000:1000, member of wheel and staff).
var bundleImageConfig = ocispec.ImageConfig{
	User:       "app",
	WorkingDir: "/srv/app",
	Env:        []string{"PATH=/bin", "GREETING=hello world"},
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{bundleCmd},
	StopSignal: "SIGQUIT",
	Labels:     map[string]string{"com.example.test": "bundle"},
}

// busyboxLayers: a static busybox with the applets the tests use, the
// directories runtimes mount on, and passwd/group in a second layer.
func busyboxLayers(t *testing.T, withPasswd, withMountpoints bool) []tartest.ImageLayer {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("/bin/busybox (package busybox-static): %v", err)
	}
	ents := []tartest.Entry{
		tartest.Dir("bin", 0o755), tartest.Dir("etc", 0o755),
		tartest.Dir("tmp", 0o1777),
		tartest.Dir("srv", 0o755), tartest.Dir("srv/app", 0o755, tartest.Owner(1000, 1000)),
		tartest.FileBytes("bin/busybox", bb, 0o755),
		tartest.File("srv/app/hello.txt", "from the image\n", 0o644, tartest.Owner(1000, 1000)),
	}
	if withMountpoints {
		ents = append(ents, tartest.Dir("proc", 0o555), tartest.Dir("sys", 0o555), tartest.Dir("dev", 0o755))
	}
	for _, a := range []string{"sh", "id", "pwd", "env", "sort", "echo", "cat", "ls", "touch", "sleep"} {
		ents = append(ents, tartest.Symlink("bin/"+a, "busybox"))
	}
	layers := []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t, ents...)}}
	if withPasswd {
		layers = append(layers, tartest.ImageLayer{Tar: tartest.Tar(t,
			// /etc/passwd is a symlink, resolved inside the image.
			tartest.File("etc/passwd.real", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/srv/app:/bin/sh\n", 0o644),
			tartest.Symlink("etc/passwd", "/etc/passwd.real"),
			tartest.File("etc/group", "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:app\n", 0o644),
		)})
	}
	return layers
}

var (
	bundleImgOnce sync.Once
	bundleImgDir  string
)

// bundleImage writes the test image once per run and returns its source.
func bundleImage(t *testing.T) string {
	t.Helper()
	bundleImgOnce.Do(func() {
		dir := filepath.Join(scratch, "bundle-image")
		tartest.WriteOCILayout(t, dir, tartest.Image{
			Ref:    "latest",
			Layers: busyboxLayers(t, true, true),
			Config: bundleImageConfig,
		})
		bundleImgDir = dir
	})
	if bundleImgDir == "" {
		t.Fatal("bundle test image was not built")
	}
	return "oci:" + bundleImgDir + ":latest"
}

// newBundleDir returns a path for a bundle (not created) and registers a
// cleanup that removes whatever a failing test left mounted there.
func newBundleDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, ".ocimount-bundle.json")); err == nil {
			if r := run(t, time.Minute, "bundle", "--remove", "--lazy", dir); r.code != 0 {
				t.Logf("cleanup: %s", r)
			}
		}
		forceUnmount(t, filepath.Join(dir, "rootfs"))
		forceUnmount(t, filepath.Join(dir, "rootfs-ro"))
	})
	return dir
}

// makeBundle runs `ocimount bundle` and fails the test if it fails.
func makeBundle(t *testing.T, src, dir string, flags ...string) {
	t.Helper()
	args := append([]string{"bundle", "--cache-dir", t.TempDir()}, flags...)
	args = append(args, src, dir)
	r := run(t, 2*time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("bundle failed: %s", r)
	}
}

// runtimeRun runs a container from bundle dir with runc or crun and
// returns stdout, stderr and the exit code. The container is deleted at the
// end of the test whatever happens.
func runtimeRun(t *testing.T, runtime, dir string) (string, string, int) {
	t.Helper()
	id := fmt.Sprintf("ocimount-test-%d-%s-%d", os.Getpid(), runtime, time.Now().UnixNano()%1e9)
	var args []string
	switch runtime {
	case "runc":
		args = []string{"runc", "run", "--bundle", dir, id}
		t.Cleanup(func() { exec.Command("runc", "delete", "--force", id).Run() })
	case "crun":
		// crun 1.8 refuses hybrid cgroups (v1 plus a cgroup2 mount at
		// /sys/fs/cgroup/unified): hide the cgroup2 mount in a private
		// mount namespace. It keeps its state in a private /run/crun
		// too, so deleting from outside is best effort; the namespace
		// ends with the command.
		script := `if mountpoint -q /sys/fs/cgroup/unified; then mount -t tmpfs none /sys/fs/cgroup/unified; fi; exec crun run --bundle "$1" "$2"`
		args = []string{"unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", dir, id}
		t.Cleanup(func() { exec.Command("crun", "delete", "--force", id).Run() })
	default:
		t.Fatalf("unknown runtime %s", runtime)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("%s run timed out; stderr: %s", runtime, stderr.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s run: %v", runtime, err)
	}
	return stdout.String(), stderr.String(), code
}

func readSpec(t *testing.T, dir string) *rspec.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s rspec.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// checkContainerOutput checks what bundleCmd printed: the first line, the
// user with supplementary groups from the image's /etc/group, the working
// directory, the image's environment (and no host variables).
func checkContainerOutput(t *testing.T, runtime, out, errOut string, code int) {
	t.Helper()
	if code != 7 {
		t.Fatalf("%s: exit code %d, want 7 (the command's)\nstdout:\n%s\nstderr:\n%s", runtime, code, out, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 4 {
		t.Fatalf("%s: output too short:\n%s\nstderr:\n%s", runtime, out, errOut)
	}
	if lines[0] != "first-line" {
		t.Errorf("%s: first line %q", runtime, lines[0])
	}
	if want := "uid=1000(app) gid=1000(app) groups=10(wheel),50(staff),1000(app)"; lines[1] != want {
		t.Errorf("%s: id = %q, want %q", runtime, lines[1], want)
	}
	if lines[2] != "/srv/app" {
		t.Errorf("%s: pwd = %q, want /srv/app", runtime, lines[2])
	}
	env := map[string]string{}
	for _, l := range lines[3:] {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	if env["GREETING"] != "hello world" || env["PATH"] != "/bin" {
		t.Errorf("%s: env %v, want GREETING=hello world and PATH=/bin", runtime, env)
	}
	for k := range env {
		switch k {
		case "GREETING", "PATH", "HOME", "PWD", "SHLVL", "HOSTNAME":
		default:
			t.Errorf("%s: unexpected variable %s in the container", runtime, k)
		}
	}
}

func requireNothingMounted(t *testing.T, dir string) {
	t.Helper()
	for _, m := range []string{dir, filepath.Join(dir, "rootfs"), filepath.Join(dir, "rootfs-ro")} {
		if mi := findMount(t, m); mi != nil {
			t.Errorf("%s is still mounted (%s)", m, mi.FSType)
		}
	}
	if pids := serverPIDs(t, dir); len(pids) > 0 {
		if waitFor(10*time.Second, func() bool { return len(serverPIDs(t, dir)) == 0 }) {
			return
		}
		t.Errorf("server processes still running for %s: %v", dir, pids)
	}
}

// TestBundleRunc: runc runs a container from the read-only bundle, with
// the image's command, user (resolved by name through the image's
// passwd/group), cwd and env; then --remove leaves nothing.
func TestBundleRunc(t *testing.T) {
	requireIntegration(t, "runc")
	src := bundleImage(t)
	dir := newBundleDir(t)
	makeBundle(t, src, dir)

	s := readSpec(t, dir)
	if want := (rspec.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 10, 50}}); !reflect.DeepEqual(s.Process.User, want) {
		t.Errorf("process.user = %+v, want %+v", s.Process.User, want)
	}
	if !s.Root.Readonly || s.Root.Path != "rootfs" {
		t.Errorf("root = %+v", s.Root)
	}
	if s.Annotations["org.opencontainers.image.stopSignal"] != "SIGQUIT" || s.Annotations["com.example.test"] != "bundle" {
		t.Errorf("annotations = %v", s.Annotations)
	}
	m := findMount(t, filepath.Join(dir, "rootfs"))
	if m == nil {
		t.Fatal("rootfs not mounted")
	}
	if m.hasOpt("nosuid") || m.hasOpt("nodev") || !m.hasSuperOpt("allow_other") {
		t.Errorf("rootfs mount options %s / %s: want suid, dev, allow_other", m.Options, m.SuperOptions)
	}

	out, errOut, code := runtimeRun(t, "runc", dir)
	checkContainerOutput(t, "runc", out, errOut, code)

	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove: %s", r)
	}
	requireNothingMounted(t, dir)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir still there after --remove: %v", err)
	}
}

// TestBundleCrun: the same bundle under crun.
func TestBundleCrun(t *testing.T) {
	requireIntegration(t, "crun", "unshare", "mountpoint")
	src := bundleImage(t)
	dir := newBundleDir(t)
	makeBundle(t, src, dir)
	out, errOut, code := runtimeRun(t, "crun", dir)
	checkContainerOutput(t, "crun", out, errOut, code)
	// `ocimount umount DIR` unmounts a bundle and keeps its files.
	if r := run(t, time.Minute, "umount", dir); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
	requireNothingMounted(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Errorf("umount removed config.json: %v", err)
	}
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove after umount: %s", r)
	}
}

// TestBundleWritable: the container writes through an overlay; the writes
// land in DIR/upper and never in the image (the FUSE mount below).
func TestBundleWritable(t *testing.T) {
	requireIntegration(t, "runc")
	src := bundleImage(t)
	dir := newBundleDir(t)
	args := []string{"bundle", "--cache-dir", t.TempDir(), "--writable", src, dir, "--",
		"echo written > /srv/app/new.txt && echo more >> /srv/app/hello.txt && cat /srv/app/hello.txt && id -u"}
	if r := run(t, 2*time.Minute, args...); r.code != 0 {
		t.Fatalf("bundle --writable: %s", r)
	}
	s := readSpec(t, dir)
	if s.Root.Readonly {
		t.Errorf("writable bundle has root.readonly")
	}
	if want := []string{"/bin/sh", "-c", args[len(args)-1]}; !reflect.DeepEqual(s.Process.Args, want) {
		t.Errorf("process.args = %q, want %q (Entrypoint + the arguments after --)", s.Process.Args, want)
	}
	if m := findMount(t, filepath.Join(dir, "rootfs")); m == nil || m.FSType != "overlay" {
		t.Fatalf("rootfs is not an overlay: %+v", m)
	}
	if m := findMount(t, filepath.Join(dir, "rootfs-ro")); m == nil || !strings.HasPrefix(m.FSType, "fuse") {
		t.Fatalf("rootfs-ro is not the FUSE mount: %+v", m)
	}
	out, errOut, code := runtimeRun(t, "runc", dir)
	if code != 0 || out != "from the image\nmore\n1000\n" {
		t.Fatalf("runc: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "upper/srv/app/new.txt")); err != nil || string(b) != "written\n" {
		t.Errorf("upper/srv/app/new.txt = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "upper/srv/app/hello.txt")); err != nil || string(b) != "from the image\nmore\n" {
		t.Errorf("upper/srv/app/hello.txt (copied up) = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "rootfs-ro/srv/app/new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the write reached the image: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs-ro/srv/app/hello.txt")); err != nil || string(b) != "from the image\n" {
		t.Errorf("image file changed: %q, %v", b, err)
	}
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove: %s", r)
	}
	requireNothingMounted(t, dir)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir still there: %v", err)
	}
}

// TestBundleRemoveAfterServerCrash: with the FUSE server killed (stale
// mount under a live overlay), --remove still takes everything down.
func TestBundleRemoveAfterServerCrash(t *testing.T) {
	requireIntegration(t)
	src := bundleImage(t)
	dir := newBundleDir(t)
	makeBundle(t, src, dir, "--writable")
	pids := serverPIDs(t, dir)
	if len(pids) != 1 {
		t.Fatalf("want one server process for %s, found %v", dir, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return !pidAlive(pids[0]) }) {
		t.Fatal("server did not die")
	}
	if _, err := os.ReadDir(filepath.Join(dir, "rootfs-ro")); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Errorf("reading the mount of a killed server: %v, want ENOTCONN or ECONNABORTED", err)
	}
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove after server crash: %s", r)
	}
	requireNothingMounted(t, dir)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir still there: %v", err)
	}
}

// TestBundlePodman: podman runs a container on the bundle's read-only
// rootfs with its own overlay (":O").
func TestBundlePodman(t *testing.T) {
	requireIntegration(t, "podman", "runc")
	src := bundleImage(t)
	dir := newBundleDir(t)
	makeBundle(t, src, dir)
	name := fmt.Sprintf("ocimount-test-%d-podman", os.Getpid())
	t.Cleanup(func() { exec.Command("podman", "rm", "--force", name).Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// --network none always: otherwise podman sets up a bridge and
	// changes the host's firewall and forwarding. The ulimits stay within
	// what root without CAP_SYS_RESOURCE may set. Options go before
	// --rootfs: after it comes the rootfs and then the command.
	cmd := exec.CommandContext(ctx, "podman", "run", "--rm", "--name", name,
		"--runtime", "runc", "--network", "none",
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		"--user", "app", "--workdir", "/srv/app",
		"--rootfs", filepath.Join(dir, "rootfs")+":O",
		"/bin/sh", "-c", "cat hello.txt; echo podman > w.txt; cat w.txt; id -u")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // podman may warn there (cgroups, storage); only stdout is the container's
	out, err := cmd.Output()
	if err != nil || string(out) != "from the image\npodman\n1000\n" {
		t.Fatalf("podman run: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	if _, err := os.Lstat(filepath.Join(dir, "rootfs/srv/app/w.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("podman's write reached the image: %v", err)
	}
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove: %s", r)
	}
	requireNothingMounted(t, dir)
}

// TestBundleRootless: a --rootless config maps container root to the
// caller and runc runs it (here as root, so the mapping is 0 → 0; the
// user namespace, the /sys bind and the missing network namespace are what
// a rootless runtime gets).
func TestBundleRootless(t *testing.T) {
	requireIntegration(t, "runc")
	dir := filepath.Join(t.TempDir(), "layout")
	cfg := bundleImageConfig
	cfg.User = ""
	cfg.Cmd = []string{"id -u; ls /proc/self/ns/user >/dev/null && cat /proc/self/uid_map"}
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: busyboxLayers(t, true, true), Config: cfg})
	b := newBundleDir(t)
	makeBundle(t, "oci:"+dir+":latest", b, "--rootless")
	s := readSpec(t, b)
	if len(s.Linux.UIDMappings) != 1 || s.Linux.UIDMappings[0].HostID != uint32(os.Geteuid()) {
		t.Errorf("uidMappings %+v", s.Linux.UIDMappings)
	}
	out, errOut, code := runtimeRun(t, "runc", b)
	if code != 0 || len(strings.Fields(out)) != 4 || strings.Fields(out)[0] != "0" {
		t.Fatalf("runc (rootless config): exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestBundleBadInput: each bad input fails with a clear message, mounts
// nothing, and leaves the directory as it was (removed if it created it).
func TestBundleBadInput(t *testing.T) {
	requireIntegration(t)
	layout := func(t *testing.T, cfg ocispec.ImageConfig, passwd, mountpoints bool) string {
		dir := filepath.Join(t.TempDir(), "layout")
		tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: busyboxLayers(t, passwd, mountpoints), Config: cfg})
		return "oci:" + dir + ":latest"
	}
	cases := []struct {
		name     string
		src      func(t *testing.T) string
		existing bool     // DIR exists (empty) before
		extra    []string // after DIR
		want     []string // stderr substrings
	}{
		{"unknown-user", func(t *testing.T) string {
			c := bundleImageConfig
			c.User = "ghost"
			return layout(t, c, true, true)
		}, false, nil, []string{`"ghost"`, "not defined in the image", "/etc/passwd"}},
		{"unknown-group", func(t *testing.T) string {
			c := bundleImageConfig
			c.User = "app:nogroup"
			return layout(t, c, true, true)
		}, true, nil, []string{`"nogroup"`, "not defined"}},
		{"no-passwd", func(t *testing.T) string {
			return layout(t, bundleImageConfig, false, true)
		}, false, nil, []string{`"app"`, "/etc/passwd"}},
		{"no-command", func(t *testing.T) string {
			c := bundleImageConfig
			c.Entrypoint, c.Cmd = nil, nil
			return layout(t, c, true, true)
		}, true, nil, []string{"no Entrypoint or Cmd"}},
		{"mountpoint-not-a-dir", func(t *testing.T) string {
			// Missing /dev and /sys are added; a file at /proc is
			// not replaced.
			dir := filepath.Join(t.TempDir(), "layout")
			layers := append(busyboxLayers(t, true, false), tartest.ImageLayer{Tar: tartest.Tar(t, tartest.File("proc", "not a dir", 0o644))})
			tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "latest", Layers: layers, Config: bundleImageConfig})
			return "oci:" + dir + ":latest"
		}, false, nil, []string{"/proc is a regular file", "--writable"}},
		{"flag-after-dir", func(t *testing.T) string { return bundleImage(t) }, false, []string{"--writable"}, []string{"flags go before SOURCE"}},
		{"missing-image", func(t *testing.T) string { return "oci:" + filepath.Join(t.TempDir(), "nope") }, false, nil, []string{"nope"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.src(t)
			dir := newBundleDir(t)
			if c.existing {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string{"bundle", "--cache-dir", t.TempDir(), src, dir}, c.extra...)
			r := run(t, 2*time.Minute, args...)
			if r.code == 0 {
				t.Fatalf("bundle succeeded: %s", r)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q: %s", w, r.stderr)
				}
			}
			requireNothingMounted(t, dir)
			ents, err := os.ReadDir(dir)
			switch {
			case c.existing && (err != nil || len(ents) != 0):
				t.Errorf("pre-existing dir not left empty: %v %v", ents, err)
			case !c.existing && !errors.Is(err, os.ErrNotExist):
				t.Errorf("created dir not removed: %v %v", ents, err)
			}
		})
	}

	t.Run("dir-not-empty", func(t *testing.T) {
		dir := newBundleDir(t)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		keep := filepath.Join(dir, "precious")
		if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := run(t, time.Minute, "bundle", "--cache-dir", t.TempDir(), bundleImage(t), dir)
		if r.code == 0 || !strings.Contains(r.stderr, "not empty") {
			t.Fatalf("want a 'not empty' error: %s", r)
		}
		requireNothingMounted(t, dir)
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("dir changed: %v", ents)
		}
		if r := run(t, time.Minute, "bundle", "--remove", dir); r.code == 0 || !strings.Contains(r.stderr, "not an ocimount bundle") {
			t.Errorf("--remove on a non-bundle: %s", r)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("--remove touched a non-bundle: %v", err)
		}
	})
}

// TestBundleInterrupted: SIGTERM or SIGINT to `ocimount bundle` during a
// long first index leaves no mount, no server and no bundle directory.
func TestBundleInterrupted(t *testing.T) {
	requireIntegration(t)
	big := make([]byte, 96<<20) // incompressible: indexing takes a while
	r := rand.New(rand.NewPCG(9, 9))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	layout := filepath.Join(t.TempDir(), "img")
	layers := append(busyboxLayers(t, true, true), tartest.ImageLayer{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.FileBytes("big", big, 0o644))})
	tartest.WriteOCILayout(t, layout, tartest.Image{Ref: "big", Layers: layers, Config: bundleImageConfig})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := newBundleDir(t)
			cmd := exec.Command(ocimountBin(t), "bundle", "-q", "--writable", "--cache-dir", t.TempDir(), "oci:"+layout+":big", dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Signal once it has prepared DIR (its state file is there),
			// not after a fixed sleep: on a loaded machine the process may
			// not have got that far, and nothing would be there to clean.
			if !waitFor(30*time.Second, func() bool {
				_, err := os.Stat(filepath.Join(dir, ".ocimount-bundle.json"))
				return err == nil
			}) {
				t.Log("the bundle dir was never prepared; signalling anyway")
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("bundle exited 0 after %v", sig)
			}
			if !strings.Contains(stderr.String(), "interrupted") {
				t.Errorf("stderr: %s", stderr.String())
			}
			requireNothingMounted(t, dir)
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bundle dir left behind: %v", err)
			}
		})
	}
}

// TestBundleRemoveAfterRuntimeCrash: runc is killed while its container
// runs; --remove still takes the host's mounts down (the container keeps
// its own copies in its mount namespace), and the server exits once the
// container is gone.
func TestBundleRemoveAfterRuntimeCrash(t *testing.T) {
	requireIntegration(t, "runc")
	src := bundleImage(t)
	dir := newBundleDir(t)
	args := []string{"bundle", "--cache-dir", t.TempDir(), "--writable", src, dir, "--", "echo started; exec sleep 300"}
	if r := run(t, 2*time.Minute, args...); r.code != 0 {
		t.Fatalf("bundle: %s", r)
	}
	id := fmt.Sprintf("ocimount-test-%d-crash", os.Getpid())
	t.Cleanup(func() { exec.Command("runc", "delete", "--force", id).Run() })
	cmd := exec.Command("runc", "run", "--bundle", dir, id)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, len("started\n"))
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "started\n" {
		t.Fatalf("container did not start: %q, %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove with the runtime dead and its container running: %s", r)
	}
	for _, m := range []string{filepath.Join(dir, "rootfs"), filepath.Join(dir, "rootfs-ro")} {
		if findMount(t, m) != nil {
			t.Errorf("%s still mounted", m)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir left behind: %v", err)
	}
	if b, err := exec.Command("runc", "delete", "--force", id).CombinedOutput(); err != nil {
		t.Errorf("runc delete: %v %s", err, b)
	}
	requireNothingMounted(t, dir)
}

// scratchImage is an image built FROM scratch around one static binary:
// no /proc, /dev, /sys, and a WorkingDir the image does not have either.
func scratchImage(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("/bin/busybox (package busybox-static): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "scratch")
	tartest.WriteOCILayout(t, dir, tartest.Image{
		Ref:    "latest",
		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.FileBytes("busybox", bb, 0o755))}},
		Config: ocispec.ImageConfig{
			// busybox runs the applet named by argv[1] when argv[0] is
			// "busybox"; its shell runs applets without a PATH lookup.
			Entrypoint: []string{"/busybox", "sh", "-c"},
			Cmd: []string{`echo hello from scratch; pwd; ls -d /proc/1 /dev/null /dev/pts /dev/shm /dev/mqueue /sys/kernel /sys/fs/cgroup; ` +
				`stat -c '%n %u:%g %a' /data /data/work; touch /new 2>/dev/null || echo read-only`},
			WorkingDir: "/data/work",
		},
	})
	return "oci:" + dir + ":latest"
}

// TestBundleScratchImage: an image without /proc, /dev, /sys (and without
// its WorkingDir) runs read-only under runc and crun: the bundle's rootfs
// shows empty root-owned directories where the config mounts (and the
// process starts); a plain mount of the image shows the image exactly.
func TestBundleScratchImage(t *testing.T) {
	requireIntegration(t, "runc", "crun", "unshare", "mountpoint")
	src := scratchImage(t)
	dir := newBundleDir(t)
	makeBundle(t, src, dir)
	if s := readSpec(t, dir); !s.Root.Readonly || s.Process.Cwd != "/data/work" {
		t.Errorf("root %+v, cwd %q", s.Root, s.Process.Cwd)
	}

	// The bundle's view: the image's file plus the synthetic directories,
	// root-owned 0755, with inode numbers of their own.
	rootfs := filepath.Join(dir, "rootfs")
	ents, err := os.ReadDir(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"busybox", "data", "dev", "proc", "sys"}; !reflect.DeepEqual(names, want) {
		t.Errorf("bundle rootfs lists %q, want %q", names, want)
	}
	inos := map[uint64]string{}
	for _, p := range []string{".", "busybox", "data", "data/work", "dev", "proc", "sys"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(rootfs, p), &st); err != nil {
			t.Fatal(err)
		}
		if other, dup := inos[st.Ino]; dup {
			t.Errorf("%s and %s share inode %d", p, other, st.Ino)
		}
		inos[st.Ino] = p
		if p == "busybox" || p == "." {
			continue
		}
		if st.Mode != syscall.S_IFDIR|0o755 || st.Uid != 0 || st.Gid != 0 || st.Nlink < 2 {
			t.Errorf("%s: mode %o, owner %d:%d, nlink %d; want a 0755 root-owned directory", p, st.Mode, st.Uid, st.Gid, st.Nlink)
		}
	}

	want := "hello from scratch\n/data/work\n/dev/mqueue\n/dev/null\n/dev/pts\n/dev/shm\n/proc/1\n/sys/fs/cgroup\n/sys/kernel\n" + // ls sorts
		"/data 0:0 755\n/data/work 0:0 755\nread-only\n"
	for _, rt := range []string{"runc", "crun"} {
		out, errOut, code := runtimeRun(t, rt, dir)
		if code != 0 || out != want {
			t.Errorf("%s: exit %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s", rt, code, out, want, errOut)
		}
	}
	if r := run(t, time.Minute, "bundle", "--remove", dir); r.code != 0 {
		t.Fatalf("remove: %s", r)
	}
	requireNothingMounted(t, dir)

	// A plain mount is the image, nothing added.
	mnt := mountImage(t, src)
	ents, err = os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "busybox" {
		t.Errorf("plain mount of the image lists %v, want only busybox", ents)
	}
	for _, p := range []string{"proc", "dev", "sys", "data"} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("plain mount has /%s: %v", p, err)
		}
	}
}
