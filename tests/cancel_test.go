package tests

import (
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
)

// A user who interrupts `ocimount mount` during a long first mount must not
// be left with a mount (or a server) they never saw succeed.
func TestCancelledMountLeavesNothing(t *testing.T) {
	requireIntegration(t)
	big := make([]byte, 96<<20) // incompressible: indexing takes a while
	r := rand.New(rand.NewPCG(7, 7))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	dir := filepath.Join(t.TempDir(), "img")
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "big", Layers: []tartest.ImageLayer{
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.FileBytes("big", big, 0o644))},
	}})
	mnt := newMountpoint(t)
	cmd := exec.Command(ocimountBin(t), "mount", "-q", "--cache-dir", t.TempDir(), "oci:"+dir+":big", mnt)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err == nil {
		t.Skip("the mount was ready before the signal; nothing to check")
	}
	// The server notices at its next progress report and gives up.
	if !waitFor(15*time.Second, func() bool { return findMount(t, mnt) == nil && len(serverPIDs(t, mnt)) == 0 }) {
		t.Fatalf("after the waiting ocimount was killed: mount %v, servers %v", findMount(t, mnt), serverPIDs(t, mnt))
	}
	// And stays gone.
	time.Sleep(2 * time.Second)
	if findMount(t, mnt) != nil {
		t.Fatal("a mount appeared after the waiting ocimount was killed")
	}
}
