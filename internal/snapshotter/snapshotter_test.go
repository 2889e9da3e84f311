package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/ocimount/ocimount/blobs"
	"golang.org/x/sys/unix"
)

func newTest(t *testing.T) (*Snapshotter, context.Context, string) {
	t.Helper()
	requireRoot(t)
	root := t.TempDir()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s, err := New(ctx, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ctx, root
}

// TestCleanup: directories the metadata does not know (a crash between
// the two) go, but never through a mount that is not ours.
func TestCleanup(t *testing.T) {
	s, ctx, root := newTest(t)
	if _, err := s.Prepare(ctx, "kept", ""); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(root, "snapshots", "999")
	guarded := filepath.Join(root, "snapshots", "998")
	for _, d := range []string{orphan, guarded} {
		if err := os.MkdirAll(filepath.Join(d, "fs", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vol := filepath.Join(guarded, "fs", "sub")
	if err := unix.Mount("tmpfs", vol, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(vol, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(vol, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.Cleanup(ctx)
	if err == nil || !strings.Contains(err.Error(), "tmpfs") {
		t.Errorf("Cleanup with a tmpfs inside an orphan: err = %v, want a refusal naming it", err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan directory still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vol, "precious")); err != nil {
		t.Errorf("Cleanup reached into a mount: %v", err)
	}
	if _, err := s.Mounts(ctx, "kept"); err != nil {
		t.Errorf("a known snapshot suffered: %v", err)
	}
	unix.Unmount(vol, 0)
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(guarded); !os.IsNotExist(err) {
		t.Errorf("orphan directory still there after its mount went: %v", err)
	}
}

// TestOneProcessPerRoot: a second snapshotter on a root in use is refused
// (it would clear the first one's mounts as stale).
func TestOneProcessPerRoot(t *testing.T) {
	_, ctx, root := newTest(t)
	if s2, err := New(ctx, Options{Root: root}); err == nil {
		s2.Close()
		t.Fatal("a second snapshotter opened a root in use")
	}
}

// TestRemoteFor: per-registry settings apply to their host only, and add
// to (never remove) the global ones.
func TestRemoteFor(t *testing.T) {
	s := &Snapshotter{o: Options{
		Remote:     blobs.RemoteOptions{Creds: "global:pw"},
		Registries: map[string]Registry{"r.example:5000": {Creds: "u:p", Insecure: true}},
	}}
	src := func(path string) blobs.Source { return blobs.Source{Transport: blobs.TransportDocker, Path: path} }
	if ro := s.remoteFor(src("r.example:5000/team/app")); ro.Creds != "u:p" || !ro.Insecure {
		t.Errorf("r.example:5000: %+v", ro)
	}
	for _, p := range []string{"r.example/team/app", "other.example:5000/r.example:5000"} {
		if ro := s.remoteFor(src(p)); ro.Creds != "global:pw" || ro.Insecure {
			t.Errorf("%s got r.example:5000's settings: %+v", p, ro)
		}
	}
}

// TestCleanupDuringCreate: Cleanup running while a snapshot is being made
// (its directory exists, its metadata is not committed yet) must not take
// that directory as an orphan. Before the scan ran in a write transaction,
// Cleanup read the IDs, then the directory list, and removed the new one.
func TestCleanupDuringCreate(t *testing.T) {
	s, ctx, root := newTest(t)
	made, release := make(chan string), make(chan struct{})
	txDone := make(chan error, 1)
	go func() {
		txDone <- s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
			snap, err := storage.CreateSnapshot(ctx, snapshots.KindActive, "new", "")
			if err != nil {
				close(made)
				return err
			}
			if err := os.MkdirAll(s.fsDir(snap.ID), 0o755); err != nil {
				close(made)
				return err
			}
			made <- snap.ID
			<-release
			return nil
		})
	}()
	id, ok := <-made
	if !ok {
		t.Fatal(<-txDone)
	}
	cleaned := make(chan error, 1)
	go func() { cleaned <- s.Cleanup(ctx) }()
	// Give Cleanup the chance to run ahead of the commit (it must wait for
	// it instead); either way the directory must survive.
	select {
	case err := <-cleaned:
		cleaned <- err
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	if err := <-txDone; err != nil {
		t.Fatal(err)
	}
	if err := <-cleaned; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", id, "fs")); err != nil {
		t.Errorf("Cleanup removed the directory of a snapshot being created: %v", err)
	}
}

// TestCreateOverStrayDir: a directory left where the next snapshot ID's
// goes (a crash between its Mkdir and its commit reuses the ID) is not
// the new snapshot's: a failed Prepare must not remove it, least of all
// through a filesystem mounted inside it.
func TestCreateOverStrayDir(t *testing.T) {
	s, ctx, root := newTest(t)
	stray := filepath.Join(root, "snapshots", "1")
	vol := filepath.Join(stray, "fs", "sub")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", vol, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(vol, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(vol, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Prepare(ctx, "a", "") // fails or not: ID 1's directory exists
	if _, err := os.Stat(filepath.Join(vol, "precious")); err != nil {
		t.Errorf("Prepare removed files of a directory it did not make: %v", err)
	}
}
