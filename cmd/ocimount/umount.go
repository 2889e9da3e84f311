package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	ocifs "github.com/ocimount/ocimount/fs"
	"github.com/ocimount/ocimount/internal/mountinfo"
)

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "unmount an ocimount mount (also one whose server died); refuses any other filesystem",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"}, Usage: "detach even if busy; the kernel drops the mount when its last user goes"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("umount needs MOUNTPOINT")
			}
			if isBundleDir(c.Args().Get(0)) { // bundle.go: overlay first, then FUSE
				return removeBundle(c.Args().Get(0), c.Bool("lazy"), false)
			}
			return unmountOurs(c.Args().Get(0), c.Bool("lazy"))
		},
	}
}

// ocimountFSType is how mountinfo types ocimount's FUSE mounts.
const ocimountFSType = "fuse." + ocifs.Subtype

// isOcimountFUSE says whether m is a FUSE mount that ocimount made, live
// or stale. By type only: the source is whatever the mounter wrote there.
func isOcimountFUSE(m mountinfo.Mount) bool { return m.FSType == ocimountFSType }

// unmountOurs unmounts the ocimount mount at mp. Whatever else is on top
// there (a tmpfs, someone's FUSE filesystem, a bind mount) is refused:
// umount2 would take it off, data and all, without asking.
func unmountOurs(mp string, lazy bool) error {
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("cannot tell what is mounted at %s: %w", mp, err)
	}
	p, err := mountinfo.Resolve(ms, mp)
	if err != nil {
		return err
	}
	top, ok := mountinfo.Top(ms, p)
	if !ok {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", p, err)
		}
		return fmt.Errorf("%s is not a mountpoint", p)
	}
	if !isOcimountFUSE(top) {
		return notOurs(p, top)
	}
	if err := nothingInside(ms, p, top); err != nil {
		return err
	}
	return unmount(p, lazy)
}

// nothingInside refuses to unmount m at p while something is mounted on
// its files: a plain unmount would fail as "busy", and a lazy one would
// detach that mount too — someone else's filesystem, taken away with ours.
func nothingInside(ms []mountinfo.Mount, p string, m mountinfo.Mount) error {
	in := mountinfo.Inside(ms, m)
	if len(in) == 0 {
		return nil
	}
	o := in[0]
	return fmt.Errorf("refusing to unmount %s: a %s filesystem (source %q) is mounted inside it, at %s, and would go with it; unmount that first",
		p, o.FSType, o.Source, o.MountPoint)
}

// notOurs is the refusal to unmount m at p: it says what is there.
func notOurs(p string, m mountinfo.Mount) error {
	hint := "leave it, or unmount it with umount(8) if you mean to"
	if m.FSType == "overlay" && isBundleDir(filepath.Dir(p)) {
		hint = "it looks like a bundle's overlay: unmount the bundle with `ocimount umount " + filepath.Dir(p) + "`"
	}
	return fmt.Errorf("refusing to unmount %s: a %s filesystem (source %q) is mounted there, not one of ocimount's; %s",
		p, m.FSType, m.Source, hint)
}

// unmount works on a healthy mount and on a stale one whose server was
// killed ("transport endpoint is not connected"): umount2 does not need
// the server. Without root it falls back to fusermount3. Callers check
// first that what is mounted at mp is ours.
func unmount(mp string, lazy bool) error {
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
