package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		if err := os.WriteFile(filepath.Join(dir, bundleStateName), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readBundleState(dir); err == nil {
			t.Errorf("state %s accepted", bad)
		}
		if err := removeBundle(dir, false, true); err == nil {
			t.Errorf("removeBundle with state %s succeeded", bad)
		}
	}
	dir := t.TempDir()
	if err := removeBundle(dir, false, true); err == nil || !strings.Contains(err.Error(), "not an ocimount bundle") {
		t.Errorf("removeBundle without a state file: %v", err)
	}
}

// TestPrepareAndDeleteBundleDir: what prepare creates, delete removes —
// and nothing else put in DIR meanwhile.
func TestPrepareAndDeleteBundleDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	st := bundleState{Version: 1, Writable: true}
	if err := prepareBundleDir(dir, &st); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"rootfs", "rootfs-ro", "upper", "work", bundleStateName} {
		if _, err := os.Stat(filepath.Join(dir, d)); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if err := prepareBundleDir(dir, &bundleState{Version: 1}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second prepare: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "upper", "written-by-container"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "someone-elses"), []byte("x"), 0o644)
	err := removeBundle(dir, false, true)
	if err == nil || !strings.Contains(err.Error(), "something else") {
		t.Errorf("removeBundle with a foreign file: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "someone-elses" {
		t.Errorf("left in DIR: %v", ents)
	}
}
