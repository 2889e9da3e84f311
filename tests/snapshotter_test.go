package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"

	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/internal/tartest"
)

// The containerd snapshotter, end to end: Debian's containerd (1.6) started
// here with a config of its own, cmd/ocimount-snapshotter as its proxy
// snapshotter, images on a loopback registry behind a counting proxy,
// pulled with containerd's Go client as the CRI plugin and nerdctl pull
// (unpack with the image labels), containers run by `ctr run` with runc.

var (
	snapBuildOnce sync.Once
	snapBin       string
	snapBuildErr  error
)

// snapshotterBin builds ./cmd/ocimount-snapshotter once per run.
func snapshotterBin(t *testing.T) string {
	t.Helper()
	snapBuildOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			snapBuildErr = err
			return
		}
		snapBin = filepath.Join(scratch, "ocimount-snapshotter")
		args := []string{"build", "-o", snapBin}
		if raceEnabled {
			// The server is where the concurrency is (gRPC calls,
			// FUSE reads, mounts): a race there fails the test.
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/ocimount-snapshotter")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			snapBuildErr = fmt.Errorf("go build ./cmd/ocimount-snapshotter: %v\n%s", err, out)
		}
	})
	if snapBuildErr != nil {
		t.Fatal(snapBuildErr)
	}
	return snapBin
}

// snapImage is the test image: busybox, a file deleted and a directory made
// opaque by layer 1, a hardlink in layer 1 to a file of layer 0, and a
// marker file in layer 2 that tells images apart (local: the hardlink is
// within layer 0, and data/unused is in layer 1). Layer 0 also carries
// 10 MiB of random data that no container reads, so a lazy pull fetches
// visibly less than the blobs.
func snapImage(t *testing.T, marker string, seed uint64, local bool) tartest.Image {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 10<<20)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	// data/big first: sequential read-ahead runs on past the end of a
	// file in the layer stream (spans of 2 MiB in a published index), and
	// busybox is read whole by every container.
	// containerd unpacks a layer into an overlayfs snapshot's upper
	// directory, where a hardlink to a lower layer's file has no target
	// (its own overlayfs snapshotter fails the same way): the image
	// served locally links within layer 0.
	link, link0 := tartest.Hardlink("data/link", "data/keep"), tartest.File("data/unused", "", 0o644)
	if local {
		link, link0 = link0, link
	}
	l0 := tartest.Tar(t,
		tartest.Dir("data/", 0o755), tartest.FileBytes("data/big", big, 0o644),
		tartest.Dir("bin/", 0o755), tartest.FileBytes("bin/busybox", bb, 0o755),
		tartest.Symlink("bin/sh", "busybox"), tartest.Symlink("bin/cat", "busybox"),
		tartest.Symlink("bin/ls", "busybox"), tartest.Symlink("bin/stat", "busybox"), tartest.Symlink("bin/dd", "busybox"),
		tartest.File("data/keep", "kept\n", 0o644), link0, tartest.File("data/gone", "deleted\n", 0o644),
		tartest.Dir("opq/", 0o755), tartest.File("opq/old", "old\n", 0o644),
		tartest.Dir("etc/", 0o755),
	)
	l1 := tartest.Tar(t,
		tartest.Whiteout("data/gone"),
		tartest.Dir("opq/", 0o755), tartest.Opaque("opq"), tartest.File("opq/new", "new\n", 0o644),
		link,
	)
	l2 := tartest.Tar(t, tartest.File("etc/marker", marker+"\n", 0o644))

	return tartest.Image{
		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: l0}, {Compression: tartest.Gzip, Tar: l1}, {Compression: tartest.Gzip, Tar: l2}},
		Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}},
	}
}

// snapCmd is what the containers run; snapWant is its output for marker.
const snapCmd = `cat /data/keep /etc/marker; ls /data; echo --; ls /opq; echo --; [ -e /data/gone ] && echo GONE-IS-THERE; stat -c %i /data/keep /data/link; echo end`

