package bundle

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// TestBundleStateConfined: an edited state file cannot make --remove
// unmount or delete anything outside the bundle directory.
func TestBundleStateConfined(t *testing.T) {
	for _, bad := range []string{
		`{"version":1,"mounts":["../x"],"created":[]}`,
		`{"version":1,"mounts":[],"created":["/etc"]}`,
		`{"version":1,"mounts":[],"created":["a/../../b"]}`,
		`{"version":1,"mounts":[],"created":["sub/dir"]}`,
		`{"version":2,"mounts":[],"created":[]}`,
		`not json`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateName), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadState(dir); err == nil {
			t.Errorf("state %s accepted", bad)
		}
		if err := Remove(dir, false); err == nil {
			t.Errorf("Remove with state %s succeeded", bad)
		}
	}
	dir := t.TempDir()
	if err := Remove(dir, false); err == nil || !strings.Contains(err.Error(), "not an ocimount bundle") {
		t.Errorf("Remove without a state file: %v", err)
	}
}

// TestPrepareAndDeleteBundleDir: what prepare creates, delete removes —
// and nothing else put in DIR meanwhile.
func TestPrepareAndDeleteBundleDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	st := State{Writable: true}
	unlock, err := Prepare(dir, &st)
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, false); err == nil || !strings.Contains(err.Error(), "right now") {
		t.Errorf("Remove while the bundle is being made: %v", err)
	}
	unlock()
	for _, d := range []string{"rootfs", "rootfs-ro", "upper", "work", StateName} {
		if _, err := os.Stat(filepath.Join(dir, d)); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if _, err := Prepare(dir, &State{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second prepare: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "upper", "written-by-container"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "someone-elses"), []byte("x"), 0o644)
	err = Remove(dir, false)
	if err == nil || !strings.Contains(err.Error(), "something else") {
		t.Errorf("Remove with a foreign file: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "someone-elses" {
		t.Errorf("left in DIR: %v", ents)
	}
}

// TestPrepareBundleDirRace: two bundles prepared at the same time in one
// empty directory: one gets it, the other fails and leaves the winner's
// files alone (before the lock, the loser's undo deleted them in about one
// round in five).
func TestPrepareBundleDirRace(t *testing.T) {
	for round := 0; round < 200; round++ {
		dir := filepath.Join(t.TempDir(), "b")
		if round%2 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		unlocks := make([]func(), 2)
		start := make(chan struct{})
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				unlocks[i], errs[i] = Prepare(dir, &State{})
			}()
		}
		close(start)
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: errors %v, want exactly one", round, errs)
		}
		for _, u := range unlocks {
			if u != nil {
				u()
			}
		}
		for _, f := range []string{"rootfs", StateName} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("round %d: the winner's %s: %v (loser: %v)", round, f, err, errors.Join(errs...))
			}
		}
	}
}

// TestWriteConfig: config.json is the spec as JSON, and no temp file is
// left beside it.
func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	spec, err := Generate(testImage(), imageFS(testPasswd, testGroup), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(dir, spec); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got rspec.Spec
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, spec) {
		t.Errorf("config.json does not read back as the spec written")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left in DIR: %v", ents)
	}
}
