// Package snapshotter is ocimount as a containerd snapshotter (served over
// gRPC as a proxy plugin by `ocimount snapshotter`). Snapshots it cannot
// serve lazily are ordinary overlayfs snapshots: a directory per snapshot
// that containerd unpacks layers into, stacked as overlayfs lowers. A
// layer whose Prepare carries the labels containerd's unpacker and CRI
// plugin add (the chain ID it wants, the image reference, manifest and
// layer digests) is instead made available from the registry: the image's
// layers 0..N are merged by internal/loader into one tree (the `..N` view,
// whiteouts, opaque directories and hardlinks across layers resolved as
// `ocimount mount` shows them) and served by FUSE from this process; the
// snapshot is committed under the chain ID and Prepare answers "already
// exists", so containerd never fetches the layer blob. Containers get
// overlayfs with that merged tree as the (single) lower and an upper and
// work directory of their own.
//
// All merged trees are served by this one process, sharing one span cache
// and one on-disk range cache; each remote snapshot keeps its image open
// (registry connection, index heads, tree file mapping) until it is
// removed.
package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/blobs"
	ocifs "github.com/ocimount/ocimount/fs"
	"github.com/ocimount/ocimount/internal/cache"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/internal/mountinfo"
	"github.com/ocimount/ocimount/internal/mounts"
	"github.com/ocimount/ocimount/layerindex"
)

// Labels a Prepare may carry. containerd's unpacker sets the target chain
// ID; pkg/snapshotters.AppendInfoHandlerWrapper (CRI plugin, nerdctl, the
// Go client on request) sets the image labels.
const (
	LabelTargetRef      = "containerd.io/snapshot.ref"
	LabelImageRef       = "containerd.io/snapshot/cri.image-ref"
	LabelManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
	LabelLayerDigest    = "containerd.io/snapshot/cri.layer-digest"
	// LabelRemote marks a snapshot served from a registry; its value is
	// "layer N of SOURCE".
	LabelRemote = "containerd.io/snapshot/ocimount.remote"
)

// Options configure a Snapshotter.
type Options struct {
	// Root holds the metadata database, the snapshot directories and the
	// ocimount cache (cache/: layer indexes, trees, fetched ranges).
	Root string
	// Remote is how registries are reached (credentials, TLS). ChunkDir
	// is set to Root's range cache.
	Remote blobs.RemoteOptions
	// Registries override Remote's credentials and TLS settings per
	// registry host (HOST or HOST:PORT, as in image references).
	Registries map[string]Registry
	// NoRemoteIndex skips indexes published in the registry.
	NoRemoteIndex bool
	// SpanCacheBytes bounds the decoded spans of all images together
	// (0: 64 MiB).
	SpanCacheBytes int64
	// Logger receives what happens (nil: discarded).
	Logger *slog.Logger
}

// Registry is how to reach one registry.
type Registry struct {
	Creds     string // "user:password"; "" keeps Remote's (auth files, credential helpers)
	Insecure  bool   // skip TLS verification, allow plain HTTP
	PlainHTTP bool
}

// remoteFor is the registry options for src's host.
func (s *Snapshotter) remoteFor(src blobs.Source) blobs.RemoteOptions {
	ro := s.o.Remote
	host, _, _ := strings.Cut(src.Path, "/")
	if r, ok := s.o.Registries[host]; ok {
		if r.Creds != "" {
			ro.Creds = r.Creds
		}
		ro.Insecure = ro.Insecure || r.Insecure
		ro.PlainHTTP = ro.PlainHTTP || r.PlainHTTP
	}
	return ro
}

// Snapshotter implements containerd's snapshots.Snapshotter.
type Snapshotter struct {
	root  string
	ms    *storage.MetaStore
	lock  *os.File // flocked: one snapshotter per root
	log   *slog.Logger
	o     Options
	spans *layerindex.SpanCache

	mu      sync.Mutex           // guards served, loading, closed; held while Prepare mounts and commits a chain
	served  map[string]*served   // remote snapshots being served, by snapshot ID
	loading map[string]*loadCall // ensureServed loads in progress, by snapshot ID
	closed  bool

	// restore runs in the background from New; Close stops and waits.
	stopRestore context.CancelFunc
	restored    chan struct{}
}

