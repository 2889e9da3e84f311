package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/internal/dirlock"
	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/internal/mounts"
)

// StateName is the file in a bundle directory that records what
// `ocimount bundle` created there, so that removal (possibly after the
// server, the runtime or ocimount itself died) undoes exactly that.
const StateName = ".ocimount-bundle.json"

// stateVersion is the only State.Version ReadState accepts.
const stateVersion = 1

// State is written before anything is mounted and lists everything the
// bundle may create, so that a crash at any point can be cleaned up.
type State struct {
	Version int    `json:"version"`
	Source  string `json:"source"`
	// Mounts, relative to the bundle dir, top first: the order to
	// unmount them in (the overlay sits on the FUSE mount).
	Mounts []string `json:"mounts"`
	// Created lists, relative to the bundle dir and in creation order,
	// the files and directories the bundle made; Remove deletes them in
	// reverse.
	Created    []string `json:"created"`
	CreatedDir bool     `json:"createdDir"`
	Writable   bool     `json:"writable"`
	Rootless   bool     `json:"rootless"`
}

// Prepare refuses a non-empty DIR (it could hold someone's files, or
// another bundle), creates the subdirectories and writes the state file
// naming everything that may be created, before any mount. The caller
// sets Source, Writable and Rootless in st; Prepare fills in the rest. It
// returns holding an exclusive lock on DIR, for the caller to keep until
// the bundle is up or undone: two bundles started together in one empty
// DIR would otherwise both find it empty, and the loser's undo would
// delete the winner's files. Remove and Unmount take the same lock.
func Prepare(dir string, st *State) (unlock func(), err error) {
	st.Version = stateVersion
	if err := os.Mkdir(dir, 0o755); err == nil {
		st.CreatedDir = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("bundle dir: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("bundle dir: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("bundle dir %s is not a directory", dir)
	}
	release, err := dirlock.Lock(dir)
	if errors.Is(err, dirlock.ErrLocked) {
		return nil, fmt.Errorf("bundle dir %s: another ocimount is making or removing a bundle there right now", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle dir: %w", err)
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle dir: %w", err)
	}
	if len(ents) > 0 {
		return nil, fmt.Errorf("bundle dir %s is not empty (found %s); give a new or empty directory", dir, ents[0].Name())
	}
	dirs := []string{"rootfs"}
	st.Mounts = []string{"rootfs"}
	if st.Writable {
		dirs = append(dirs, "rootfs-ro", "upper", "work")
		st.Mounts = []string{"rootfs", "rootfs-ro"}
	}
	st.Created = append(dirs, "config.json")
	if err := writeState(dir, *st); err != nil {
		Undo(dir, *st)
		return nil, err
	}
	for _, d := range dirs {
		// 0755 like an extracted root; the mounts cover rootfs*, and
		// upper/work belong to root (overlayfs wants work empty).
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			Undo(dir, *st)
			return nil, fmt.Errorf("bundle dir: %w", err)
		}
	}
	return release, nil
}

// ImageMountpoint is where the image's FUSE mount goes in DIR: rootfs,
// or for a writable bundle rootfs-ro, below the overlay that MountOverlay
// puts at rootfs. The same names as the mounts Prepare records.
func ImageMountpoint(dir string, writable bool) string {
	if writable {
		return filepath.Join(dir, "rootfs-ro")
	}
	return filepath.Join(dir, "rootfs")
}

// MountOverlay puts, for a writable bundle, a kernel overlayfs at
// DIR/rootfs over the image mounted at DIR/rootfs-ro, so that the
// container's writes land in DIR/upper; undo detaches it.
func MountOverlay(dir string) (undo func(), err error) {
	target := filepath.Join(dir, "rootfs")
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		filepath.Join(dir, "rootfs-ro"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return nil, fmt.Errorf("overlay mount at %s (%s): %w", target, data, err)
	}
	return func() { unix.Unmount(target, unix.MNT_DETACH) }, nil
}

// ReadState reads DIR's state file, refusing one that is not a bundle's
// or that names anything outside DIR.
func ReadState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, StateName))
	if errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("%s is not an ocimount bundle (no %s)", dir, StateName)
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, StateName), err)
	}
	if st.Version != stateVersion {
		return st, fmt.Errorf("%s: unknown version %d", filepath.Join(dir, StateName), st.Version)
	}
	// The file is ours, but do not let an edited one reach outside DIR.
	for _, p := range append(slices.Clone(st.Mounts), st.Created...) {
		if !filepath.IsLocal(p) || strings.Contains(p, "/") {
			return st, fmt.Errorf("%s: bad entry %q", filepath.Join(dir, StateName), p)
		}
	}
	return st, nil
}

func writeState(dir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, StateName), append(b, '\n'), 0o644)
}

// WriteConfig writes spec as DIR/config.json, atomically, so that a
// runtime never reads half of one.
func WriteConfig(dir string, spec *rspec.Spec) error {
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644)
}

func writeFileAtomic(name string, b []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// HasState says whether dir holds a bundle state file, so that
// `ocimount umount DIR` can take the bundle's mounts down in order.
func HasState(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, StateName))
	return err == nil && fi.Mode().IsRegular()
}

