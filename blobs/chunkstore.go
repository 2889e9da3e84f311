package blobs

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// DefaultChunkCacheMax bounds the on-disk range cache when the user does
// not: room for a few large images' hot files.
const DefaultChunkCacheMax = 8 << 30

// chunkStore is the on-disk range cache of registry blobs:
//
//	DIR/<alg>/<hex>/<chunksize>/<n>   chunk n of blob alg:hex, as fetched
//
// A chunk file is written only after it matched its digest, with a temp
// file and rename, so concurrent mounts (processes) can share the
// directory: the worst case is two of them writing the same bytes. It is
// verified again on every load: a damaged file is deleted and refetched,
// never served. Chunk files are not fsynced: a torn one fails that check.
// The total is bounded by deleting the least recently used files.
type chunkStore struct {
	dir   string
	max   int64
	logf  func(string, ...any)
	added atomic.Int64 // bytes stored since the last size check
	mu    sync.Mutex   // one prune at a time
	// bg counts background prunes; close waits for them, so a store's
	// owner (the registry of one image) ends with no goroutine left.
	bg     sync.WaitGroup
	bgMu   sync.Mutex
	closed bool
}

func openChunkStore(dir string, max int64, logf func(string, ...any)) *chunkStore {
	if max <= 0 {
		max = DefaultChunkCacheMax
	}
	s := &chunkStore{dir: dir, max: max, logf: logf}
	s.goPrune() // a cache left over the limit by an earlier run
	return s
}

// goPrune starts a background prune, unless the store is closed.
func (s *chunkStore) goPrune() {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.prune()
	}()
}

// close waits for background prunes; later stores start none.
func (s *chunkStore) close() {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.bg.Wait()
}

func (s *chunkStore) path(dg digest.Digest, size int64, idx int) string {
	return filepath.Join(s.dir, string(dg.Algorithm()), dg.Encoded(), strconv.FormatInt(size, 10), strconv.Itoa(idx))
}

// present says which chunks of a blob are on disk.
// tocPath is where a decoded TOC chunk of blob dg whose sha256 is sum is
// kept: by content, so any TOC (of any manifest) naming that chunk finds
// it and no other.
func (s *chunkStore) tocPath(dg digest.Digest, sum [32]byte) string {
	return filepath.Join(s.dir, string(dg.Algorithm()), dg.Encoded(), "toc", hex.EncodeToString(sum[:]))
}

func (s *chunkStore) present(dg digest.Digest, size int64, n int) []bool {
	p := make([]bool, n)
	ents, err := os.ReadDir(filepath.Dir(s.path(dg, size, 0)))
	if err != nil {
		return p
	}
	for _, e := range ents {
		if i, err := strconv.Atoi(e.Name()); err == nil && i >= 0 && i < n {
			p[i] = true
		}
	}
	return p
}

func (s *chunkStore) load(dg digest.Digest, size int64, idx int, sum [32]byte) ([]byte, bool) {
	return s.loadPath(s.path(dg, size, idx), sum)
}

// loadPath reads the cache file at p if it hashes to sum.
func (s *chunkStore) loadPath(p string, sum [32]byte) ([]byte, bool) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	if sha256.Sum256(data) != sum {
		s.logf("range cache: %s is damaged; refetching it", p)
		os.Remove(p)
		return nil, false
	}
	now := time.Now()
	os.Chtimes(p, now, now) // last use, for pruning
	return data, true
}

func (s *chunkStore) store(dg digest.Digest, size int64, idx int, data []byte) bool {
	return s.storePath(s.path(dg, size, idx), data)
}

// storePath writes data to the cache file at p (temp file + rename).
func (s *chunkStore) storePath(p string, data []byte) bool {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.logf("range cache: %v", err)
		return false
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		s.logf("range cache: %v", err)
		return false
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		s.logf("range cache: %v", err)
		return false
	}
	if s.added.Add(int64(len(data))) > s.max/16 {
		s.added.Store(0)
		s.goPrune()
	}
	return true
}

// prune deletes least recently used chunk files until the store is under
// 90% of its bound. Readers tolerate a chunk vanishing (they refetch).
func (s *chunkStore) prune() {
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	type file struct {
		p    string
		size int64
		t    time.Time
	}
	var files []file
	var total int64
	filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			files = append(files, file{p, fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
		return nil
	})
	if total <= s.max {
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].t.Before(files[j].t) })
	for _, f := range files {
		if total <= s.max/10*9 {
			break
		}
		if os.Remove(f.p) == nil {
			total -= f.size
		}
	}
}