// served is a remote snapshot's merged tree, mounted.
type served struct {
	im  *loader.Image
	srv *fuse.Server
	dir string
}

// remoteSpec is what a remote snapshot is made of, kept in its directory
// (remote.json) so that a restarted snapshotter serves it again.
type remoteSpec struct {
	Source string        `json:"source"` // docker://REPO@MANIFEST
	Layer  int           `json:"layer"`  // the tree is layers 0..Layer
	Layers []string      `json:"layers"` // their blob digests, bottom first
	Chain  digest.Digest `json:"chain"`  // chain ID of those layers (the snapshot's name)
}

const remoteFile = "remote.json"

// New opens (or creates) the snapshotter's state under o.Root. Mounts a
// killed predecessor left are taken down and the remote snapshots mounted
// again; one that cannot be (a registry away) is logged and retried when
// a container needs it.
func New(ctx context.Context, o Options) (*Snapshotter, error) {
	if o.Root == "" {
		return nil, errors.New("snapshotter: no root directory")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	// 0700: the FUSE mounts below allow other users (a container's
	// non-root processes read its lower), so the path must not.
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, err
	}
	// One process per root: two would mount over each other's snapshots
	// and clear each other's mounts as stale. The lock goes with the
	// process, so a killed one leaves none.
	lock, err := os.OpenFile(filepath.Join(root, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s is in use by another snapshotter: %w", root, err)
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		lock.Close()
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Remote.ChunkDir = cache.Dir{Root: filepath.Join(root, "cache")}.ChunkDir()
	if o.Remote.Logf == nil {
		lg := o.Logger
		o.Remote.Logf = func(f string, a ...any) { lg.Warn(fmt.Sprintf(f, a...)) }
	}
	sb := o.SpanCacheBytes
	if sb <= 0 {
		sb = 64 << 20
	}
	s := &Snapshotter{root: root, ms: ms, lock: lock, log: o.Logger, o: o, spans: layerindex.NewSpanCache(sb),
		served: map[string]*served{}, loading: map[string]*loadCall{}, restored: make(chan struct{})}
	if err := s.clearStale(); err != nil {
		ms.Close()
		lock.Close()
		return nil, err
	}
	// Restoring talks to registries (one may be down or slow): in the
	// background, so that containerd gets its socket at once; a container
	// that needs a snapshot not restored yet waits for it (ensureServed).
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopRestore = cancel
	go func() {
		defer close(s.restored)
		s.restore(rctx)
	}()
	return s, nil
}

func (s *Snapshotter) snapshotDir(id string) string { return filepath.Join(s.root, "snapshots", id) }
func (s *Snapshotter) fsDir(id string) string       { return filepath.Join(s.snapshotDir(id), "fs") }
func (s *Snapshotter) workDir(id string) string     { return filepath.Join(s.snapshotDir(id), "work") }

// clearStale unmounts the FUSE mounts of snapshot directories that no
// process serves (left by a killed snapshotter: every access fails with
// ENOTCONN). Only ocimount's own mounts below Root are touched.
func (s *Snapshotter) clearStale() error {
	ms, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, m := range mountinfo.Under(ms, filepath.Join(s.root, "snapshots")) {
		if !mounts.IsOcimount(m) {
			continue
		}
		if err := mounts.Unmount(m.MountPoint, true); err != nil {
			return fmt.Errorf("clearing the stale mount %s: %w", m.MountPoint, err)
		}
		s.log.Info("cleared a stale mount", "path", m.MountPoint)
	}
	return nil
}

// restore mounts every remote snapshot in the metadata again.
func (s *Snapshotter) restore(ctx context.Context) {
	t0 := time.Now()
	defer func() { s.log.Info("restore done", "elapsed", time.Since(t0).Round(time.Millisecond)) }()
	var ids []string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		m, err := storage.IDMap(ctx)
		for id := range m {
			ids = append(ids, id)
		}
		if errdefs.IsNotFound(err) {
			return nil // a new root: no snapshots yet
		}
		return err
	})
	if err != nil {
		s.log.Error("reading snapshot ids", "err", err)
		return
	}
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(s.snapshotDir(id), remoteFile)); err != nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if err := s.ensureServed(ctx, id); err != nil {
			s.log.Error("restoring a remote snapshot (retried when a container needs it)", "id", id, "err", err)
		} else {
			s.log.Info("restored a remote snapshot", "id", id)
		}
	}
}

