package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/internal/bundle"
	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/internal/mounts"
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
			if bundle.HasState(c.Args().Get(0)) { // overlay first, then FUSE
				return bundle.Unmount(c.Args().Get(0), c.Bool("lazy"))
			}
			return unmountOurs(c.Args().Get(0), c.Bool("lazy"))
		},
	}
}

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
	if !mounts.IsOcimount(top) {
		return bundle.NotOurs(p, top)
	}
	if err := mounts.NothingInside(ms, p, top); err != nil {
		return err
	}
	return mounts.Unmount(p, lazy)
}
