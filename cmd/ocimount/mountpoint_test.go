package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A mount point that is a FIFO (or any non-directory) is refused at once:
// opening it to list it blocked until some writer came along, so `ocimount
// mount IMG FIFO` hung instead of saying it is not a directory.
func TestCheckMountpointFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		done := make(chan error, 1)
		go func() { _, err := claimMountpoint(fifo, force); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("force=%v: %v, want a refusal saying it is not a directory", force, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("force=%v: checking a FIFO as mount point hangs", force)
		}
	}
}