// Stat implements snapshots.Snapshotter.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update implements snapshots.Snapshotter.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage implements snapshots.Snapshotter: an active snapshot's upper
// directory is measured now; a committed one's was measured at commit
// (a remote snapshot uses no snapshot directory space: its bytes are in
// the cache, shared with other snapshots and bounded on its own).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindActive {
		du, err := fs.DiskUsage(ctx, s.fsDir(id))
		if err != nil {
			return snapshots.Usage{}, err
		}
		usage = snapshots.Usage(du)
	}
	return usage, nil
}

// Prepare implements snapshots.Snapshotter. A Prepare with a target chain
// ID and the image labels first tries the layer from the registry; if
// that works the answer is ErrAlreadyExists (the unpacker then finds the
// chain ID committed and fetches nothing), otherwise the layer falls back
// to an ordinary local snapshot, logged with the reason.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	if target := base.Labels[LabelTargetRef]; target != "" {
		if _, err := s.Stat(ctx, target); err == nil {
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
		if base.Labels[LabelImageRef] != "" && base.Labels[LabelLayerDigest] != "" {
			err := s.prepareRemote(ctx, key, parent, target, base.Labels, opts)
			if err == nil {
				return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
			}
			if errdefs.IsAlreadyExists(err) {
				return nil, err
			}
			s.log.Warn("serving the layer locally (containerd downloads and unpacks it)", "layer", base.Labels[LabelLayerDigest], "image", base.Labels[LabelImageRef], "reason", err)
		}
	}
	return s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
}

// View implements snapshots.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.createSnapshot(ctx, snapshots.KindView, key, parent, opts)
}

// Mounts implements snapshots.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return s.mounts(ctx, snap)
}

// Commit implements snapshots.Snapshotter.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		du, err := fs.DiskUsage(ctx, s.fsDir(id))
		if err != nil {
			return err
		}
		_, err = storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...)
		return err
	})
}

// Remove implements snapshots.Snapshotter. A remote snapshot's mount is
// taken down and its image closed; the directory goes (Cleanup retries
// what could not be removed).
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove snapshot %q: %w", key, err)
	}
	if err := s.removeDir(id); err != nil {
		s.log.Warn("removing a snapshot directory (Cleanup retries)", "id", id, "err", err)
	}
	return nil
}

