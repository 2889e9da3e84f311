package mounts

import (
	"strings"
	"testing"

	"github.com/ocimount/ocimount/internal/mountinfo"
)

// TestIsOcimount: ours by type only; a source naming ocimount does not
// make someone else's mount ours.
func TestIsOcimount(t *testing.T) {
	for _, c := range []struct {
		m    mountinfo.Mount
		want bool
	}{
		{mountinfo.Mount{FSType: "fuse.ocimount", Source: "oci:/img"}, true},
		{mountinfo.Mount{FSType: "fuse.sshfs", Source: "ocimount"}, false},
		{mountinfo.Mount{FSType: "tmpfs", Source: "fuse.ocimount"}, false},
		{mountinfo.Mount{FSType: "fuse", Source: "ocimount"}, false},
	} {
		if got := IsOcimount(c.m); got != c.want {
			t.Errorf("IsOcimount(%+v) = %v, want %v", c.m, got, c.want)
		}
	}
}

// TestNotOurs: the refusal names the path, the type and the source, and
// gives the caller's hint or, without one, the default.
func TestNotOurs(t *testing.T) {
	m := mountinfo.Mount{FSType: "tmpfs", Source: "none"}
	err := NotOurs("/mnt/x", m, "")
	for _, want := range []string{"refusing to unmount /mnt/x", "a tmpfs filesystem", `(source "none")`, "umount(8)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NotOurs = %q, want it to say %q", err, want)
		}
	}
	if err := NotOurs("/mnt/x", m, "do this"); !strings.HasSuffix(err.Error(), "; do this") {
		t.Errorf("NotOurs with a hint = %q", err)
	}
}