func checkSnapOutput(t *testing.T, out, marker string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"kept", marker, "big", "keep", "link", "unused", "--", "new", "--"}
	if len(lines) != len(want)+3 || strings.Join(lines[:len(want)], "\n") != strings.Join(want, "\n") || lines[len(lines)-1] != "end" {
		t.Fatalf("container output:\n%s\nwant the lines\n%s\n<inode>\n<same inode>\nend", out, strings.Join(want, "\n"))
	}
	if a, b := lines[len(want)], lines[len(want)+1]; a != b {
		t.Fatalf("/data/link (inode %s) is not a hardlink of /data/keep (inode %s):\n%s", b, a, out)
	}
}

// ctrEnv is a running containerd with the snapshotter.
type ctrEnv struct {
	t        *testing.T
	dir      string
	sock     string // containerd's
	snapSock string
	snapRoot string
	ns       string
	ctrd     *exec.Cmd
	ctrdLog  *os.File
	snap     *exec.Cmd
	snapLog  *bytes.Buffer
	snapDone chan struct{}
	logMu    sync.Mutex
	made     []string // directories outside dir that containerd's shims create, deepest first
	// snapshotter is what pull and run use: "ocimount", or containerd's
	// own "overlayfs" for comparisons.
	snapshotter string
	// criConfig, if set, enables the CRI plugin with this configuration.
	criConfig string
}