// Walk implements snapshots.Snapshotter.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Cleanup implements snapshots.Cleaner: directories of snapshots the
// metadata no longer has (a removal that failed, a crash between the two)
// are unmounted and removed.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	// The IDs and the directories are read in one write transaction: a
	// snapshot being made holds the write transaction from its Mkdir to
	// its commit, so none is caught with a directory and no ID yet (nor
	// committed between the two reads). An orphan's ID is not given out
	// while its directory exists (the new snapshot's Mkdir fails), so one
	// found here is still an orphan when it is removed.
	var orphans []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		ids, err := storage.IDMap(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		ents, err := os.ReadDir(filepath.Join(s.root, "snapshots"))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if _, ok := ids[e.Name()]; !ok {
				orphans = append(orphans, e.Name())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range orphans {
		if err := s.removeDir(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close implements snapshots.Snapshotter: every mount is taken down and
// every image closed (containers still running on them lose their
// lower; containerd closes a snapshotter only when it stops).
func (s *Snapshotter) Close() error {
	s.stopRestore()
	<-s.restored
	s.mu.Lock()
	s.closed = true
	var errs []error
	for id, sv := range s.served {
		errs = append(errs, s.unserve(sv))
		delete(s.served, id)
	}
	s.mu.Unlock()
	s.spans.Close()
	errs = append(errs, s.ms.Close())
	s.lock.Close()
	return errors.Join(errs...)
}

// createSnapshot makes an ordinary snapshot: its directories, then its
// metadata, in one transaction.
func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (_ []mount.Mount, err error) {
	if parent != "" {
		// A remote parent's tree gives the new root its owner: mount it
		// first (not inside the write transaction, which the loader must
		// not wait on).
		var pid string
		if s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
			pid, _, _, err = storage.GetInfo(ctx, parent)
			return err
		}) == nil && s.isRemote(pid) {
			if err := s.ensureServed(ctx, pid); err != nil {
				return nil, fmt.Errorf("serving snapshot %q: %w", parent, err)
			}
		}
	}
	var snap storage.Snapshot
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return err
		}
		dir := s.snapshotDir(snap.ID)
		// A directory already there (a crash between a Mkdir and its
		// commit leaves one, and the ID is given out again) is not ours
		// to remove here: Cleanup deals with it, through no foreign mount.
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(dir) // nothing mounted yet: just made
			}
		}()
		if err := os.Mkdir(s.fsDir(snap.ID), 0o755); err != nil {
			return err
		}
		if kind == snapshots.KindActive {
			if err := os.Mkdir(s.workDir(snap.ID), 0o711); err != nil {
				return err
			}
		}
		if len(snap.ParentIDs) > 0 {
			// The new root gets its parent's owner, as overlayfs
			// snapshotters do (a layer unpacked into it keeps the
			// ownership the image gave its root).
			if err := copyOwner(s.fsDir(snap.ParentIDs[0]), s.fsDir(snap.ID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.mounts(ctx, snap)
}

// mounts is the overlayfs stack of a snapshot: its own directory over its
// parents' down to the first remote one, whose merged tree stands for all
// the layers below it.
func (s *Snapshotter) mounts(ctx context.Context, snap storage.Snapshot) ([]mount.Mount, error) {
	var lowers []string
	for _, pid := range snap.ParentIDs {
		if s.isRemote(pid) {
			if err := s.ensureServed(ctx, pid); err != nil {
				return nil, fmt.Errorf("serving snapshot %s: %w", pid, err)
			}
			lowers = append(lowers, s.fsDir(pid))
			break
		}
		lowers = append(lowers, s.fsDir(pid))
	}
	if len(lowers) == 0 {
		mode := "rw"
		if snap.Kind == snapshots.KindView {
			mode = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.fsDir(snap.ID), Options: []string{mode, "rbind"}}}, nil
	}
	if snap.Kind != snapshots.KindActive {
		if len(lowers) == 1 {
			return []mount.Mount{{Type: "bind", Source: lowers[0], Options: []string{"ro", "rbind"}}}, nil
		}
		return []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}}, nil
	}
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: append([]string{
		"workdir=" + s.workDir(snap.ID),
		"upperdir=" + s.fsDir(snap.ID),
		"lowerdir=" + strings.Join(lowers, ":"),
	}, overlayOptions()...)}}, nil
}

// overlayOptions: index=off where the kernel knows it. With the index on,
// overlayfs records the lower filesystem's identity in the upper
// directory, and a remote lower is a new FUSE filesystem after every
// snapshotter restart: the container's next mount would be refused.
var overlayOptions = sync.OnceValue(func() []string {
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		return []string{"index=off"}
	}
	return nil
})

