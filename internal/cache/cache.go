// Package cache is ocimount's on-disk cache directory: layer indexes keyed
// by layer digest (shared by every image that uses the layer) and decoded
// copies of zstd layers that cannot be entered mid-frame.
//
// Layout (see docs/DESIGN.md):
//
//	ROOT/index/v5/<alg>/<hex>     serialized layerindex.Index (checksummed)
//	ROOT/index/v5-published/...   marks of indexes fetched from a registry
//	ROOT/tree/v1/<alg>/<hex>      merged tree of an image, keyed by manifest digest
//	ROOT/decoded/<hex>.tar        decoded single-frame zstd layers
//	ROOT/ocimount.log             background servers' log
//
// Writes are atomic (temp file in the same directory, fsync, rename), so
// concurrent mounts of one image never see a torn file: each either finds
// a complete index or builds and renames its own. A damaged file fails its
// checksum and is rebuilt, never trusted.
package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/layerindex"
)

// Dir is a cache directory. The zero Dir caches nothing.
type Dir struct{ Root string }

// Enabled reports whether the cache is in use.
func (d Dir) Enabled() bool { return d.Root != "" }

// indexVersionDir names the index directory after the index file format,
// so a new format starts from an empty directory instead of failing the
// old files' version check one by one; List shows the old directories'
// files as "stale" and Prune removes them first.
var indexVersionDir = fmt.Sprintf("v%d", layerindex.FormatVersion)

func (d Dir) indexPath(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("cache key %q: %w", dg, err)
	}
	return filepath.Join(d.Root, "index", indexVersionDir, string(dg.Algorithm()), dg.Encoded()), nil
}

// publishedPath marks an index that came from a registry (ocimount index
// --push elsewhere) rather than from a pass over the layer here; content
// served from it gets its tar headers checked (overlay.Layer.CheckHeaders).
func (d Dir) publishedPath(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("cache key %q: %w", dg, err)
	}
	return filepath.Join(d.Root, "index", indexVersionDir+"-published", string(dg.Algorithm()), dg.Encoded()), nil
}

// StorePublishedIndex caches a serialized index that was published in a
// registry, marked as such (the mark is written first, so a crash cannot
// leave such an index unmarked).
func (d Dir) StorePublishedIndex(dg digest.Digest, b []byte) error {
	mp, err := d.publishedPath(dg)
	if err != nil {
		return err
	}
	if err := WriteAtomic(mp, nil); err != nil {
		return err
	}
	p, err := d.indexPath(dg)
	if err != nil {
		return err
	}
	return WriteAtomic(p, b)
}

// Published reports whether the cached index of dg came from a registry.
func (d Dir) Published(dg digest.Digest) bool {
	mp, err := d.publishedPath(dg)
	if err != nil {
		return false
	}
	_, err = os.Stat(mp)
	return err == nil
}

// IndexPath is where the index of layer dg is cached.
func (d Dir) IndexPath(dg digest.Digest) (string, error) { return d.indexPath(dg) }

// ChunkDir is the registry range cache (see blobs.RemoteOptions.ChunkDir).
func (d Dir) ChunkDir() string { return filepath.Join(d.Root, "chunks", "v1") }

// DecodedPath is where the decoded stream of the zstd layer dg lives
// (dg must be a valid digest: go-digest panics on others).
func (d Dir) DecodedPath(dg digest.Digest) string {
	return filepath.Join(d.DecodedDir(), dg.Encoded()+".tar")
}

// DecodedDir holds the decoded copies, and the temp files they are
// written to before the layer's digest is known (a docker-archive layer
// has none until it is hashed).
func (d Dir) DecodedDir() string { return filepath.Join(d.Root, "decoded") }

// LoadIndex returns the cached index of layer dg. A missing entry is
// fs.ErrNotExist; a damaged one wraps layerindex.ErrBadIndex (the caller
// rebuilds and overwrites it).
func (d Dir) LoadIndex(dg digest.Digest) (*layerindex.Index, error) {
	ix, err := d.loadIndex(dg)
	if err == nil {
		p, _ := d.indexPath(dg)
		touch(p)
	}
	return ix, err
}

