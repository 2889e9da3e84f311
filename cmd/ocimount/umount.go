package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "unmount an ocimount mount (also one whose server died)",
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
			return unmount(c.Args().Get(0), c.Bool("lazy"))
		},
	}
}

// unmount works on a healthy mount and on a stale one whose server was
// killed ("transport endpoint is not connected"): umount2 does not need
// the server. Without root it falls back to fusermount3.
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