func (s *Snapshotter) isRemote(id string) bool {
	_, err := os.Stat(filepath.Join(s.snapshotDir(id), remoteFile))
	return err == nil
}

// prepareRemote serves layers 0..N of the image from the registry and
// commits them as target. N follows from the parent: none is layer 0, a
// remote parent of layer n makes this n+1 (of this image: a parent shared
// with another image has the same chain, hence the same layers below). A
// local parent is not built upon: the layer is then served locally too.
func (s *Snapshotter) prepareRemote(ctx context.Context, key, parent, target string, labels map[string]string, opts []snapshots.Opt) error {
	n := 0
	if parent != "" {
		var pid string
		err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
			pid, _, _, err = storage.GetInfo(ctx, parent)
			return err
		})
		if err != nil {
			return fmt.Errorf("parent %q: %w", parent, err)
		}
		ps, err := readSpec(s.snapshotDir(pid))
		if err != nil {
			return fmt.Errorf("parent %q is a local snapshot", parent)
		}
		n = ps.Layer + 1
	}
	src, err := registrySource(labels[LabelImageRef], labels[LabelManifestDigest])
	if err != nil {
		return err
	}
	spec := remoteSpec{Source: src.String(), Layer: n, Chain: digest.Digest(target)}
	im, err := s.load(ctx, &spec)
	if err != nil {
		return err
	}
	if got := spec.Layers[n]; got != labels[LabelLayerDigest] {
		im.Close()
		return fmt.Errorf("layer %d of %s is %s, the label says %s", n, src, got, labels[LabelLayerDigest])
	}
	// A layer known only from a published index or its TOC has not been
	// read: read its first piece as it will be served (checked against
	// the index's chunk digests or the TOC's), so that a blob the
	// registry lacks or serves wrong fails here, and containerd's own
	// download then fails the pull, rather than a container's reads.
	if err := probeLayer(im, n); err != nil {
		im.Close()
		return fmt.Errorf("layer %d (%s): %w", n, spec.Layers[n], err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		sv     *served
		id     string
		doneTx bool // the transaction's work succeeded (its commit may still fail)
	)
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		snap, err := storage.CreateSnapshot(ctx, snapshots.KindActive, key, parent, opts...)
		if err != nil {
			return err
		}
		id = snap.ID
		dir := s.snapshotDir(id)
		// Made before the undo is armed: a directory already there is
		// not this snapshot's (see createSnapshot).
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		defer func() {
			// Undone while the write transaction still holds the ID:
			// no other snapshot can have been given it yet.
			if err != nil {
				if sv != nil {
					s.unserve(sv)
					sv = nil
				}
				os.RemoveAll(dir) // unmounted above
			}
		}()
		if err := os.Mkdir(s.fsDir(id), 0o755); err != nil {
			return err
		}
		b, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		if err := cache.WriteAtomic(filepath.Join(dir, remoteFile), b); err != nil {
			return err
		}
		if sv, err = s.serve(im, id, spec); err != nil {
			return err
		}
		im = nil // sv owns it
		rl := snapshots.WithLabels(map[string]string{LabelRemote: "layer " + strconv.Itoa(n) + " of " + spec.Source})
		if _, err := storage.CommitActive(ctx, key, target, snapshots.Usage{}, append(opts, rl)...); err != nil {
			return err
		}
		doneTx = true
		return nil
	})
	if im != nil {
		im.Close()
	}
	if err != nil {
		if doneTx {
			// The commit failed after the mount was up. The ID may be
			// given out again, but not before this directory is gone
			// (a new snapshot's Mkdir fails while it exists).
			s.unserve(sv)
			os.RemoveAll(s.snapshotDir(id))
		}
		return err
	}
	s.served[id] = sv
	s.log.Info("serving a remote snapshot", "id", id, "chain", target, "source", spec.Source, "layers", n+1)
	return nil
}

