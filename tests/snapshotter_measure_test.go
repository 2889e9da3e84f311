package tests

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/internal/tartest"
)

// TestSnapshotterMeasure is a measurement, not a test (it asserts nothing
// about times): with OCIMOUNT_MEASURE=1 it logs, for an image of host
// files of about OCIMOUNT_MEASURE_MIB (default 500) MiB uncompressed in
// 6 gzip layers on a loopback registry, the time from the start of the
// pull to the container's first output and the layer bytes fetched, for
// containerd's overlayfs snapshotter, ocimount with no index anywhere and
// ocimount with published indexes (medians of 3 runs, each with fresh
// containerd and snapshotter state; page cache kept); then the
// snapshotter's RSS with 10 small images mounted.
func TestSnapshotterMeasure(t *testing.T) {
	if os.Getenv("OCIMOUNT_MEASURE") != "1" {
		t.Skip("a measurement: set OCIMOUNT_MEASURE=1")
	}
	requireIntegration(t, "containerd", "ctr", "runc", "docker-registry")
	ocimountBin(t)
	snapshotterBin(t)
	mib := 500
	if v, err := strconv.Atoi(os.Getenv("OCIMOUNT_MEASURE_MIB")); err == nil && v > 0 {
		mib = v
	}
	img := hostFilesImage(t, int64(mib)<<20, 5)
	reg := startRegistry(t, registryOpts{})
	layout := filepath.Join(t.TempDir(), "m")
	info := tartest.WriteOCILayoutInfo(t, layout, img)[0]
	var blobBytes int64
	for _, l := range info.Layers {
		blobBytes += l.Size
	}
	for _, repo := range []string{"m/plain:v1", "m/indexed:v1"} {
		if err := pushLayout(reg.Host, layout, repo); err != nil {
			t.Fatal(err)
		}
	}
	pushIndexes(t, isolatedEnv(t), "docker://"+reg.Host+"/m/indexed:v1")
	proxy := startFaultProxy(t, reg.Host, nil)
	t.Logf("image: %d layers, %.1f MiB of blobs, %d MiB of files", len(info.Layers), float64(blobBytes)/(1<<20), mib)

	cases := []struct {
		name, snapshotter, repo string
	}{
		{"(a) containerd overlayfs, full pull + unpack", "overlayfs", "m/plain:v1"},
		{"(b) ocimount, no index anywhere", "ocimount", "m/plain:v1"},
		{"(c) ocimount, indexes published", "ocimount", "m/indexed:v1"},
	}
	var base time.Duration
	var baseBytes int64
	for _, c := range cases {
		var times []time.Duration
		var bytes []int64
		for run := 0; run < 3; run++ {
			t.Run(c.name, func(t *testing.T) {
				e := newCtrEnv(t)
				e.snapshotter = c.snapshotter
				proxy.reset()
				ref := proxy.Host + "/" + c.repo
				t0 := time.Now()
				e.pull(ref, true)
				out := e.runCmd(ref, "cat /etc/marker")
				times = append(times, time.Since(t0))
				if strings.TrimSpace(out) != "measure" {
					t.Fatalf("container output %q", out)
				}
				proxy.mu.Lock()
				bytes = append(bytes, proxy.blobBytes)
				proxy.mu.Unlock()
			})
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		sort.Slice(bytes, func(i, j int) bool { return bytes[i] < bytes[j] })
		if base == 0 {
			base, baseBytes = times[1], bytes[1]
		}
		t.Logf("%-48s pull to first output: median %v (runs %v), %.2fx; blob bytes fetched %.1f MiB (%.2f %% of the layers; %.2fx)",
			c.name, times[1].Round(time.Millisecond), times, float64(times[1])/float64(base),
			float64(bytes[1])/(1<<20), 100*float64(bytes[1])/float64(blobBytes), float64(bytes[1])/float64(baseBytes))
	}

	t.Run("rss-10-images", func(t *testing.T) {
		e := newCtrEnv(t)
		rss := func() int64 { return vmRSS(t, e.snap.Process.Pid) }
		start := rss()
		work := t.TempDir()
		for i := 0; i < 10; i++ {
			name := "r" + strconv.Itoa(i)
			l := filepath.Join(work, name)
			tartest.WriteOCILayoutInfo(t, l, snapImage(t, "marker-"+name, uint64(100+i), false))
			if err := pushLayout(reg.Host, l, "rss/"+name+":v1"); err != nil {
				t.Fatal(err)
			}
			pushIndexes(t, isolatedEnv(t), "docker://"+reg.Host+"/rss/"+name+":v1")
			ref := proxy.Host + "/rss/" + name + ":v1"
			e.pull(ref, true)
			checkSnapOutput(t, e.run(ref), "marker-"+name)
		}
		t.Logf("snapshotter RSS: %d KiB at start, %d KiB with 10 images (%d remote snapshots) mounted and run once each",
			start, rss(), len(e.remoteMounts()))
	})
}

// vmRSS reads a process's resident set size in KiB.
func vmRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// hostFilesImage is a busybox layer and n layers of regular files copied
// from /usr (about total bytes of them), gzip-compressed, with a marker.
func hostFilesImage(t *testing.T, total int64, n int) tartest.Image {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	layers := []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t,
		tartest.Dir("bin/", 0o755), tartest.FileBytes("bin/busybox", bb, 0o755),
		tartest.Symlink("bin/sh", "busybox"), tartest.Symlink("bin/cat", "busybox"),
		tartest.Dir("etc/", 0o755), tartest.File("etc/marker", "measure\n", 0o644))}}
	per := total / int64(n)
	var ents []tartest.Entry
	var size int64
	flush := func() {
		layers = append(layers, tartest.ImageLayer{Compression: tartest.Gzip, Tar: tartest.Tar(t, ents...)})
		ents, size = nil, 0
	}
	filepath.WalkDir("/usr", func(p string, d fs.DirEntry, err error) error {
		if err != nil || len(layers) > n || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.Size() > 64<<20 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		// (parent directories are implied: extractors and the merge
		// create them)
		ents = append(ents, tartest.FileBytes(strings.TrimPrefix(p, "/"), b, 0o644))
		if size += int64(len(b)); size >= per {
			flush()
		}
		return nil
	})
	if len(layers) <= n && len(ents) > 0 {
		flush()
	}
	return tartest.Image{Layers: layers, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}}}
}
