// Package mounts recognises ocimount's own mounts and takes them down. It
// is the one place that decides "is this ours" and how to unmount it, for
// `ocimount umount`, for bundle removal and for the mount point check, so
// that all of them refuse the same things: umount2 takes off whatever is
// on top at a path (a tmpfs, someone's FUSE filesystem, a bind mount),
// data and all, without asking. What is mounted where comes from
// internal/mountinfo.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	ocifs "github.com/ocimount/ocimount/fs"
	"github.com/ocimount/ocimount/internal/mountinfo"
)

// FSType is how mountinfo types ocimount's FUSE mounts.
const FSType = "fuse." + ocifs.Subtype

// IsOcimount says whether m is a FUSE mount that ocimount made, live or
// stale. By type only: the source is whatever the mounter wrote there.
func IsOcimount(m mountinfo.Mount) bool { return m.FSType == FSType }

// NotOurs is the refusal to unmount m at p: it says what is there, and
// hint what to do about it (empty: leave it, or use umount(8)).
func NotOurs(p string, m mountinfo.Mount, hint string) error {
	if hint == "" {
		hint = "leave it, or unmount it with umount(8) if you mean to"
	}
	return fmt.Errorf("refusing to unmount %s: a %s filesystem (source %q) is mounted there, not one of ocimount's; %s",
		p, m.FSType, m.Source, hint)
}

// NothingInside refuses to unmount m at p while something is mounted on
// its files: a plain unmount would fail as "busy", and a lazy one would
// detach that mount too — someone else's filesystem, taken away with ours.
func NothingInside(ms []mountinfo.Mount, p string, m mountinfo.Mount) error {
	in := mountinfo.Inside(ms, m)
	if len(in) == 0 {
		return nil
	}
	o := in[0]
	return fmt.Errorf("refusing to unmount %s: a %s filesystem (source %q) is mounted inside it, at %s, and would go with it; unmount that first",
		p, o.FSType, o.Source, o.MountPoint)
}

// Unmount works on a healthy mount and on a stale one whose server was
// killed ("transport endpoint is not connected"): umount2 does not need
// the server. Without root it falls back to fusermount3. Callers check
// first that what is mounted at mp is ours.
func Unmount(mp string, lazy bool) error {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return err
	}
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	err = unix.Unmount(abs, flags)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s is not a mountpoint", abs)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s is busy (in use); close what uses it or pass --lazy", abs)
	case errors.Is(err, unix.EPERM):
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		out, ferr := exec.Command("fusermount3", append(args, abs)...).CombinedOutput()
		if ferr != nil {
			return fmt.Errorf("fusermount3 -u %s: %v: %s", abs, ferr, out)
		}
		return nil
	}
	if _, serr := os.Stat(abs); serr != nil && errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", abs, serr)
	}
	return fmt.Errorf("unmount %s: %w", abs, err)
}