// load loads the ..N view of spec's image and checks that it is the chain
// spec names. It fills spec.Layers.
func (s *Snapshotter) load(ctx context.Context, spec *remoteSpec) (*loader.Image, error) {
	src, err := blobs.ParseSource(spec.Source)
	if err != nil {
		return nil, err
	}
	lg := s.log.With("source", spec.Source)
	im, err := loader.Load(ctx, src, blobs.Options{Remote: s.remoteFor(src)}, loader.Options{
		CacheDir:      filepath.Join(s.root, "cache"),
		Logf:          func(f string, a ...any) { lg.Warn(fmt.Sprintf(f, a...)) },
		NoRemoteIndex: s.o.NoRemoteIndex,
		RemoteIndex: func(art digest.Digest, used, offered int) {
			// Called once the layers are indexed: what was used, not what
			// was offered (the loader logs why each one was passed over).
			if used == 0 {
				lg.Warn("published layer indexes not used: none was usable; the layers were indexed here", "artifact", art, "offered", offered)
				return
			}
			lg.Info("using published layer indexes", "artifact", art, "layers", used, "unusable", offered-used)
		},
		View:      loader.View{Kind: loader.ViewPrefix, Layer: spec.Layer},
		SpanCache: s.spans,
	})
	if err != nil {
		return nil, err
	}
	layers := im.Image.Layers[:spec.Layer+1]
	diffIDs := make([]digest.Digest, len(layers))
	spec.Layers = make([]string, len(layers))
	for i, l := range layers {
		diffIDs[i], spec.Layers[i] = l.DiffID, l.Descriptor.Digest.String()
	}
	if got := identity.ChainID(diffIDs); got != spec.Chain {
		im.Close()
		return nil, fmt.Errorf("layers 0..%d of %s have chain ID %s, not %s", spec.Layer, spec.Source, got, spec.Chain)
	}
	return im, nil
}

// probeLayer reads the first byte of layer n as reads will get it. A TOC
// layer's blob has no chunk table (its ReadAt refuses): its first byte is
// read through the layer's TOC reader, which fetches the chunk holding it
// and checks it against the TOC's chunk digest.
func probeLayer(im *loader.Image, n int) error {
	var one [1]byte
	if ix := im.Indexes[n]; ix != nil && ix.TOC != nil {
		ls := im.Tree.Layers()
		if n >= len(ls) || ls[n].Content == nil {
			return fmt.Errorf("no reader for TOC layer %d", n)
		}
		if ix.TOC.Size == 0 {
			return nil // no file data: its footer and TOC were read to load it
		}
		if _, err := ls[n].Content.ReadAt(one[:], 0); err != nil && err != io.EOF {
			return err
		}
		return nil
	}
	if b := im.Image.Layers[n].Blob; b.Size() > 0 {
		if _, err := b.ReadAt(one[:], 0); err != nil {
			return err
		}
	}
	return nil
}