func (e *ctrEnv) startContainerd() {
	t := e.t
	// The runc shim of containerd 1.6 puts its sockets in
	// /run/containerd/s whatever the config says (removed as shims exit):
	// the directories it makes there are removed at the end.
	for _, d := range []string{"/run/containerd", "/run/containerd/s"} {
		if _, err := os.Stat(d); err != nil {
			e.made = append([]string{d}, e.made...)
		}
	}
	plugins := `disabled_plugins = ["io.containerd.grpc.v1.cri"]`
	if e.criConfig != "" {
		plugins = ""
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[proxy_plugins.ocimount]
  type = "snapshot"
  address = %q
`, filepath.Join(e.dir, "root"), filepath.Join(e.dir, "state"), plugins, e.sock, e.sock+".ttrpc", filepath.Join(e.dir, "opt"), e.snapSock) + e.criConfig
	cfgFile := filepath.Join(e.dir, "containerd.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(filepath.Join(e.dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.ctrdLog = lf
	e.ctrd = exec.Command("containerd", "--config", cfgFile)
	e.ctrd.Stdout, e.ctrd.Stderr = lf, lf
	e.ctrd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.ctrd.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(20*time.Second, func() bool { return e.ctr("version").code == 0 }) {
		t.Fatalf("containerd did not answer on %s:\n%s", e.sock, e.containerdLog())
	}
}

func (e *ctrEnv) containerdLog() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "containerd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// startSnapshotter runs the snapshotter in the foreground of a child
// process, logging into a buffer, and waits for its socket.
func (e *ctrEnv) startSnapshotter() {
	t := e.t
	e.snapLog = &bytes.Buffer{}
	e.snap = exec.Command(snapshotterBin(t), "--address", e.snapSock, "--root", e.snapRoot, "--debug")
	e.snap.Env = isolatedEnv(t)
	w := &lockedWriter{mu: &e.logMu, w: e.snapLog}
	e.snap.Stdout, e.snap.Stderr = w, w
	e.snap.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.snap.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	e.snapDone = done
	cmd := e.snap
	go func() { cmd.Wait(); close(done) }()
	if !waitFor(20*time.Second, func() bool { return strings.Contains(e.snapshotterLog(), "msg=serving") }) {
		t.Fatalf("snapshotter did not start:\n%s", e.snapshotterLog())
	}
}

func (e *ctrEnv) snapshotterLog() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.snapLog.String()
}

func (e *ctrEnv) stopSnapshotter(sig syscall.Signal) {
	if e.snap == nil {
		return
	}
	e.snap.Process.Signal(sig)
	select {
	case <-e.snapDone:
	case <-time.After(20 * time.Second):
		e.snap.Process.Kill()
		<-e.snapDone
		e.t.Errorf("snapshotter did not stop on %v", sig)
	}
	e.snap = nil
	if log := e.snapshotterLog(); strings.Contains(log, "WARNING: DATA RACE") {
		e.t.Errorf("the snapshotter raced:\n%s", log)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (e *ctrEnv) ctr(args ...string) result {
	return runCmd(e.t, 2*time.Minute, "ctr", append([]string{"--address", e.sock, "--namespace", e.ns}, args...)...)
}

// runCmd runs any program (not the ocimount binary).
func runCmd(t *testing.T, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), args: append([]string{name}, args...)}
	if err != nil {
		r.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		}
		if r.stderr == "" {
			r.stderr = err.Error()
		}
	}
	return r
}

// pull pulls ref with containerd's Go client into the ocimount
// snapshotter, unpacking it; labels adds the image labels to each layer's
// Prepare as the CRI plugin and nerdctl do.
func (e *ctrEnv) pull(ref string, labels bool) {
	t := e.t
	c, err := containerd.New(e.sock, containerd.WithDefaultNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), e.ns), 2*time.Minute)
	defer cancel()
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
	opts := []containerd.RemoteOpt{containerd.WithPullUnpack, containerd.WithPullSnapshotter(e.snapshotter), containerd.WithResolver(resolver)}
	if labels {
		opts = append(opts, containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)))
	}
	if _, err := c.Pull(ctx, ref, opts...); err != nil {
		t.Fatalf("pull %s: %v\nsnapshotter log:\n%s", ref, err, e.snapshotterLog())
	}
}

var ctrRuns int

// run runs snapCmd in a new container of ref and returns its output.
func (e *ctrEnv) run(ref string) string { return e.runCmd(ref, snapCmd) }

// runCmd runs a shell command in a new container of ref.
func (e *ctrEnv) runCmd(ref, cmd string) string {
	ctrRuns++
	r := e.ctr("run", "--rm", "--snapshotter", e.snapshotter,
		"--fifo-dir", filepath.Join(e.dir, "fifo"), "--runc-root", filepath.Join(e.dir, "runc"), ref, fmt.Sprintf("ocimount-test-%d", ctrRuns), "/bin/sh", "-c", cmd)
	if r.code != 0 {
		e.t.Fatalf("ctr run %s: %s\nsnapshotter log:\n%s\ncontainerd log:\n%s", ref, r, e.snapshotterLog(), e.containerdLog())
	}
	return r.stdout
}

// remoteMounts lists the snapshotter's FUSE mounts.
func (e *ctrEnv) remoteMounts() []mountinfo.Mount {
	ms, err := mountinfo.Read()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []mountinfo.Mount
	for _, m := range mountinfo.Under(ms, e.snapRoot) {
		if m.FSType == "fuse.ocimount" {
			out = append(out, m)
		}
	}
	return out
}

// contentDigests is what containerd's content store holds.
func (e *ctrEnv) contentDigests() string {
	r := e.ctr("content", "ls", "-q")
	if r.code != 0 {
		e.t.Fatalf("ctr content ls: %s", r)
	}
	return r.stdout
}

func TestContainerdSnapshotter(t *testing.T) {
	requireIntegration(t, "containerd", "ctr", "runc", "docker-registry", "containerd-shim-runc-v2")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("/bin/busybox missing (package busybox-static)")
	}
	bin := ocimountBin(t)
	_ = bin
	snapshotterBin(t)

	// Images: a and b share layers 0 and 1; c is pulled without labels.
	reg := startRegistry(t, registryOpts{})
	work := t.TempDir()
	infos := map[string]tartest.ImageInfo{}
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		seed := uint64(1)
		if name >= "c" {
			seed = uint64(i) // their own layers: no chain shared with a and b
		}
		layout := filepath.Join(work, name)
		infos[name] = tartest.WriteOCILayoutInfo(t, layout, snapImage(t, "marker-"+name, seed, name == "c" || name == "d"))[0]
		if err := pushLayout(reg.Host, layout, "snap/"+name+":v1"); err != nil {
			t.Fatal(err)
		}
	}
	if infos["a"].Layers[0].Digest != infos["b"].Layers[0].Digest || infos["a"].Layers[2].Digest == infos["b"].Layers[2].Digest {
		t.Fatal("fixture: a and b must share layers 0 and 1 only")
	}
	// Published indexes for a and b (fetched whole here, before the
	// proxy starts counting): the snapshotter then reads only chunks.
	env := isolatedEnv(t)
	pushIndexes(t, env, "docker://"+reg.Host+"/snap/a:v1")
	pushIndexes(t, env, "docker://"+reg.Host+"/snap/b:v1")
	pushIndexes(t, env, "docker://"+reg.Host+"/snap/d:v1")
	pushIndexes(t, env, "docker://"+reg.Host+"/snap/e:v1")
	proxy := startFaultProxy(t, reg.Host, nil)
	ref := func(name string) string { return proxy.Host + "/snap/" + name + ":v1" }

	e := newCtrEnv(t)

	layerDigests := func(name string) []string {
		var ds []string
		for _, l := range infos[name].Layers {
			ds = append(ds, l.Digest.String())
		}
		return ds
	}
	t.Run("remote", func(t *testing.T) {
		e.t = t
		e.pull(ref("a"), true)
		if n := len(e.remoteMounts()); n != 3 {
			t.Fatalf("%d remote snapshots mounted after pulling a 3-layer image, want 3\n%s", n, e.snapshotterLog())
		}
		// The pull reads the first 512 KiB piece of each layer (to fail
		// it on a blob the registry lacks or garbles), nothing else.
		if n := dirBytes(t, filepath.Join(e.snapRoot, "cache", "chunks")); n == 0 || n > 3<<19 {
			t.Errorf("the pull fetched %d bytes of layers; want the first piece of each", n)
		}
		checkSnapOutput(t, e.run(ref("a")), "marker-a")
		content := e.contentDigests()
		var blobBytes int64
		for i, d := range layerDigests("a") {
			if strings.Contains(content, d) {
				t.Errorf("layer %d (%s) is in containerd's content store: containerd fetched it", i, d)
			}
			ranged, whole, _ := proxy.counts(d)
			if whole != 0 {
				t.Errorf("layer %d (%s): %d whole-blob GETs, want only ranged ones (%d)", i, d, whole, ranged)
			}
			blobBytes += infos["a"].Layers[i].Size
		}
		if !strings.Contains(content, infos["a"].Manifest.Digest.String()) {
			t.Errorf("the manifest is not in the content store (%s): the check above proves nothing", content)
		}
		fetched := dirBytes(t, filepath.Join(e.snapRoot, "cache", "chunks"))
		if fetched == 0 || fetched > blobBytes/2 {
			t.Errorf("range cache holds %d bytes of %d bytes of layer blobs; want some, and well under half (no container reads data/big)", fetched, blobBytes)
		}
		t.Logf("fetched %d of %d layer bytes", fetched, blobBytes)
	})
	t.Run("shared-base", func(t *testing.T) {
		e.t = t
		e.pull(ref("b"), true)
		if n := len(e.remoteMounts()); n != 4 {
			t.Fatalf("%d remote snapshots after pulling b, want 4 (a's 3 and b's top: layers 0 and 1 are a's)\n%s", n, e.snapshotterLog())
		}
		checkSnapOutput(t, e.run(ref("b")), "marker-b")
		checkSnapOutput(t, e.run(ref("a")), "marker-a")
	})
	t.Run("fallback", func(t *testing.T) {
		e.t = t
		before := len(e.remoteMounts())
		e.pull(ref("c"), false) // no image labels: containerd unpacks
		if n := len(e.remoteMounts()); n != before {
			t.Fatalf("pulling without labels mounted %d remote snapshots", n-before)
		}
		content := e.contentDigests()
		for i, d := range layerDigests("c") {
			if !strings.Contains(content, d) {
				t.Errorf("layer %d of the locally unpacked image is not in the content store", i)
			}
		}
		checkSnapOutput(t, e.run(ref("c")), "marker-c")
	})
	t.Run("wrong-bytes", func(t *testing.T) {
		// The registry corrupts every ranged read: the snapshotter's
		// check of each layer's first piece fails, the layers fall back,
		// and containerd's own (whole, verified) download serves them.
		e.t = t
		before := len(e.remoteMounts())
		proxy.set(corruptByte, -1)
		defer proxy.set(passThrough, 0)
		e.pull(ref("d"), true)
		if n := len(e.remoteMounts()); n != before {
			t.Fatalf("%d remote snapshots mounted from a registry that serves wrong bytes", n-before)
		}
		if log := e.snapshotterLog(); !strings.Contains(log, "serving the layer locally") || !strings.Contains(log, infos["d"].Layers[0].Digest.String()) {
			t.Errorf("the snapshotter log does not say why layer 0 of d is local:\n%s", log)
		}
		content := e.contentDigests()
		for i, d := range layerDigests("d") {
			if !strings.Contains(content, d) {
				t.Errorf("layer %d of d is not in the content store", i)
			}
		}
		checkSnapOutput(t, e.run(ref("d")), "marker-d")
	})
	t.Run("local-on-remote", func(t *testing.T) {
		// Only layer 2 of e comes garbled: layers 0 and 1 are one remote
		// snapshot each, layer 2 a local one that containerd unpacks on
		// top of them, and overlayfs stacks it on the merged tree of
		// layers 0..1.
		e.t = t
		before := len(e.remoteMounts())
		top := infos["e"].Layers[2].Digest.String()
		proxy.setFor(corruptByte, -1, top)
		defer proxy.set(passThrough, 0)
		e.pull(ref("e"), true)
		if n := len(e.remoteMounts()) - before; n != 2 {
			t.Fatalf("%d remote snapshots for e, want 2 (layers 0 and 1)\n%s", n, e.snapshotterLog())
		}
		content := e.contentDigests()
		for i, d := range layerDigests("e") {
			if in := strings.Contains(content, d); in != (d == top) {
				t.Errorf("layer %d of e in the content store: %v, want %v", i, in, d == top)
			}
		}
		checkSnapOutput(t, e.run(ref("e")), "marker-e")
	})
	t.Run("toc", func(t *testing.T) {
		// eStargz and zstd:chunked images (stargz-snapshotter's writer):
		// each layer is served from its TOC, with no published index and
		// no full pass; the probe of each layer reads its first chunk
		// through the TOC reader (the blob has no chunk table, so a plain
		// ReadAt of it would refuse and the layer fall back to
		// containerd's download).
		e.t = t
		for i, kind := range []string{"estargz", "zstd-chunked"} {
			name := "toc-" + kind
			img := snapImage(t, "marker-"+name, uint64(20+i), false)
			for j, l := range img.Layers {
				if kind == "estargz" {
					img.Layers[j] = tartest.EStargz(t, l.Tar, 256<<10).Layer(tartest.Gzip)
				} else {
					img.Layers[j] = tartest.ZstdChunked(t, l.Tar, 256<<10).Layer(tartest.Zstd)
				}
			}
			info := tartest.WriteOCILayoutInfo(t, filepath.Join(work, name), img)[0]
			if err := pushLayout(reg.Host, filepath.Join(work, name), "snap/"+name+":v1"); err != nil {
				t.Fatal(err)
			}
			before := len(e.remoteMounts())
			e.pull(ref(name), true)
			if n := len(e.remoteMounts()) - before; n != 3 {
				t.Fatalf("%s: %d remote snapshots, want 3\n%s", kind, n, e.snapshotterLog())
			}
			content := e.contentDigests()
			for j, l := range info.Layers {
				d := l.Digest.String()
				if strings.Contains(content, d) {
					t.Errorf("%s: layer %d (%s) is in containerd's content store: containerd fetched it", kind, j, d)
				}
				if _, whole, _ := proxy.counts(d); whole != 0 {
					t.Errorf("%s: layer %d (%s): %d whole-blob GETs (a full pass, not the TOC)", kind, j, d, whole)
				}
			}
			checkSnapOutput(t, e.run(ref(name)), "marker-"+name)
		}
		if log := e.snapshotterLog(); strings.Contains(log, "reading the whole layer instead") {
			t.Errorf("a TOC was refused:\n%s", log)
		}
	})
	t.Run("registry-gone", func(t *testing.T) {
		// After the pull the registry fails every read: what the first
		// container read is served from the range cache, the rest fails
		// with EIO (never other bytes).
		e.t = t
		proxy.set(unavailable, -1)
		defer proxy.set(passThrough, 0)
		out := e.runCmd(ref("a"), `cat /data/keep; if dd if=/data/big of=/dev/null bs=4096 skip=2000 count=1 2>/dev/null; then echo big-read; else echo big-failed; fi`)
		if out != "kept\nbig-failed\n" {
			t.Fatalf("container output with the registry gone: %q, want kept, big-failed\nsnapshotter log:\n%s", out, e.snapshotterLog())
		}
	})
	t.Run("kill-9", func(t *testing.T) {
		e.t = t
		n := len(e.remoteMounts())
		e.stopSnapshotter(syscall.SIGKILL)
		if len(e.remoteMounts()) != n {
			t.Fatalf("expected %d stale mounts after kill -9", n)
		}
		e.startSnapshotter()
		// Mounts are restored in the background, after the socket serves.
		if !waitFor(30*time.Second, func() bool { return strings.Contains(e.snapshotterLog(), "restore done") }) {
			t.Fatalf("no restore in 30 s:\n%s", e.snapshotterLog())
		}
		ms := e.remoteMounts()
		if len(ms) != n {
			t.Fatalf("%d remote snapshots mounted after the restart, want %d\n%s", len(ms), n, e.snapshotterLog())
		}
		for _, m := range ms {
			if _, err := os.Stat(filepath.Join(m.MountPoint, "data", "keep")); err != nil {
				t.Errorf("restored mount %s: %v", m.MountPoint, err)
			}
		}
		// containerd redials a proxy plugin with a backoff (at most 3 s
		// in 1.6); calls fail until it has.
		if !waitFor(20*time.Second, func() bool { return e.ctr("snapshots", "--snapshotter", "ocimount", "ls").code == 0 }) {
			t.Fatalf("containerd did not reconnect to the restarted snapshotter:\n%s", e.containerdLog())
		}
		checkSnapOutput(t, e.run(ref("a")), "marker-a")
		checkSnapOutput(t, e.run(ref("c")), "marker-c")
	})
	t.Run("remove", func(t *testing.T) {
		e.t = t
		n := len(e.remoteMounts())
		if r := e.ctr("image", "rm", "--sync", ref("b")); r.code != 0 {
			t.Fatalf("ctr image rm: %s", r)
		}
		if !waitFor(10*time.Second, func() bool { return len(e.remoteMounts()) == n-1 }) {
			t.Fatalf("%d remote snapshots after removing b, want %d\n%s", len(e.remoteMounts()), n-1, e.snapshotterLog())
		}
		checkSnapOutput(t, e.run(ref("a")), "marker-a")
	})
}

// newCtrEnv starts the snapshotter and a containerd using it, and stops
// both when t ends: images first (their snapshots go through the
// snapshotter), then containerd, then the snapshotter, which unmounts what
// is left. Nothing stays mounted or on disk.
func newCtrEnv(t *testing.T) *ctrEnv { return newCtrEnvCRI(t, nil) }

// newCtrEnvCRI is newCtrEnv with containerd's CRI plugin configured by
// cri(dir) (nil: disabled); its images live in the namespace k8s.io.
func newCtrEnvCRI(t *testing.T, cri func(dir string) string) *ctrEnv {
	dir, err := os.MkdirTemp("", "ocimount-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	e := &ctrEnv{t: t, dir: dir, sock: filepath.Join(dir, "containerd.sock"), snapSock: filepath.Join(dir, "snap.sock"),
		snapRoot: filepath.Join(dir, "snapshotter"), ns: "ocimount-test", snapshotter: "ocimount"}
	if cri != nil {
		e.criConfig, e.ns = cri(dir), "k8s.io"
	}
	t.Cleanup(func() {
		e.t = t
		if e.ctrd != nil && e.ctrd.Process != nil {
			for _, img := range strings.Fields(e.ctr("image", "ls", "-q").stdout) {
				e.ctr("image", "rm", "--sync", img)
			}
			e.ctrd.Process.Signal(syscall.SIGTERM)
			e.ctrd.Wait()
			e.ctrdLog.Close()
		}
		e.stopSnapshotter(syscall.SIGTERM)
		if ms := e.remoteMounts(); len(ms) != 0 {
			t.Errorf("mounts left after the snapshotter stopped: %v", ms)
			for _, m := range ms {
				syscall.Unmount(m.MountPoint, syscall.MNT_DETACH)
			}
		}
		if ms, err := mountinfo.Read(); err == nil && len(mountinfo.Under(ms, dir)) != 0 {
			t.Errorf("mounts left under %s: %v", dir, mountinfo.Under(ms, dir))
			return // never remove through a mount
		}
		os.RemoveAll(dir)
		for _, d := range e.made {
			os.Remove(d) // only if empty: never anyone else's
		}
	})
	e.startSnapshotter()
	e.startContainerd()
	if r := e.ctr("plugins", "ls"); !strings.Contains(r.stdout, "ocimount") {
		t.Fatalf("containerd does not list the proxy snapshotter: %s", r)
	}
	return e
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