// LoadHeader is LoadIndex without the entry table (sizes, digests and
// checkpoints only, read from the file's head alone), for mounts whose
// merged tree is cached. The index reads its checkpoints' windows from the
// open file on demand, so the caller closes the returned closer only when
// done with the index; an open file also survives the cache being pruned
// or the index rewritten under a running mount.
func (d Dir) LoadHeader(dg digest.Digest) (*layerindex.Index, io.Closer, error) {
	p, err := d.indexPath(dg)
	if err != nil {
		return nil, nil, err
	}
	f, err := OpenFile(p)
	if err != nil {
		return nil, nil, err
	}
	ix, err := loadHead(f, p)
	if err == nil && ix.Digest != dg {
		err = fmt.Errorf("%s: holds the index of %s: %w", p, ix.Digest, layerindex.ErrBadIndex)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	touch(p) // a warm mount uses the index: keep it from prune
	return ix, f, nil
}

// Touch records a cache file's use in its mtime, which List reports as
// its last use and Prune goes by; best effort. A symlink planted in the
// cache is not followed: its target is not ours to change.
func Touch(p string) {
	unix.UtimesNanoAt(unix.AT_FDCWD, p, nil, unix.AT_SYMLINK_NOFOLLOW)
}

func touch(p string) { Touch(p) }

// OpenFile opens a cache file for reading, refusing a symlink (or
// anything but a regular file) in its place: every file of the cache is
// ours, made by rename, and a link planted there must not make a mount
// read, or later touch, a file elsewhere.
func OpenFile(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0) // NONBLOCK: a FIFO there must not hang the open
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file: %w", p, layerindex.ErrBadIndex)
	}
	return f, nil
}

// HasIndex says whether a usable index of dg is cached (its head checks).
func (d Dir) HasIndex(dg digest.Digest) bool {
	_, c, err := d.LoadHeader(dg)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func (d Dir) loadIndex(dg digest.Digest) (*layerindex.Index, error) {
	p, err := d.indexPath(dg)
	if err != nil {
		return nil, err
	}
	f, err := OpenFile(p)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	ix, err := layerindex.UnmarshalIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if ix.Digest != dg {
		return nil, fmt.Errorf("%s: holds the index of %s: %w", p, ix.Digest, layerindex.ErrBadIndex)
	}
	return ix, nil
}

// TreePath is where the merged tree of the image with this manifest is
// cached (overlay.LoadTreeFile maps it).
func (d Dir) TreePath(manifest digest.Digest) (string, error) { return d.treePath(manifest) }

func (d Dir) treePath(manifest digest.Digest) (string, error) {
	if err := manifest.Validate(); err != nil {
		return "", fmt.Errorf("cache key %q: %w", manifest, err)
	}
	return filepath.Join(d.Root, "tree", "v1", string(manifest.Algorithm()), manifest.Encoded()), nil
}

// StoreTree writes a serialized merged tree, atomically.
func (d Dir) StoreTree(manifest digest.Digest, b []byte) error {
	p, err := d.treePath(manifest)
	if err != nil {
		return err
	}
	return WriteAtomic(p, b)
}

// StoreIndex writes ix under its digest, atomically.
func (d Dir) StoreIndex(ix *layerindex.Index) error {
	p, err := d.indexPath(ix.Digest)
	if err != nil {
		return err
	}
	b, err := ix.MarshalBinary()
	if err != nil {
		return err
	}
	// A "published" mark is left alone: another mount may be storing a
	// published index of the same layer right now, and removing the
	// mark after its rename would leave that index trusted. Only an
	// explicit rebuild (ClearPublished) drops it.
	return WriteAtomic(p, b)
}

// ClearPublished drops the mark of dg's index: it was just rebuilt from
// the layer (ocimount index --verify).
func (d Dir) ClearPublished(dg digest.Digest) {
	if mp, err := d.publishedPath(dg); err == nil {
		os.Remove(mp)
	}
}

// WriteAtomic writes b to path so that readers see either the old file or
// the complete new one: temp file in the same directory, fsync, rename.
func WriteAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	t, err := NewTemp(dir)
	if err != nil {
		return err
	}
	defer t.Discard()
	if _, err := t.Write(b); err != nil {
		return err
	}
	if err := t.Publish(path); err != nil {
		return err
	}
	return t.Close() // Discard leaves a published file open (for DecodedCopy)
}

// Temp is a file being written into the cache. Where the filesystem
// allows, it has no name until Publish (O_TMPFILE): a writer killed with
// -9 halfway through a multi-gigabyte decoded copy then leaves nothing
// behind at all. Elsewhere it is a locked ".tmp-" file (CreateTemp) that
// SweepTemps removes once its writer is gone.
type Temp struct {
	*os.File
	name      string // "" while unnamed
	published bool
}

// NewTemp creates a Temp in dir, which must be on the filesystem of the
// path it will be published at.
func NewTemp(dir string) (*Temp, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o600)
	if err == nil {
		return &Temp{File: f}, nil
	}
	// EOPNOTSUPP, EISDIR (kernels or filesystems without O_TMPFILE).
	f, err = CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, err
	}
	return &Temp{File: f, name: f.Name()}, nil
}

