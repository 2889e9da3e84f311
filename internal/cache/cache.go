// Package cache is ocimount's on-disk cache directory: layer indexes keyed
// by layer digest (shared by every image that uses the layer) and decoded
// copies of zstd layers that cannot be entered mid-frame.
//
// Layout (see docs/DESIGN.md):
//
//	ROOT/index/v4/<alg>/<hex>     serialized layerindex.Index (checksummed)
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
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/layerindex"
)

// Dir is a cache directory. The zero Dir caches nothing.
type Dir struct{ Root string }

// Enabled reports whether the cache is in use.
func (d Dir) Enabled() bool { return d.Root != "" }

func (d Dir) indexPath(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("cache key %q: %w", dg, err)
	}
	return filepath.Join(d.Root, "index", "v4", string(dg.Algorithm()), dg.Encoded()), nil
}

// publishedPath marks an index that came from a registry (ocimount index
// --push elsewhere) rather than from a pass over the layer here; content
// served from it gets its tar headers checked (overlay.Layer.CheckHeaders).
func (d Dir) publishedPath(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("cache key %q: %w", dg, err)
	}
	return filepath.Join(d.Root, "index", "v4-published", string(dg.Algorithm()), dg.Encoded()), nil
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

// DecodedPath is where the decoded stream of the zstd layer dg lives.
func (d Dir) DecodedPath(dg digest.Digest) string {
	return filepath.Join(d.Root, "decoded", dg.Encoded()+".tar")
}

// LoadIndex returns the cached index of layer dg. A missing entry is
// fs.ErrNotExist; a damaged one wraps layerindex.ErrBadIndex (the caller
// rebuilds and overwrites it).
func (d Dir) LoadIndex(dg digest.Digest) (*layerindex.Index, error) {
	ix, err := d.load(dg, os.ReadFile, layerindex.UnmarshalIndex)
	if err == nil {
		p, _ := d.indexPath(dg)
		now := time.Now()
		os.Chtimes(p, now, now) // last use, for prune; best effort
	}
	return ix, err
}

// LoadHeader is LoadIndex without the entry table (sizes, digests and
// checkpoints only, read from the file's head alone), for mounts whose
// merged tree is cached.
func (d Dir) LoadHeader(dg digest.Digest) (*layerindex.Index, error) {
	return d.load(dg, readHead, layerindex.UnmarshalHeader)
}

func (d Dir) load(dg digest.Digest, read func(string) ([]byte, error), parse func([]byte) (*layerindex.Index, error)) (*layerindex.Index, error) {
	p, err := d.indexPath(dg)
	if err != nil {
		return nil, err
	}
	b, err := read(p)
	if err != nil {
		return nil, err
	}
	ix, err := parse(b)
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
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Entry is one cached item, for `ocimount cache ls|prune`.
type Entry struct {
	Kind    string // "index" or "decoded"
	Digest  digest.Digest
	Path    string
	Size    int64
	LastUse time.Time
}

// List returns the cached items, least recently used first.
func (d Dir) List() ([]Entry, error) {
	var out []Entry
	for _, kind := range []string{"index", "tree"} {
		if err := d.listKind(kind, &out); err != nil {
			return nil, err
		}
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
	sort.Slice(out, func(i, j int) bool { return out[i].LastUse.Before(out[j].LastUse) })
	return out, nil
}

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
		if total <= maxBytes {
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
	ver := map[string]string{"index": "v4", "tree": "v1"}[kind]
	err := filepath.WalkDir(filepath.Join(d.Root, kind, ver), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if de.IsDir() || strings.HasPrefix(de.Name(), ".tmp-") {
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

// readHead reads only the head of an index file (sizes, digests,
// checkpoints): a few KiB to MiB, whatever the number of entries.
func readHead(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pre := make([]byte, layerindex.HeadSizeNeeds)
	if _, err := io.ReadFull(f, pre); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", p, layerindex.ErrBadIndex, err)
	}
	n, err := layerindex.HeadSize(pre)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if fi, err := f.Stat(); err != nil || int64(n) > fi.Size() {
		return nil, fmt.Errorf("%s: %w: truncated", p, layerindex.ErrBadIndex)
	}
	b := make([]byte, n)
	copy(b, pre)
	if _, err := io.ReadFull(f, b[len(pre):]); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", p, layerindex.ErrBadIndex, err)
	}
	return b, nil
}
