package main

import (
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/bundle"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/overlay"
)

// bundleStateName is the file in a bundle directory that records what
// `ocimount bundle` created there, so that removal (possibly after the
// server, the runtime or ocimount itself died) undoes exactly that.
const bundleStateName = ".ocimount-bundle.json"

// bundleState is written before anything is mounted and lists everything
// the bundle may create, so that a crash at any point can be cleaned up.
type bundleState struct {
	Version int    `json:"version"`
	Source  string `json:"source"`
	// Mounts, relative to the bundle dir, top first: the order to
	// unmount them in (the overlay sits on the FUSE mount).
	Mounts []string `json:"mounts"`
	// Created lists, relative to the bundle dir and in creation order,
	// the files and directories the bundle made; --remove deletes them
	// in reverse.
	Created    []string `json:"created"`
	CreatedDir bool     `json:"createdDir"`
	Writable   bool     `json:"writable"`
	Rootless   bool     `json:"rootless"`
}

func bundleCommand() *cli.Command {
	return &cli.Command{
		Name:      "bundle",
		Usage:     "make an OCI runtime bundle (config.json + mounted rootfs) from an image, for runc/crun",
		ArgsUsage: "SOURCE DIR [-- ARGS...] | --remove DIR",
		Description: "DIR (created if missing, refused if not empty) gets rootfs/ (the image mounted\n" +
			"read-only; as root with suid, dev and allow_other) and config.json, converted from\n" +
			"the image config as the image-spec says, with runc spec's default mounts and\n" +
			"namespaces. ARGS after -- replace the image's Cmd. Then: runc run -b DIR ID.\n" +
			"--writable puts a kernel overlayfs on top (DIR/upper, DIR/work): writes land in DIR.\n" +
			"`ocimount bundle --remove DIR` unmounts and deletes what the bundle created;\n" +
			"`ocimount umount DIR` only unmounts.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "writable", Aliases: []string{"w"}, Usage: "overlayfs on top of the image, upper and work dirs in DIR (root only)"},
			&cli.BoolFlag{Name: "rootless", Usage: "config for a runtime run by this (non-root) user, as \"runc spec --rootless\" writes it"},
			&cli.BoolFlag{Name: "remove", Usage: "unmount everything the bundle at DIR mounted and delete what it created"},
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"}, Usage: "with --remove: detach mounts even if busy"},
			&cli.StringFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` to pick from a multi-platform image"},
			&cli.StringFlag{Name: "cache-dir", Usage: "index cache and server log (as for mount)"},
			&cli.StringFlag{Name: "log-file", Usage: "where the background server logs (default: CACHE-DIR/ocimount.log)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing but errors"},
		}, remoteFlags()...),
		Action: bundleAction,
	}
}

func bundleAction(c *cli.Context) error {
	args := c.Args().Slice()
	if c.Bool("remove") {
		if len(args) != 1 {
			return fmt.Errorf("bundle --remove needs DIR only, got %d argument(s)", len(args))
		}
		return removeBundle(args[0], c.Bool("lazy"), true)
	}
	if len(args) < 2 {
		return fmt.Errorf("bundle needs SOURCE and DIR, got %d argument(s)", len(args))
	}
	// The flag parser stops at SOURCE, so a "--" after DIR is still in
	// args: it only separates, it is not part of the command. Without
	// one, refuse extra arguments, so that `bundle SRC DIR --writable` is
	// not silently a container running "--writable".
	cmdArgs := args[2:]
	switch {
	case len(cmdArgs) > 0 && cmdArgs[0] == "--":
		cmdArgs = cmdArgs[1:]
	case len(cmdArgs) > 0 && !slices.Contains(os.Args, "--"):
		return fmt.Errorf("unexpected %q after DIR: flags go before SOURCE; a command to run goes after --", args[2])
	}
	src, err := blobs.ParseSource(args[0])
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(args[1])
	if err != nil {
		return err
	}
	o, err := commonMountOptions(c, src)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		// Containers need setuid binaries (su, ping), device nodes and a
		// non-root container user to be able to read its own files.
		o.allowOther, o.suid, o.dev = true, true, true
	}
	writable, rootless := c.Bool("writable"), c.Bool("rootless")
	o.mountpoint = filepath.Join(dir, "rootfs")
	if writable {
		o.mountpoint = filepath.Join(dir, "rootfs-ro")
	}

	if os.Getenv(readyFDEnv) != "" {
		// The background server: the parent prepared DIR.
		st, err := readBundleState(dir)
		if err != nil {
			return err
		}
		o.hooks = bundleHooks(dir, st, bundle.Options{
			Args:     cmdArgs,
			Writable: writable,
			Rootless: rootless,
			HostUID:  uint32(os.Geteuid()),
			HostGID:  uint32(os.Getegid()),
		})
		return serve(c.Context, o)
	}

	if writable && os.Geteuid() != 0 {
		return errors.New("--writable needs root (kernel overlayfs)")
	}
	if writable && strings.ContainsAny(dir, ",:\\") {
		// overlayfs mount options are separated by "," and ":".
		return fmt.Errorf("--writable: bundle path %q must not contain ',', ':' or '\\'", dir)
	}
	// From here on SIGINT/SIGTERM/SIGHUP must not kill this process
	// outright: it has DIR to clean up (see daemonizeInterruptible).
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)
	st := bundleState{Version: 1, Source: src.String(), Writable: writable, Rootless: rootless}
	unlock, err := prepareBundleDir(dir, &st)
	if err != nil {
		return err
	}
	defer unlock()
	err = daemonizeInterruptible(o, sigc)
	if err != nil {
		if cerr := undoBundle(dir, st); cerr != nil {
			return fmt.Errorf("%v; cleaning up %s also failed: %v", err, dir, cerr)
		}
		return err
	}
	if !o.quiet {
		what := "read-only"
		if writable {
			what = "writable (writes go to " + filepath.Join(dir, "upper") + ")"
		}
		fmt.Fprintf(os.Stderr, "bundle %s ready, rootfs %s; run it with `runc run -b %s ID`; remove with `ocimount bundle --remove %s`\n",
			dir, what, dir, dir)
	}
	return nil
}

// daemonizeInterruptible is daemonize, except that SIGINT/SIGTERM/SIGHUP
// do not kill this process: they are passed on to the server (which then
// stops loading, or unmounts, and reports an error), so that the caller
// still gets to remove what it put in DIR. A plain `mount` needs no such
// care: it creates nothing but the mount.
// sigc is notified of those signals from before DIR was prepared, so one
// that came early stops it before a server is started.
func daemonizeInterruptible(o mountOptions, sigc chan os.Signal) error {
	select {
	case sig := <-sigc:
		return fmt.Errorf("interrupted (%v) before the server started", sig)
	default:
	}
	var mu sync.Mutex
	var got os.Signal
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigc:
			mu.Lock()
			got = sig
			mu.Unlock()
			signalChildren(syscall.SIGTERM)
		case <-done:
		}
	}()
	err := daemonize(o)
	close(done)
	mu.Lock()
	defer mu.Unlock()
	if got != nil {
		if err == nil {
			// The server got as far as "ok" before it heard: the
			// caller's undo takes the mounts down.
			err = errors.New("interrupted")
		}
		return fmt.Errorf("interrupted (%v): %w", got, err)
	}
	return err
}

// signalChildren sends sig to this process's children (the server that
// daemonize started; it is in its own session, so a terminal's Ctrl-C does
// not reach it).
func signalChildren(sig syscall.Signal) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			syscall.Kill(pid, sig)
		}
	}
}

// prepareBundleDir refuses a non-empty DIR (it could hold someone's
// files, or another bundle), creates the subdirectories and writes the
// state file naming everything that may be created, before any mount. It
// returns holding an exclusive lock on DIR, for the caller to keep until
// the bundle is up or undone: two bundles started together in one empty
// DIR would otherwise both find it empty, and the loser's undo would
// delete the winner's files. `bundle --remove` takes the same lock.
func prepareBundleDir(dir string, st *bundleState) (unlock func(), err error) {
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
	release, err := lockDir(dir)
	if errors.Is(err, errLocked) {
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
	if err := writeBundleState(dir, *st); err != nil {
		undoBundle(dir, *st)
		return nil, err
	}
	for _, d := range dirs {
		// 0755 like an extracted root; the mounts cover rootfs*, and
		// upper/work belong to root (overlayfs wants work empty).
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			undoBundle(dir, *st)
			return nil, fmt.Errorf("bundle dir: %w", err)
		}
	}
	return release, nil
}

// bundleHooks: after loading, write config.json (a bad User or no command
// fails here, before anything is mounted) and, for a read-only rootfs,
// serve the image with the directories the runtime mounts on (or starts
// the process in) added where it lacks them; after the FUSE mount, put the
// overlay on top for --writable, where the runtime makes them itself.
func bundleHooks(dir string, st bundleState, bo bundle.Options) *serveHooks {
	return &serveHooks{
		loaded: func(im *loader.Image) (*overlay.Tree, error) {
			spec, err := bundle.Generate(im.Image.Config, im.Tree.FS(), bo)
			if err != nil {
				return nil, fmt.Errorf("config.json: %w", err)
			}
			tree := im.Tree
			if !bo.Writable {
				tree, _ = tree.WithDirs(bundle.Mountpoints(spec))
				if miss := bundle.MissingMountpoints(spec, tree.FS()); len(miss) > 0 {
					return nil, notDirError(tree.FS(), miss)
				}
			}
			b, err := json.MarshalIndent(spec, "", "\t")
			if err != nil {
				return nil, err
			}
			return tree, writeFileAtomic(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644)
		},
		mounted: func() (func(), error) {
			if !st.Writable {
				return func() {}, nil
			}
			target := filepath.Join(dir, "rootfs")
			data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
				filepath.Join(dir, "rootfs-ro"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
			if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
				return nil, fmt.Errorf("overlay mount at %s (%s): %w", target, data, err)
			}
			return func() { unix.Unmount(target, unix.MNT_DETACH) }, nil
		},
	}
}

// notDirError explains why a read-only bundle cannot be made: where the
// container needs a directory, the image has something else in the way
// (missing directories were added), which only the runtime could deal
// with, and only in a writable rootfs (a symlink it follows and creates
// the target of; a file is an error there too).
func notDirError(fsys iofs.FS, paths []string) error {
	var what []string
	for _, p := range paths {
		what = append(what, p+" ("+obstacle(fsys, strings.TrimPrefix(path.Clean(p), "/"))+")")
	}
	return fmt.Errorf("the container needs directories at %s; a read-only rootfs cannot replace what the image has there (with --writable the runtime gets to try)",
		strings.Join(what, ", "))
}

// obstacle describes the first component of rel that is not a directory.
func obstacle(fsys iofs.FS, rel string) string {
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := iofs.Lstat(fsys, p)
		if err != nil {
			return "/" + p + " is missing"
		}
		switch {
		case fi.Mode()&iofs.ModeSymlink != 0:
			target, _ := iofs.ReadLink(fsys, p)
			return fmt.Sprintf("/%s is a symlink to %q, not followed to add directories", p, target)
		case !fi.IsDir():
			return fmt.Sprintf("/%s is a %s in the image", p, kindName(fi.Mode()))
		}
	}
	return "not a directory"
}

func kindName(m iofs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&iofs.ModeDevice != 0:
		return "device"
	case m&iofs.ModeNamedPipe != 0:
		return "FIFO"
	}
	return "non-directory"
}

func readBundleState(dir string) (bundleState, error) {
	var st bundleState
	b, err := os.ReadFile(filepath.Join(dir, bundleStateName))
	if errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("%s is not an ocimount bundle (no %s)", dir, bundleStateName)
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, bundleStateName), err)
	}
	if st.Version != 1 {
		return st, fmt.Errorf("%s: unknown version %d", filepath.Join(dir, bundleStateName), st.Version)
	}
	// The file is ours, but do not let an edited one reach outside DIR.
	for _, p := range append(slices.Clone(st.Mounts), st.Created...) {
		if !filepath.IsLocal(p) || strings.Contains(p, "/") {
			return st, fmt.Errorf("%s: bad entry %q", filepath.Join(dir, bundleStateName), p)
		}
	}
	return st, nil
}

func writeBundleState(dir string, st bundleState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, bundleStateName), append(b, '\n'), 0o644)
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

// isBundleDir says whether dir holds a bundle state file, so that
// `ocimount umount DIR` can take the bundle's mounts down in order.
func isBundleDir(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, bundleStateName))
	return err == nil && fi.Mode().IsRegular()
}

// removeBundle unmounts the bundle's mounts top first (overlay, then
// FUSE), tolerating ones already gone and stale ones whose server died
// (umount2 needs no server), then with deleteFiles removes what the bundle
// created and nothing else. It refuses, before unmounting or deleting
// anything more, when one of those paths has a mount that is not the
// bundle's on top, or something mounted inside what it would delete.
func removeBundle(dir string, lazy, deleteFiles bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := readBundleState(abs)
	if err != nil {
		return err
	}
	unlock, err := lockDir(abs)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("%s: another ocimount is making or removing this bundle right now; try again when it is done", abs)
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := unmountBundle(abs, st, lazy); err != nil {
		return err
	}
	if !deleteFiles {
		return nil
	}
	return deleteBundleFiles(abs, st)
}

// unmountBundle takes off, top first, the mounts the state file lists —
// only ocimount's FUSE mounts and the bundle's own overlay. The state file
// says where the bundle mounted, not what is mounted there now: someone
// may have mounted over rootfs since, or made a directory that merely
// looks like a bundle.
func unmountBundle(dir string, st bundleState, lazy bool) error {
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
			if !bundleMount(dir, st, m, top, ms) {
				return notOurs(p, top)
			}
			if err := nothingInside(ms, p, top); err != nil {
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
				if uerr := unmount(p, lazy); uerr != nil {
					return uerr
				}
				continue
			}
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}

// bundleMount says whether m, on top at DIR/name, is one the bundle made:
// an ocimount FUSE mount, or for a writable bundle's rootfs the overlay
// whose lower layer is DIR/rootfs-ro (how overlayfs lists it, resolved).
func bundleMount(dir string, st bundleState, name string, m mountinfo.Mount, ms []mountinfo.Mount) bool {
	if isOcimountFUSE(m) {
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

// deleteBundleFiles removes, in reverse creation order, what the bundle
// created. Mount directories are removed with os.Remove (they must be
// empty once unmounted); only upper and work, which the bundle owns, are
// removed recursively. Nothing is removed if anything is still mounted at
// or below one of them: os.RemoveAll crosses into mounts and would empty
// them.
func deleteBundleFiles(dir string, st bundleState) error {
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
	for _, tmp := range []string{bundleStateName + ".tmp", "config.json.tmp"} {
		os.Remove(filepath.Join(dir, tmp))
	}
	if err := os.Remove(filepath.Join(dir, bundleStateName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if st.CreatedDir {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing bundle dir (something else was put there?): %w", err)
		}
	}
	return nil
}

// undoBundle takes down whatever a failed `bundle` left: the server
// unmounts on its own errors, but it may have crashed or been killed.
func undoBundle(dir string, st bundleState) error {
	if err := unmountBundle(dir, st, true); err != nil {
		return err
	}
	return deleteBundleFiles(dir, st)
}
