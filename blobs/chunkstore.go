package blobs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// DefaultChunkCacheMax bounds the on-disk range cache when the user does
// not: room for a few large images' hot files.
const DefaultChunkCacheMax = 8 << 30

// chunkStore is the on-disk range cache of registry blobs:
//
//	DIR/<alg>/<hex>/<chunksize>/<n>   chunk n of blob alg:hex, as fetched
//	DIR/.state                        the bytes of all chunk files (8 bytes,
//	                                  little endian); its flock is the store's lock
//
// A chunk file is written only after it matched its digest, with a temp
// file and rename, so concurrent mounts (processes) can share the
// directory: the worst case is two of them writing the same bytes. It is
// verified again on every load: a damaged file is deleted and refetched,
// never served. Chunk files are not fsynced: a torn one fails that check.
//
// The bound holds across every process sharing DIR: each chunk is written
// under an exclusive flock of DIR/.state, which says how many bytes the
// chunk files hold; a store that would pass the bound first deletes the
// least recently used files (a walk of DIR, which also sets the count
// right) down to 90% of it. The count only errs high between walks (a
// damaged file removed, someone's rm), which prunes early, never late;
// files written without the lock (an older ocimount) are counted by the
// walk each store does when it opens.
type chunkStore struct {
	dir  string
	max  int64
	logf func(string, ...any)
	mu   sync.Mutex // this process's side of the lock: flock is per open file
	// bg counts background prunes; close waits for them, so a store's
	// owner (the registry of one image) ends with no goroutine left.
	bg     sync.WaitGroup
	bgMu   sync.Mutex
	closed bool
	warned atomic.Bool // the lock could not be taken: said once
	// stuckUntil (under mu): the lock was held by someone else for
	// lockWait; stores do not wait for it again before then.
	stuckUntil time.Time
}

const stateFile = ".state"

// lockWait is how long a store waits for another process's hold of the
// lock (a store takes under a millisecond, a prune walk of a large cache
// some tens of milliseconds) before it gives up: a mount stopped with ^Z
// or stuck while holding it must not hang every other mount's reads. After
// giving up, stores skip the cache for lockSkip without waiting.
var (
	lockWait = time.Second
	lockSkip = 10 * time.Second
)

func openChunkStore(dir string, max int64, logf func(string, ...any)) *chunkStore {
	if max <= 0 {
		max = DefaultChunkCacheMax
	}
	s := &chunkStore{dir: dir, max: max, logf: logf}
	s.goPrune() // a cache left over the limit by an earlier run, or an older binary
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
		s.withLock(func(total int64) int64 { return s.prune(s.max) })
	}()
}

// close waits for background prunes; later stores start none.
func (s *chunkStore) close() {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.bg.Wait()
}

// withLock runs f holding the store's lock, in this process and across
// processes, with the chunk bytes as DIR/.state counts them (-1: unknown),
// and records the total f returns (-1: leave it unknown). false: the lock
// could not be had (f did not run).
func (s *chunkStore) withLock(f func(total int64) int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.stuckUntil) {
		return false
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		s.warnLock(err)
		return false
	}
	// Never follow a symlink planted as .state (its target is not ours to
	// write or create), nor block opening something that is not a file.
	st := filepath.Join(s.dir, stateFile)
	fh, err := os.OpenFile(st, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o644)
	if err != nil {
		s.warnLock(err)
		return false
	}
	defer fh.Close() // also drops the flock
	if fi, err := fh.Stat(); err != nil || !fi.Mode().IsRegular() {
		s.warnLock(fmt.Errorf("%s is not a regular file (remove it)", st))
		return false
	} else if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Nlink != 1 {
		// A hard link to a file elsewhere is no more ours than a symlink.
		s.warnLock(fmt.Errorf("%s has %d links, not 1 (remove it)", st, sys.Nlink))
		return false
	}
	for wait, start := time.Millisecond, time.Now(); ; wait = min(2*wait, 5*time.Millisecond) {
		err := unix.Flock(int(fh.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			s.warnLock(err)
			return false
		}
		if time.Since(start) >= lockWait {
			s.stuckUntil = time.Now().Add(lockSkip)
			s.logf("range cache: %s has been locked by another process for %v; not storing fetched chunks for %v", st, lockWait, lockSkip)
			return false
		}
		time.Sleep(wait)
	}
	total := int64(-1)
	var b [8]byte
	if n, _ := fh.ReadAt(b[:], 0); n == 8 {
		total = int64(binary.LittleEndian.Uint64(b[:]))
	}
	after := f(total)
	if after < 0 {
		fh.Truncate(0)
		return true
	}
	binary.LittleEndian.PutUint64(b[:], uint64(after))
	if _, err := fh.WriteAt(b[:], 0); err != nil {
		fh.Truncate(0) // unknown: the next store counts again
	}
	return true
}