// Publish syncs the file and puts it at path, replacing what is there
// (atomically: readers see the old file or the whole new one). The file
// stays open: a decoded copy goes on serving from it.
func (t *Temp) Publish(path string) error {
	if err := t.Sync(); err != nil {
		return err
	}
	if t.name == "" {
		// Give it a name next to path, then rename it over path (linkat
		// cannot replace). A kill between the two leaves a temp file the
		// sweeper finds: unlocked, since this one never was.
		name := filepath.Join(filepath.Dir(path), fmt.Sprintf(".tmp-%d-%d", os.Getpid(), tempSeq.Add(1)))
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", t.Fd()), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW); err != nil {
			return fmt.Errorf("linking %s: %w", name, err)
		}
		t.name = name
	}
	if err := os.Rename(t.name, path); err != nil {
		return err
	}
	t.name, t.published = "", true
	return nil
}

// Unlink removes the Temp's name, if it has one, for a caller that keeps
// the open file as anonymous storage; Discard still closes it.
func (t *Temp) Unlink() {
	if t.name != "" {
		os.Remove(t.name)
		t.name = ""
	}
}

// Discard closes and removes a Temp that was not published; after
// Publish it does nothing (the caller closes the file it kept).
func (t *Temp) Discard() {
	if t == nil || t.published || t.File == nil {
		return
	}
	t.File.Close()
	if t.name != "" {
		os.Remove(t.name)
	}
	t.File = nil
}

var tempSeq atomic.Int64

// CreateTemp creates a temp file (pattern as for os.CreateTemp; it must
// start with ".tmp-") and holds an exclusive flock on it until the file is
// closed, or the process dies. The lock is how SweepTemps tells a temp
// file that is still being written from one a killed process left behind:
// a decoded zstd layer can leave gigabytes in one.
func CreateTemp(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return f, nil
}

// tempGrace is how old an unlocked temp file must be before it counts as
// left behind: a writer that does not lock (the registry range cache,
// whose chunk writes take milliseconds) or one between creating its file
// and locking it is never mistaken for a dead one.
const tempGrace = time.Minute

// tempInUse reports whether a live process is writing the temp file p
// (holds its lock) or may be about to (it is younger than tempGrace).
func tempInUse(p string, fi fs.FileInfo) bool {
	if time.Since(fi.ModTime()) < tempGrace {
		return true
	}
	// Not followed, not waited on: a symlink or FIFO planted under a
	// temp file's name is no one's temp file (and opening a FIFO would
	// wait for a writer).
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return false
	}
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist) // gone: nobody's
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// isTemp says whether a cache file name is a temp file's.
func isTemp(name string) bool { return strings.HasPrefix(name, ".tmp-") }

// temps lists the temp files under the given directories of the cache
// (all of it if none), whether in use or not.
func (d Dir) temps(dirs ...string) []Entry {
	if len(dirs) == 0 {
		dirs = []string{d.Root}
	}
	var out []Entry
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !isTemp(de.Name()) {
				return nil
			}
			if fi, err := de.Info(); err == nil {
				out = append(out, Entry{Kind: "temp", Path: p, Size: fi.Size(), LastUse: fi.ModTime(), InUse: tempInUse(p, fi)})
			}
			return nil
		})
	}
	return out
}

// SweepTemps removes the temp files that killed processes left in the
// places a mount writes to (decoded copies, indexes, trees), and returns
// them; files still being written stay. A cold mount calls it: that is
// when the big ones (decoded copies) are made, and an interrupted first
// mount is usually followed by another.
func (d Dir) SweepTemps() []Entry {
	if !d.Enabled() {
		return nil
	}
	var removed []Entry
	for _, e := range d.temps(filepath.Join(d.Root, "decoded"), filepath.Join(d.Root, "index", indexVersionDir), filepath.Join(d.Root, "tree")) {
		if !e.InUse && os.Remove(e.Path) == nil {
			removed = append(removed, e)
		}
	}
	return removed
}

// Entry is one cached item, for `ocimount cache ls|prune`.
type Entry struct {
	// Kind is "index", "tree", "decoded", "stale" (an index of an older
	// format) or "temp" (a file being written, or left by a killed
	// process: see InUse).
	Kind    string
	Digest  digest.Digest
	Path    string
	Size    int64
	LastUse time.Time
	// InUse marks a temp file that a live process may still be writing;
	// Prune leaves it.
	InUse bool
}

