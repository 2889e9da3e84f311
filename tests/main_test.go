package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// scratch is a per-run directory for the binary and the shared images; it
// outlives single tests, so it cannot be a t.TempDir().
var scratch string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "ocimount-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	scratch = d
	code := m.Run()
	runExitHooks()
	if os.Getenv("OCIMOUNT_KEEP") == "" {
		os.RemoveAll(scratch)
	} else {
		fmt.Fprintln(os.Stderr, "kept", scratch)
	}
	os.Exit(code)
}

// requireIntegration skips the test when the machine cannot run FUSE
// integration tests, or fails it when OCIMOUNT_INTEGRATION=1 says it must.
func requireIntegration(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	for _, tool := range append([]string{"umoci", "fusermount3"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "integration test needs " + strings.Join(missing, ", ")
	if os.Getenv("OCIMOUNT_INTEGRATION") == "1" {
		t.Fatal(msg + " (OCIMOUNT_INTEGRATION=1 forbids skipping)")
	}
	t.Skip(msg)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// ocimountBin builds ./cmd/ocimount once per run, or uses the binary named
// by $OCIMOUNT_BIN (to test a release build).
func ocimountBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("OCIMOUNT_BIN"); p != "" {
			binPath, buildErr = filepath.Abs(p)
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(scratch, "ocimount")
		cmd := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", binPath, "./cmd/ocimount") // as the Makefile builds it
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ocimount: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Fixture is the set of images made by testdata/build-images.sh.
type Fixture struct {
	Dir   string
	Ref   string            // reference rootfs (umoci unpack of the gzip image)
	Facts map[string]string // from the script's facts file
}

var (
	fixtureOnce sync.Once
	fixture     *Fixture
	fixtureErr  error
)

// images builds the shared images once per run.
func images(t *testing.T) *Fixture {
	t.Helper()
	requireIntegration(t, "skopeo", "tar", "setcap", "setfattr", "mknod")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		requireIntegration(t, "/bin/busybox")
		t.Fatal("/bin/busybox missing (package busybox-static)")
	}
	fixtureOnce.Do(func() {
		dir := filepath.Join(scratch, "images")
		script, err := filepath.Abs("testdata/build-images.sh")
		if err != nil {
			fixtureErr = err
			return
		}
		start := time.Now()
		out, err := exec.Command("bash", script, dir).CombinedOutput()
		t.Logf("build-images.sh took %v", time.Since(start).Round(time.Millisecond))
		if err != nil {
			fixtureErr = fmt.Errorf("build-images.sh: %v\n%s", err, out)
			return
		}
		f := &Fixture{Dir: dir, Ref: filepath.Join(dir, "ref", "rootfs"), Facts: map[string]string{}}
		facts, err := os.ReadFile(filepath.Join(dir, "facts"))
		if err != nil {
			fixtureErr = err
			return
		}
		for _, line := range strings.Split(strings.TrimSpace(string(facts)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			f.Facts[k] = v
		}
		fixture = f
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixture
}

var (
	refSnapOnce sync.Once
	refSnap     *Tree
	refSnapErr  error
)

// refTree is the snapshot of the reference extraction, taken once.
func refTree(t *testing.T) *Tree {
	t.Helper()
	f := images(t)
	refSnapOnce.Do(func() {
		start := time.Now()
		refSnap, refSnapErr = Snapshot(f.Ref)
		t.Logf("reference snapshot took %v", time.Since(start).Round(time.Millisecond))
	})
	if refSnapErr != nil {
		t.Fatal(refSnapErr)
	}
	return refSnap
}
