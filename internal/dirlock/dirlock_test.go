package dirlock

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestLock: a second Lock of a held directory fails at once with
// ErrLocked, also from the same process (flock is per open file); once
// released (twice: unlock is idempotent), the directory can be locked again.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("second Lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock()
	unlock2, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
	if _, err := Lock(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("Lock of a missing directory: %v", err)
	}
}