// serve mounts im's tree at the snapshot's fs directory.
func (s *Snapshotter) serve(im *loader.Image, id string, spec remoteSpec) (*served, error) {
	dir := s.fsDir(id)
	srv, err := ocifs.Mount(dir, im.Tree, ocifs.Options{
		FsName: spec.Source,
		Source: spec.Source,
		// Containers' processes of any user read their lower; the
		// snapshot root is 0700, so nobody else reaches it.
		AllowOther: true,
		Suid:       true,
		Dev:        true,
		Logger:     s.log.With("snapshot", id),
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return &served{im: im, srv: srv, dir: dir}, nil
}

// unserve unmounts a served tree and closes its image. A mount still in
// use (an overlay of a container containerd lost track of) is detached:
// it goes when its last user does.
func (s *Snapshotter) unserve(sv *served) error {
	var errs []error
	if err := sv.srv.Unmount(); err != nil {
		if err := mounts.Unmount(sv.dir, true); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, sv.im.Close())
	return errors.Join(errs...)
}

// ensureServed mounts remote snapshot id if it is not served (after a
// restart, or when restoring it failed).
func (s *Snapshotter) ensureServed(ctx context.Context, id string) error {
	s.mu.Lock()
	if _, ok := s.served[id]; ok {
		s.mu.Unlock()
		return nil
	}
	if c, ok := s.loading[id]; ok {
		// Another caller is loading it: wait for that one.
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	c := &loadCall{done: make(chan struct{})}
	s.loading[id] = c
	s.mu.Unlock()

	// The load talks to the registry: without the lock, so that other
	// snapshots' calls go on meanwhile.
	sv, err := s.loadServed(ctx, id)
	s.mu.Lock()
	delete(s.loading, id)
	if err == nil {
		if s.closed {
			s.unserve(sv)
			err = errClosed
		} else {
			s.served[id] = sv
		}
	}
	s.mu.Unlock()
	c.err = err
	close(c.done)
	return err
}

var errClosed = errors.New("snapshotter closed")

// loadCall is an ensureServed in progress.
type loadCall struct {
	done chan struct{}
	err  error
}

// loadServed loads remote snapshot id from its remote.json and mounts it.
func (s *Snapshotter) loadServed(ctx context.Context, id string) (*served, error) {
	spec, err := readSpec(s.snapshotDir(id))
	if err != nil {
		return nil, err
	}
	want := append([]string(nil), spec.Layers...)
	im, err := s.load(ctx, &spec)
	if err != nil {
		return nil, err
	}
	if strings.Join(spec.Layers, ",") != strings.Join(want, ",") {
		im.Close()
		return nil, fmt.Errorf("%s no longer has the layers it had (%v, now %v)", spec.Source, want, spec.Layers)
	}
	sv, err := s.serve(im, id, spec)
	if err != nil {
		im.Close()
		return nil, err
	}
	return sv, nil
}

// removeDir takes down snapshot id's mount (if served) and removes its
// directory, unless something that is not ours is mounted inside it.
func (s *Snapshotter) removeDir(id string) error {
	s.mu.Lock()
	if sv, ok := s.served[id]; ok {
		delete(s.served, id)
		if err := s.unserve(sv); err != nil {
			s.log.Warn("unmounting a removed snapshot", "id", id, "err", err)
		}
	}
	s.mu.Unlock()
	dir := s.snapshotDir(id)
	ms, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, m := range mountinfo.Under(ms, dir) {
		if mounts.IsOcimount(m) {
			if err := mounts.Unmount(m.MountPoint, true); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("not removing %s: a %s filesystem is mounted at %s", dir, m.FSType, m.MountPoint)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	s.log.Info("removed a snapshot directory", "id", id)
	return nil
}

// copyOwner gives dst the owner of src.
func copyOwner(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Lchown(dst, int(sys.Uid), int(sys.Gid))
}

func readSpec(dir string) (remoteSpec, error) {
	var spec remoteSpec
	b, err := os.ReadFile(filepath.Join(dir, remoteFile))
	if err != nil {
		return spec, err
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, fmt.Errorf("%s: %w", filepath.Join(dir, remoteFile), err)
	}
	if spec.Layer < 0 || len(spec.Layers) != spec.Layer+1 {
		return spec, fmt.Errorf("%s: layer %d with %d layer digests", filepath.Join(dir, remoteFile), spec.Layer, len(spec.Layers))
	}
	return spec, nil
}

// registrySource is the registry source of the manifest a layer belongs
// to: the image reference's repository, pinned to the manifest digest (a
// tag may have moved since containerd resolved it).
func registrySource(imageRef, manifest string) (blobs.Source, error) {
	dg, err := digest.Parse(manifest)
	if err != nil {
		return blobs.Source{}, fmt.Errorf("manifest digest label %q: %w", manifest, err)
	}
	src, err := blobs.ParseSource("docker://" + imageRef)
	if err != nil {
		return blobs.Source{}, fmt.Errorf("image reference label %q: %w", imageRef, err)
	}
	src.Ref = dg.String()
	return src, nil
}
