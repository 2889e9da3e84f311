// Command ocimount-snapshotter is ocimount as a containerd snapshotter: a
// gRPC server of containerd's snapshots API on a unix socket, declared to
// containerd as a proxy plugin (README: "containerd"). Layers it can serve
// lazily from their registry are never downloaded by containerd; the rest
// are ordinary overlayfs snapshots. The logic is internal/snapshotter; this
// is flags, the socket and signals. A binary of its own, so that the gRPC
// and containerd packages stay out of the mount command's start-up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"google.golang.org/grpc"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/snapshotter"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "ocimount-snapshotter: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("ocimount-snapshotter", flag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), "usage: ocimount-snapshotter [flags]\n\n"+
			"Serves containerd's snapshots API on a unix socket. Declare it in containerd's config:\n"+
			"  [proxy_plugins.ocimount]\n    type = \"snapshot\"\n    address = \"/run/ocimount/snapshotter.sock\"\n"+
			"and pull with the snapshotter \"ocimount\" (see the README for CRI and containerd 2.x).\n\nflags:\n")
		fl.PrintDefaults()
	}
	address := fl.String("address", "/run/ocimount/snapshotter.sock", "unix socket to serve on")
	root := fl.String("root", "/var/lib/ocimount/snapshotter", "state directory: metadata, snapshots, cache")
	debug := fl.Bool("debug", false, "log debug messages")
	creds := fl.String("creds", os.Getenv("OCIMOUNT_CREDS"), "registry credentials USER[:PASSWORD] for every registry (default: the Docker/podman auth files and credential helpers; $OCIMOUNT_CREDS)")
	tlsVerify := fl.Bool("tls-verify", true, "verify registry TLS certificates (false also allows plain HTTP)")
	plainHTTP := fl.Bool("plain-http", false, "talk plain HTTP to registries (loopback registries may anyway)")
	noRemoteIndex := fl.Bool("no-remote-index", false, "do not use layer indexes published in the registry (ocimount index --push)")
	rangeMax := fl.Int64("range-cache-max", 0, "bound of the on-disk cache of fetched registry ranges, in bytes (0: the default)")
	spanCache := fl.Int64("span-cache", 0, "bound of the decoded-span cache shared by all images, in bytes (0: 64 MiB)")
	config := fl.String("config", "", "JSON file of per-registry settings: {\"registries\": {\"HOST[:PORT]\": {\"creds\": \"USER:PASS\", \"tls_verify\": false, \"plain_http\": true}}}")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var regs map[string]snapshotter.Registry
	if *config != "" {
		var err error
		if regs, err = readConfig(*config); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	sn, err := snapshotter.New(ctx, snapshotter.Options{
		Root: *root,
		Remote: blobs.RemoteOptions{
			Creds:         *creds,
			Insecure:      !*tlsVerify,
			PlainHTTP:     *plainHTTP,
			ChunkCacheMax: *rangeMax,
		},
		Registries:     regs,
		NoRemoteIndex:  *noRemoteIndex,
		SpanCacheBytes: *spanCache,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := sn.Close(); err != nil {
			logger.Error("closing the snapshotter", "err", err)
		}
	}()
	l, err := listen(*address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	logger.Info("serving", "address", *address, "root", *root, "startup", time.Since(t0).Round(time.Millisecond))
	select {
	case <-ctx.Done():
		logger.Info("stopping")
		srv.GracefulStop()
		return nil
	case err := <-errc:
		return err
	}
}

// fileConfig is the --config file.
type fileConfig struct {
	Registries map[string]struct {
		Creds     string `json:"creds"`
		TLSVerify *bool  `json:"tls_verify"` // default true
		PlainHTTP bool   `json:"plain_http"`
	} `json:"registries"`
}

// readConfig reads the per-registry settings. Unknown keys are errors (a
// misspelt "tls_verify" must not silently verify), and a file with
// credentials that others can read is refused.
func readConfig(path string) (map[string]snapshotter.Registry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var c fileConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the JSON object", path)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	regs := map[string]snapshotter.Registry{}
	for host, r := range c.Registries {
		if host == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("%s: %q is not a registry host (HOST or HOST:PORT)", path, host)
		}
		if r.Creds != "" && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s holds credentials (for %s) and is readable by others (mode %v): chmod 600 it", path, host, fi.Mode().Perm())
		}
		regs[host] = snapshotter.Registry{Creds: r.Creds, Insecure: r.TLSVerify != nil && !*r.TLSVerify, PlainHTTP: r.PlainHTTP}
	}
	return regs, nil
}

// listen makes the socket, replacing a stale one (a killed server's)
// but never a live one or something that is not a socket.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(address); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", address)
		}
		if c, err := net.DialTimeout("unix", address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another snapshotter is serving there", address)
		}
		if err := os.Remove(address); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(address, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
