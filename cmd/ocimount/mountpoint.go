package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/internal/dirlock"
	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/internal/mounts"
)

// openDir opens dir, which must be a directory: O_DIRECTORY fails on
// anything else at once (ENOTDIR), where a plain open of a FIFO would wait
// for a writer.
func openDir(dir string) (*os.File, error) {
	return os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

// checkMountpoint refuses to mount at mp when something is mounted there
// already (a second mount would stack on it silently) or when mp is a
// directory with files in it (the mount would hide them), unless force.
// A stale mount is found from mountinfo without being looked up.
func checkMountpoint(mp string, force bool) error {
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("cannot tell what is mounted at %s: %w", mp, err)
	}
	p, err := mountinfo.Resolve(ms, mp)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	if top, ok := mountinfo.Top(ms, p); ok && !force {
		hint := "unmount it first"
		if mounts.IsOcimount(top) {
			hint = "unmount it first (ocimount umount " + mp + ")"
		}
		return fmt.Errorf("%s is already a mount point (a %s filesystem, source %q is mounted there): refusing to mount on top of it; %s, or pass --force to stack this mount on it",
			mp, top.FSType, top.Source, hint)
	}
	f, err := openDir(mp)
	if errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("mountpoint %s is not a directory", mp)
	}
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	defer f.Close()
	if force {
		return nil
	}
	names, err := f.Readdirnames(1)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return fmt.Errorf("mountpoint: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%s is not empty (it holds %s): the mount would hide its files; give an empty directory, or pass --force to cover them until unmounted",
			mp, names[0])
	}
	return nil
}

// claimMountpoint is checkMountpoint under an exclusive lock on the
// mount point directory, held until release — by the server, from before
// it loads the image until its mount is up — so that of two mounts started
// together on one directory exactly one mounts: the other finds the lock
// taken, or, once the first released it, a mount point. The lock is on the
// directory's inode as opened: after the mount, a new open reaches the
// mounted root, which is why the check runs again once the lock is held.
func claimMountpoint(mp string, force bool) (release func(), err error) {
	if err := checkMountpoint(mp, force); err != nil {
		return nil, err
	}
	unlock, err := dirlock.Lock(mp)
	if errors.Is(err, dirlock.ErrLocked) {
		return nil, fmt.Errorf("another ocimount is mounting at %s right now", mp)
	}
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	if err := checkMountpoint(mp, force); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// servedMount finds, right after this server's mount came up, which
// mountinfo entry it is: the ocimount FUSE mount on top at mp whose device
// is the one a stat of mp reaches (the server answers that stat itself).
// ok is false if it cannot tell.
func servedMount(mp string) (m mountinfo.Mount, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		return m, false
	}
	ms, err := mountinfo.Read()
	if err != nil {
		return m, false
	}
	p, err := mountinfo.Resolve(ms, mp)
	if err != nil {
		return m, false
	}
	top, ok := mountinfo.Top(ms, p)
	if !ok || !mounts.IsOcimount(top) || top.Dev != fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)) {
		return m, false
	}
	return top, true
}

// unmountServed takes the server's own mount (ours, if known) off mp.
// umount2 goes by path and takes off whatever a lookup of mp reaches, so
// it is called only if that is this server's mount and nothing is mounted
// inside it (a lazy detach would take that along): otherwise the error
// names what is in the way and the mount stays — stale once the server
// exits, for `ocimount umount` once it is uncovered. A mount already gone
// is done.
func unmountServed(mp string, ours mountinfo.Mount, known bool, unmount func() error) error {
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("cannot tell what is mounted at %s: %w", mp, err)
	}
	if known && !slices.ContainsFunc(ms, func(m mountinfo.Mount) bool { return m.ID == ours.ID }) {
		return nil
	}
	p, err := mountinfo.Resolve(ms, mp)
	if err != nil {
		return err
	}
	top, ok := mountinfo.Top(ms, p)
	if !ok {
		return fmt.Errorf("not unmounting %s: this server's mount is not what the path reaches now (a mount above it covers it); leaving it", mp)
	}
	if (known && top.ID != ours.ID) || !mounts.IsOcimount(top) {
		return fmt.Errorf("not unmounting %s: a %s filesystem (source %q) is mounted over this server's mount; unmount it, then run `ocimount umount %s`", mp, top.FSType, top.Source, mp)
	}
	if err := mounts.NothingInside(ms, mp, top); err != nil {
		return err
	}
	return unmount()
}
