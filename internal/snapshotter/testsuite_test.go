package snapshotter

import (
	"context"
	"os"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
)

// requireRoot skips a test that mounts (overlayfs, FUSE) without root, or
// fails it when OCIMOUNT_INTEGRATION=1 says the machine must run it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("OCIMOUNT_INTEGRATION") == "1" {
		t.Fatal("needs root (OCIMOUNT_INTEGRATION=1 forbids skipping)")
	}
	t.Skip("needs root")
}

// TestConformance runs containerd's own snapshotter test suite
// (core/snapshots/testsuite) against the snapshotter's local snapshots:
// Prepare/View/Commit/Remove semantics, Stat, Update, Walk, Usage, and the
// trees overlayfs makes of the snapshot directories (deletions, renames,
// chown, 128 layers).
func TestConformance(t *testing.T) {
	requireRoot(t)
	// The suite knows overlayfs-based snapshotters by this name: a
	// directory of a lower layer cannot be renamed without redirect_dir.
	testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		s, err := New(ctx, Options{Root: root})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}