// List returns the cached items, least recently used first.
func (d Dir) List() ([]Entry, error) {
	var out []Entry
	for _, kind := range []string{"index", "tree"} {
		if err := d.listKind(kind, &out); err != nil {
			return nil, err
		}
	}
	if err := d.listStale(&out); err != nil {
		return nil, err
	}
	dec, _ := os.ReadDir(filepath.Join(d.Root, "decoded"))

	for _, de := range dec {
		n := de.Name()
		if !strings.HasSuffix(n, ".tar") {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		out = append(out, Entry{Kind: "decoded", Digest: digest.NewDigestFromEncoded(digest.SHA256, strings.TrimSuffix(n, ".tar")),
			Path: filepath.Join(d.Root, "decoded", n), Size: fi.Size(), LastUse: fi.ModTime()})
	}
	out = append(out, d.temps()...)
	// Left-over temp and stale files first (nothing can use them), then
	// least recently used.
	sort.Slice(out, func(i, j int) bool {
		if si, sj := out[i].dead(), out[j].dead(); si != sj {
			return si
		}
		return out[i].LastUse.Before(out[j].LastUse)
	})
	return out, nil
}

// dead says whether nothing can use the item: Prune removes it whatever
// the bound.
func (e Entry) dead() bool { return e.Kind == "stale" || (e.Kind == "temp" && !e.InUse) }

// Prune removes least recently used items until the cache holds at most
// maxBytes, and returns what it removed. Files in use by a running mount
// stay readable by it (unlinked files live while open).
func (d Dir) Prune(maxBytes int64) ([]Entry, error) {
	all, err := d.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range all {
		total += e.Size
	}
	var removed []Entry
	for _, e := range all {
		if e.InUse {
			continue // being written: not ours to remove
		}
		if total <= maxBytes && !e.dead() {
			break
		}
		if err := os.Remove(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		total -= e.Size
		removed = append(removed, e)
	}
	return removed, nil
}

// listKind appends the files under ROOT/KIND/<version>/<alg>/<hex>.
func (d Dir) listKind(kind string, out *[]Entry) error {
	ver := map[string]string{"index": indexVersionDir, "tree": "v1"}[kind]
	return d.listDir(kind, filepath.Join(d.Root, kind, ver), out)
}

// listStale appends the files of index directories of older formats
// (index/v4, index/v4-published, ...), which this version cannot read.
func (d Dir) listStale(out *[]Entry) error {
	des, _ := os.ReadDir(filepath.Join(d.Root, "index"))
	for _, de := range des {
		// Only older formats: a newer binary sharing the cache keeps its own.
		var v int
		if _, err := fmt.Sscanf(strings.TrimSuffix(de.Name(), "-published"), "v%d", &v); err == nil && de.IsDir() && v < layerindex.FormatVersion {
			if err := d.listDir("stale", filepath.Join(d.Root, "index", de.Name()), out); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d Dir) listDir(kind, dir string, out *[]Entry) error {
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if de.IsDir() || isTemp(de.Name()) {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		alg := filepath.Base(filepath.Dir(p))
		*out = append(*out, Entry{Kind: kind, Digest: digest.NewDigestFromEncoded(digest.Algorithm(alg), de.Name()), Path: p, Size: fi.Size(), LastUse: fi.ModTime()})
		return nil
	})
	return err
}

// loadHead parses the head of the index file f (sizes, digests,
// checkpoints, chunk digests): a few KiB, whatever the number of entries
// and checkpoints, usually in a single read.
func loadHead(f *os.File, p string) (*layerindex.Index, error) {
	b := make([]byte, 64<<10)
	n, err := f.ReadAt(b, 0)
	if n < layerindex.HeadSizeNeeds {
		return nil, fmt.Errorf("%s: %w: %v", p, layerindex.ErrBadIndex, err)
	}
	hs, err := layerindex.HeadSize(b[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if hs > n {
		if fi, err := f.Stat(); err != nil || int64(hs) > fi.Size() {
			return nil, fmt.Errorf("%s: %w: truncated", p, layerindex.ErrBadIndex)
		}
		b = append(b[:n], make([]byte, hs-n)...)
		if _, err := f.ReadAt(b[n:], int64(n)); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", p, layerindex.ErrBadIndex, err)
		}
	}
	ix, err := layerindex.UnmarshalHeader(b[:hs], f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	// The head fixes the file's length: a truncated file would otherwise
	// be found out only read by read, as windows fail to load.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if fi.Size() != ix.StoredLen() {
		return nil, fmt.Errorf("%s: %w: %d bytes, its head says %d (truncated or damaged)", p, layerindex.ErrBadIndex, fi.Size(), ix.StoredLen())
	}
	return ix, nil
}
