package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	ocifs "github.com/ocimount/ocimount/fs"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/overlay"
)

func mountFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` to pick from a multi-platform image (default: this machine's)"},
		&cli.StringFlag{Name: "cache-dir", Usage: "where decoded layer caches and logs live (default: $OCIMOUNT_CACHE, /var/cache/ocimount as root, else $XDG_CACHE_HOME/ocimount)"},
		&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "serve in the foreground; unmount on SIGINT/SIGTERM"},
		&cli.BoolFlag{Name: "force", Usage: "mount even if MOUNTPOINT is already a mount point (stacking on it) or a non-empty directory (hiding its files until unmounted)"},
		&cli.BoolFlag{Name: "allow-other", Usage: "let other users see the mount (non-root needs user_allow_other in /etc/fuse.conf)"},
		&cli.BoolFlag{Name: "suid", Usage: "honour setuid/setgid bits and file capabilities (default nosuid)"},
		&cli.BoolFlag{Name: "dev", Usage: "allow device nodes to be opened as devices (default nodev)"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing but errors"},
		logFileFlag(),
		&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request (foreground)"},
		&cli.BoolFlag{Name: "prefetch", Usage: "registry images: keep each layer's bytes in the range cache while indexing it"},
	}, append(remoteFlags(), viewFlags()...)...)
}

// logFileFlag is --log-file of mount and bundle, one definition so that
// both describe the same file the same way: the server logs more than
// read errors there (warnings, mount and unmount, its stderr).
func logFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-file", Usage: "where the background server logs (default: CACHE-DIR/ocimount.log)"}
}

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount an image read-only at MOUNTPOINT",
		ArgsUsage: "SOURCE MOUNTPOINT",
		Description: "Returns once the mount is up and serving; the server keeps running in the\n" +
			"background until `ocimount umount MOUNTPOINT` (or umount/fusermount3 -u).\n" +
			"On any error nothing is left mounted and the exit status is non-zero.",
		Flags:  mountFlags(),
		Action: mountAction,
	}
}

type mountOptions struct {
	source     blobs.Source
	mountpoint string
	platform   *blobs.Options
	cacheDir   string
	foreground bool
	// force: mount on a mount point or a non-empty directory.
	force      bool
	allowOther bool
	suid, dev  bool
	quiet      bool
	logFile    string
	debug      bool
	// cli holds the command's flags, read where they are used (registry
	// options, --prefetch, --no-remote-index); commands without a flag
	// read it as unset.
	cli  *cli.Context
	view loader.View
	// hooks, when set, let another command (bundle) act on the loaded
	// image before anything is mounted and stack mounts on top after.
	hooks *serveHooks
}

// serveHooks run inside the server. loaded may refuse the image (nothing
// is mounted yet) and returns the tree to serve: the image's, or a view of
// it (a bundle adds the directories its runtime mounts on); mounted runs
// once the FUSE mount serves and returns an undo that is called if the
// mount is then abandoned.
type serveHooks struct {
	loaded  func(*loader.Image) (*overlay.Tree, error)
	mounted func() (undo func(), err error)
}

// commonMountOptions fills what mount and bundle share from their flags:
// source, platform, cache dir and log file (defaulted), quiet.
func commonMountOptions(c *cli.Context, src blobs.Source) (mountOptions, error) {
	bo, cacheDir, err := imageOptions(c)
	if err != nil {
		return mountOptions{}, err
	}
	o := mountOptions{source: src, platform: &bo, cacheDir: cacheDir, quiet: c.Bool("quiet"), logFile: c.String("log-file"), cli: c}
	if o.logFile == "" {
		o.logFile = filepath.Join(o.cacheDir, "ocimount.log")
	}
	return o, nil
}

// flag reads a boolean flag of the command that started the mount.
func (o mountOptions) flag(name string) bool { return o.cli != nil && o.cli.Bool(name) }

func mountAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("mount needs SOURCE and MOUNTPOINT, got %d argument(s)", c.NArg())
	}
	src, err := blobs.ParseSource(c.Args().Get(0))
	if err != nil {
		return err
	}
	o, err := commonMountOptions(c, src)
	if err != nil {
		return err
	}
	o.mountpoint = c.Args().Get(1)
	o.foreground = c.Bool("foreground")
	o.force = c.Bool("force")
	o.allowOther = c.Bool("allow-other")
	o.suid = c.Bool("suid")
	o.dev = c.Bool("dev")
	o.debug = c.Bool("debug")
	if o.view, err = parseView(c); err != nil {
		return err
	}
	if o.mountpoint, err = filepath.Abs(o.mountpoint); err != nil {
		return err
	}
	// Early, for a quick answer; the server checks again under a lock.
	if err := checkMountpoint(o.mountpoint, o.force); err != nil {
		return err
	}
	if !o.foreground && os.Getenv(readyFDEnv) == "" {
		return daemonize(o)
	}
	return serve(c.Context, o)
}

// serve loads the image, mounts it and serves until unmounted. In the
// background child it reports readiness (or the error) through the pipe
// its parent waits on. The steps are the functions below it, in order.
func serve(ctx context.Context, o mountOptions) (err error) {
	ready := readyPipe()
	defer func() {
		if err != nil && ready != nil {
			fmt.Fprintf(ready, "error: %v\n", err)
			ready.Close()
		}
	}()
	// Held from before the (possibly long) load until the kernel mount
	// is up: a second mount started meanwhile fails at once, one started
	// after finds a mount point. Released then, so the server does not
	// keep the directory under its mount open.
	releaseMP, err := claimMountpoint(o.mountpoint, o.force)
	if err != nil {
		return err
	}
	defer releaseMP()
	if err := os.MkdirAll(o.cacheDir, 0o700); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	logger, closeLog, err := serverLogger(o, ready != nil)
	if err != nil {
		return err
	}
	defer closeLog()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// If the waiting parent goes away (the user pressed Ctrl-C during a
	// long first mount), stop: nobody asked for a mount any more.
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	t0 := time.Now()
	im, err := loadImage(loadCtx, cancelLoad, o, logger, ready)
	if err != nil {
		return err
	}
	defer im.Close()
	srv, tree, err := mountImage(o, im, logger)
	if err != nil {
		return err
	}
	releaseMP()
	// Which mount is ours, for unmounting it later by path only while it
	// is still what the path reaches.
	ours, known := servedMount(o.mountpoint)
	unmountOwn := func() error {
		return unmountServed(o.mountpoint, ours, known, func() error {
			if err := srv.Unmount(); err != nil {
				// Busy: detach so the mountpoint is free now and the
				// kernel drops the mount when its last user goes.
				logger.Warn("unmount failed, detaching", "err", err)
				if err := unix.Unmount(o.mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("unmount %s: %w", o.mountpoint, err)
				}
			}
			return nil
		})
	}
	undo := func() {}
	if o.hooks != nil && o.hooks.mounted != nil {
		if undo, err = o.hooks.mounted(); err != nil {
			if uerr := unmountOwn(); uerr != nil {
				logger.Error("unmount", "err", uerr)
			}
			return err
		}
	}
	logger.Info("mounted", "source", o.source.String(), "entries", tree.Len(), "layers", len(im.Indexes), "elapsed", time.Since(t0))
	if stopStatus, err := serveStatus(o, im, t0); err != nil {
		logger.Warn("status socket", "err", err)
	} else {
		defer stopStatus()
	}
	err = announce(ready, o, tree, im, t0)
	ready = nil // announce closed it: the parent has its answer
	if err != nil {
		undo()
		if uerr := unmountOwn(); uerr != nil {
			logger.Error("unmount", "err", uerr)
		}
		return fmt.Errorf("the waiting ocimount went away before the mount was ready; unmounted: %w", err)
	}
	return waitUnmounted(ctx, srv, unmountOwn, logger)
}

// serverLogger logs to stderr in the foreground. The background server
// has no terminal: it logs to the log file (where daemonize sends its
// stderr too), each line naming the mount point, since mounts share the
// file; closeLog closes it.
func serverLogger(o mountOptions, background bool) (logger *slog.Logger, closeLog func(), err error) {
	if !background {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), func() {}, nil
	}
	lf, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	return slog.New(slog.NewTextHandler(lf, nil)).With("mountpoint", o.mountpoint), func() { lf.Close() }, nil
}

// loadImage loads the image and shows its progress: the background
// server sends the counts to the waiting parent, which draws them on its
// terminal (a failed send means the parent went away: cancelLoad stops the
// load); in the foreground they are drawn here, on a terminal and unless
// quiet.
func loadImage(ctx context.Context, cancelLoad context.CancelFunc, o mountOptions, logger *slog.Logger, ready *os.File) (*loader.Image, error) {
	lo := loader.Options{
		CacheDir:      o.cacheDir,
		Logf:          func(f string, a ...any) { logger.Warn(fmt.Sprintf(f, a...)) },
		Prefetch:      o.flag("prefetch"),
		NoRemoteIndex: o.flag("no-remote-index"),
		NoTOC:         o.flag("no-toc"),
		TOCPrefetch:   true,
		RemoteIndex: func(art digest.Digest, used, offered int) {
			// After the layers are indexed: says what was used, not what
			// was found (the reasons for the others are logged above).
			switch {
			case used == 0:
				logger.Warn("published layer indexes not used: none was usable; the layers were indexed here", "artifact", art, "offered", offered)
			case used < offered:
				logger.Info("using published layer indexes", "artifact", art, "layers", used, "unusable", offered-used)
			default:
				logger.Info("using published layer indexes", "artifact", art, "layers", used)
			}
		},
		View: o.view,
	}
	o.platform.Remote.Logf = lo.Logf
	var pg *progress
	switch {
	case ready != nil:
		var mu sync.Mutex
		lo.Progress = func(i int, done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			if _, err := fmt.Fprintf(ready, "progress %d %d %d\n", i, done, total); err != nil {
				cancelLoad()
			}
		}
	case !o.quiet && isTerminal(os.Stderr):
		pg = newProgress(os.Stderr, 0)
		lo.Progress = pg.update
	}
	im, err := loader.Load(ctx, o.source, *o.platform, lo)
	if pg != nil {
		pg.finish()
	}
	return im, err
}

// mountImage asks the loaded hook for the tree to serve (it may refuse
// the image before anything is mounted), mounts it and returns once the
// kernel mount serves; on error nothing is left mounted.
func mountImage(o mountOptions, im *loader.Image, logger *slog.Logger) (*fuse.Server, *overlay.Tree, error) {
	tree := im.Tree
	if o.hooks != nil && o.hooks.loaded != nil {
		var err error
		if tree, err = o.hooks.loaded(im); err != nil {
			return nil, nil, err
		}
	}
	srv, err := ocifs.Mount(o.mountpoint, tree, ocifs.Options{
		FsName:     o.source.String(),
		AllowOther: o.allowOther,
		Suid:       o.suid,
		Dev:        o.dev,
		Logger:     logger,
		Debug:      o.debug,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("mount %s: %w", o.mountpoint, err)
	}
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, nil, fmt.Errorf("mount %s: %w", o.mountpoint, err)
	}
	return srv, tree, nil
}

// announce says the mount is up: to the waiting parent, as "ok" on the
// pipe, which it then closes (an error means the parent is gone), or in
// the foreground on the terminal, unless quiet.
func announce(ready *os.File, o mountOptions, tree *overlay.Tree, im *loader.Image, t0 time.Time) error {
	if ready != nil {
		_, err := fmt.Fprintln(ready, "ok")
		ready.Close()
		return err
	}
	if !o.quiet {
		fmt.Fprintf(os.Stderr, "mounted %s at %s (%d entries, %d layers) in %v; Ctrl-C unmounts\n",
			o.source, o.mountpoint, tree.Len(), len(im.Indexes), time.Since(t0).Round(time.Millisecond))
	}
	return nil
}

// waitUnmounted serves until the mount goes: unmounted from outside
// (ocimount umount, umount, fusermount3 -u), or by this server once ctx
// is done (SIGINT/SIGTERM). A busy mount is then detached, so that the
// mount point is free now and the kernel drops the mount when its last
// user goes.
func waitUnmounted(ctx context.Context, srv *fuse.Server, unmountOwn func() error, logger *slog.Logger) error {
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err := unmountOwn(); err != nil {
			logger.Error("unmount", "err", err)
			return err
		}
		<-done
	}
	logger.Info("unmounted")
	return nil
}