func (s *chunkStore) warnLock(err error) {
	if !s.warned.Swap(true) {
		s.logf("range cache: %v; not storing fetched chunks", err)
	}
}

func (s *chunkStore) path(dg digest.Digest, size int64, idx int) string {
	return filepath.Join(s.dir, string(dg.Algorithm()), dg.Encoded(), strconv.FormatInt(size, 10), strconv.Itoa(idx))
}

// tocPath is where a decoded TOC chunk of blob dg whose sha256 is sum is
// kept: by content, so any TOC (of any manifest) naming that chunk finds
// it and no other.
func (s *chunkStore) tocPath(dg digest.Digest, sum [32]byte) string {
	return filepath.Join(s.dir, string(dg.Algorithm()), dg.Encoded(), "toc", hex.EncodeToString(sum[:]))
}

// present says which chunks of a blob are on disk.
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

// store writes one verified chunk, within the bound (see chunkStore).
func (s *chunkStore) store(dg digest.Digest, size int64, idx int, data []byte) bool {
	return s.storePath(s.path(dg, size, idx), data)
}

// storePath writes verified bytes to the cache file at p (temp file +
// rename) under the store's lock and within its bound: range chunks
// (store) and TOC chunks (tocPath) alike.
func (s *chunkStore) storePath(p string, data []byte) bool {
	need := int64(len(data))
	if need > s.max {
		return false // a bound smaller than a chunk keeps nothing
	}
	stored := false
	s.withLock(func(total int64) int64 {
		if fi, err := os.Lstat(p); err == nil {
			// Another mount stored it meanwhile (or it is being replaced
			// after damage): same bytes, same place.
			if total >= 0 {
				total -= fi.Size()
			}
		}
		if total < 0 || total > s.max-need { // not total+need: a damaged count near the int64 limit would wrap
			total = s.prune(s.max - need)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			s.logf("range cache: %v", err)
			return total
		}
		f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
		if err != nil {
			s.logf("range cache: %v", err)
			return total
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
			return -1 // a file may or may not have been replaced: count again
		}
		stored = true
		return total + need
	})
	return stored
}

// prune (under the lock) deletes least recently used chunk files until
// they hold at most goal bytes, and at most 90% of the bound if it has to
// delete anything (so that not every store prunes); it returns what they
// hold then. Readers tolerate a chunk vanishing (they refetch).
func (s *chunkStore) prune(goal int64) int64 {
	type file struct {
		p    string
		size int64
		t    time.Time
	}
	var files []file
	var total int64
	// The directory itself may be a symlink (the cache moved to another
	// disk): walk what it points to, which WalkDir would not enter, or the
	// walk finds nothing and the bound never holds.
	root := s.dir
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			// The state file; or a temp file, which our writers (holding
			// the lock) have none of: one over a minute old was left by a
			// killed process (younger ones may be an older binary's).
			if fi, err := d.Info(); err == nil && strings.HasPrefix(d.Name(), ".tmp-") && time.Since(fi.ModTime()) > time.Minute {
				os.Remove(p)
			}
			return nil
		}
		if fi, err := d.Info(); err == nil {
			files = append(files, file{p, fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
		return nil
	})
	if total <= goal {
		return total
	}
	goal = min(goal, s.max/10*9)
	sort.Slice(files, func(i, j int) bool { return files[i].t.Before(files[j].t) })
	for _, f := range files {
		if total <= goal {
			break
		}
		if os.Remove(f.p) == nil {
			total -= f.size
		}
	}
	return total
}
