package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/bundle"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/overlay"
)

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
			logFileFlag(),
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
		return bundle.Remove(args[0], c.Bool("lazy"))
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
	o.mountpoint = bundle.ImageMountpoint(dir, writable)

	if os.Getenv(readyFDEnv) != "" {
		// The background server: the parent prepared DIR.
		st, err := bundle.ReadState(dir)
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
	st := bundle.State{Source: src.String(), Writable: writable, Rootless: rootless}
	unlock, err := bundle.Prepare(dir, &st)
	if err != nil {
		return err
	}
	defer unlock()
	err = daemonizeInterruptible(o, sigc)
	if err != nil {
		if cerr := bundle.Undo(dir, st); cerr != nil {
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

// bundleHooks: after loading, write config.json (a bad User or no command
// fails here, before anything is mounted) and, for a read-only rootfs,
// serve the image with the directories the runtime mounts on (or starts
// the process in) added where it lacks them; after the FUSE mount, put the
// overlay on top for --writable, where the runtime makes them itself.
func bundleHooks(dir string, st bundle.State, bo bundle.Options) *serveHooks {
	return &serveHooks{
		loaded: func(im *loader.Image) (*overlay.Tree, error) {
			spec, err := bundle.Generate(im.Image.Config, im.Tree.FS(), bo)
			if err != nil {
				return nil, fmt.Errorf("config.json: %w", err)
			}
			tree := im.Tree
			if !bo.Writable {
				tree, _ = tree.WithDirs(bundle.Mountpoints(spec))
				if err := bundle.CheckMountpoints(spec, tree.FS()); err != nil {
					return nil, err
				}
			}
			return tree, bundle.WriteConfig(dir, spec)
		},
		mounted: func() (func(), error) {
			if !st.Writable {
				return func() {}, nil
			}
			return bundle.MountOverlay(dir)
		},
	}
}