// NotOurs is mounts.NotOurs, with a hint to take the bundle down when m,
// at p, is an overlay where a bundle's rootfs is: plain umount refuses
// that overlay, and the bundle's own removal knows its order.
func NotOurs(p string, m mountinfo.Mount) error {
	hint := ""
	if m.FSType == "overlay" && HasState(filepath.Dir(p)) {
		hint = "it looks like a bundle's overlay: unmount the bundle with `ocimount umount " + filepath.Dir(p) + "`"
	}
	return mounts.NotOurs(p, m, hint)
}

// Remove takes the bundle at dir down (see Unmount) and then deletes
// what it created and nothing else.
func Remove(dir string, lazy bool) error { return remove(dir, lazy, true) }

// Unmount unmounts the bundle's mounts top first (overlay, then FUSE),
// tolerating ones already gone and stale ones whose server died (umount2
// needs no server). It refuses, before unmounting anything more, when one
// of those paths has a mount that is not the bundle's on top.
func Unmount(dir string, lazy bool) error { return remove(dir, lazy, false) }

// remove is Unmount and, with deleteFiles, the deletion; deletion too is
// refused when something is mounted inside what it would delete.
func remove(dir string, lazy, deleteFiles bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := ReadState(abs)
	if err != nil {
		return err
	}
	unlock, err := dirlock.Lock(abs)
	if errors.Is(err, dirlock.ErrLocked) {
		return fmt.Errorf("%s: another ocimount is making or removing this bundle right now; try again when it is done", abs)
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := unmountAll(abs, st, lazy); err != nil {
		return err
	}
	if !deleteFiles {
		return nil
	}
	return deleteCreated(abs, st)
}

// unmountAll takes off, top first, the mounts the state file lists —
// only ocimount's FUSE mounts and the bundle's own overlay. The state file
// says where the bundle mounted, not what is mounted there now: someone
// may have mounted over rootfs since, or made a directory that merely
// looks like a bundle.
func unmountAll(dir string, st State, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	// mountinfo names mountpoints by their resolved path.
	if rd, err := filepath.EvalSymlinks(dir); err == nil {
		dir = rd
	}
	for _, m := range st.Mounts {
		p := filepath.Join(dir, m)
		// A stack of mounts at one path (mounted twice with --force)
		// comes off one by one, as long as each is ours.
		for i := 0; i < 16; i++ {
			ms, err := mountinfo.Read()
			if err != nil {
				return fmt.Errorf("cannot tell what is mounted at %s: %w", p, err)
			}
			top, ok := mountinfo.Top(ms, p)
			if !ok {
				break
			}
			if !ownMount(dir, st, m, top, ms) {
				return NotOurs(p, top)
			}
			if err := mounts.NothingInside(ms, p, top); err != nil {
				return err
			}
			err = unix.Unmount(p, flags)
			if err == nil {
				continue
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				break
			}
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%s is busy: stop the container using it (runc delete -f ID), or pass --lazy", p)
			}
			if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
				if uerr := mounts.Unmount(p, lazy); uerr != nil {
					return uerr
				}
				continue
			}
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}

// ownMount says whether m, on top at DIR/name, is one the bundle made:
// an ocimount FUSE mount, or for a writable bundle's rootfs the overlay
// whose lower layer is DIR/rootfs-ro (how overlayfs lists it, resolved).
func ownMount(dir string, st State, name string, m mountinfo.Mount, ms []mountinfo.Mount) bool {
	if mounts.IsOcimount(m) {
		return true
	}
	if !st.Writable || name != "rootfs" || m.FSType != "overlay" {
		return false
	}
	lower, ok := m.SuperOption("lowerdir")
	if !ok {
		return false
	}
	lp, err := mountinfo.Resolve(ms, lower)
	return err == nil && lp == filepath.Join(dir, "rootfs-ro")
}

// deleteCreated removes, in reverse creation order, what the bundle
// created. Mount directories are removed with os.Remove (they must be
// empty once unmounted); only upper and work, which the bundle owns, are
// removed recursively. Nothing is removed if anything is still mounted at
// or below one of them: os.RemoveAll crosses into mounts and would empty
// them.
func deleteCreated(dir string, st State) error {
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("cannot tell what is mounted in %s: %w", dir, err)
	}
	rd := dir
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		rd = r
	}
	for _, name := range st.Created {
		if in := mountinfo.Under(ms, filepath.Join(rd, name)); len(in) > 0 {
			m := in[len(in)-1]
			return fmt.Errorf("refusing to delete %s: a %s filesystem (source %q) is mounted at %s; unmount it first",
				filepath.Join(dir, name), m.FSType, m.Source, m.MountPoint)
		}
	}
	var errs []error
	for _, name := range slices.Backward(st.Created) {
		p := filepath.Join(dir, name)
		var err error
		switch name {
		case "upper", "work":
			err = os.RemoveAll(p)
		default:
			err = os.Remove(p)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing bundle %s: %w", dir, errors.Join(errs...))
	}
	for _, tmp := range []string{StateName + ".tmp", "config.json.tmp"} {
		os.Remove(filepath.Join(dir, tmp))
	}
	if err := os.Remove(filepath.Join(dir, StateName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if st.CreatedDir {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing bundle dir (something else was put there?): %w", err)
		}
	}
	return nil
}

// Undo takes down whatever a failed `bundle` left (st as Prepare filled
// it): the server unmounts on its own errors, but it may have crashed or
// been killed. It detaches busy mounts rather than leave DIR half made.
func Undo(dir string, st State) error {
	if err := unmountAll(dir, st, true); err != nil {
		return err
	}
	return deleteCreated(dir, st)
}
