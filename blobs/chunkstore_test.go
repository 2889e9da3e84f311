package blobs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// chunkBytes adds up the chunk files under dir while holding the store's
// lock, as a store would: a consistent count.
func chunkBytes(t *testing.T, s *chunkStore) (n int, total int64) {
	t.Helper()
	ok := s.withLock(func(counted int64) int64 {
		filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
				fi, _ := d.Info()
				n++
				total += fi.Size()
			}
			return nil
		})
		return counted
	})
	if !ok {
		t.Fatal("could not take the store's lock")
	}
	return n, total
}

// Several stores on one directory (each its own open file, as separate
// processes have) writing at once never hold more than the bound between
// them, at any moment a store could look.
func TestChunkStoreBoundAcrossStores(t *testing.T) {
	dir := t.TempDir()
	const max = 300 << 10
	const piece = 64 << 10
	stores := []*chunkStore{openChunkStore(dir, max, t.Logf), openChunkStore(dir, max, t.Logf), openChunkStore(dir, max, t.Logf)}
	defer func() {
		for _, s := range stores {
			s.close()
		}
	}()
	data := make([]byte, piece)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var over []string
	var mu sync.Mutex
	watcher := openChunkStore(dir, max, t.Logf)
	defer watcher.close()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, total := chunkBytes(t, watcher); total > max {
				mu.Lock()
				over = append(over, fmt.Sprintf("%d files, %d bytes", n, total))
				mu.Unlock()
			}
			// A moment between looks: a lock held all the time would
			// (rightly) make the stores give up on the cache.
			time.Sleep(time.Millisecond)
		}
	}()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			for i := 0; i < 20; i++ {
				dg := digest.FromString(fmt.Sprintf("blob %d", w))
				if !s.store(dg, piece, i, data) {
					t.Errorf("store %d/%d failed", w, i)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watchDone
	n, total := chunkBytes(t, watcher)
	t.Logf("after 160 stores of %d bytes: %d files, %d bytes (bound %d)", piece, n, total, max)
	if total > max {
		t.Errorf("the chunk files hold %d bytes, bound %d", total, max)
	}
	if len(over) > 0 {
		t.Errorf("the bound was passed %d times while storing, e.g. %s", len(over), over[0])
	}
	if n == 0 {
		t.Error("nothing kept")
	}
}

// holdLock takes the store lock of dir the way another process would (its
// own open file) and keeps it until the test ends: a mount stopped with ^Z,
// or stuck, while it held the lock.
func holdLock(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(filepath.Join(dir, stateFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
}

// within fails the test if f does not return within a minute: a hang
// detector, far beyond any legitimate wait.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: still waiting after a minute (hung on the range cache lock)", what)
	}
}

// A process that holds the store lock and never lets go (stopped, stuck)
// must not hang the reads, the first pass or the unmount of every other
// mount sharing the cache: they give up storing instead, and say so.
func TestChunkStoreLockHeldForever(t *testing.T) {
	old := lockWait
	t.Cleanup(func() { lockWait = old }) // last: after the fixture is closed
	lockWait = 50 * time.Millisecond
	dir := t.TempDir()
	holdLock(t, dir)

	var logged atomic.Int32
	s := openChunkStore(dir, 1<<20, func(f string, a ...any) { logged.Add(1); t.Logf(f, a...) })
	within(t, "store", func() {
		if s.store(digest.FromString("x"), 4, 0, []byte("abcd")) {
			t.Error("stored without the lock")
		}
	})
	within(t, "close", s.close)
	if logged.Load() == 0 {
		t.Error("giving up on the lock was not logged")
	}

	// The same through a RemoteBlob: the read returns verified bytes.
	f := newRegFixture(t, false, dir)
	rb := f.remote(t)
	rb.SetChunkSums(testChunk, f.sums)
	p := make([]byte, 3*testChunk)
	within(t, "read", func() {
		if _, err := rb.ReadAt(p, 100); err != nil || !bytes.Equal(p, f.blob[100:][:len(p)]) {
			t.Errorf("read: %v", err)
		}
	})
	within(t, "close image", func() { f.image.Close() })
}

// DIR/.state is the store's own file; if it is anything else (a symlink
// or hard link to a file of someone else's, a directory, a FIFO) the store neither
// follows it nor hangs on it, and never writes outside DIR.
func TestChunkStoreStateNotAFile(t *testing.T) {
	for _, kind := range []string{"symlink", "dangling-symlink", "hardlink", "dir", "fifo"} {
		t.Run(kind, func(t *testing.T) {
			outside := t.TempDir()
			victim := filepath.Join(outside, "victim")
			const content = "someone else's file, not ours"
			if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			st := filepath.Join(dir, stateFile)
			var err error
			switch kind {
			case "symlink":
				err = os.Symlink(victim, st)
			case "dangling-symlink":
				err = os.Symlink(filepath.Join(outside, "created"), st)
			case "hardlink":
				err = os.Link(victim, st)
			case "dir":
				err = os.Mkdir(st, 0o755)
			case "fifo":
				err = unix.Mkfifo(st, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			s := openChunkStore(dir, 1<<20, t.Logf)
			within(t, "stores", func() {
				for i := range 4 {
					s.store(digest.FromString("x"), 4, i, []byte("abcd"))
				}
			})
			within(t, "close", s.close)
			if b, err := os.ReadFile(victim); err != nil || string(b) != content {
				t.Errorf("the file .state points to now holds %q (%v)", b, err)
			}
			if _, err := os.Lstat(filepath.Join(outside, "created")); err == nil {
				t.Error("the store created the file a dangling .state symlink points to")
			}
		})
	}
}

// A .state that lies (damaged, or written by hand) never lets the files
// pass the bound: a count near the int64 limit must not wrap around.
func TestChunkStoreStateLies(t *testing.T) {
	const max = 64 << 10
	const piece = 16 << 10
	data := make([]byte, piece)
	for _, lie := range []uint64{math.MaxInt64, math.MaxInt64 - piece/2, 1 << 63, math.MaxUint64, max} {
		t.Run(fmt.Sprint(lie), func(t *testing.T) {
			dir := t.TempDir()
			s := openChunkStore(dir, max, t.Logf)
			defer s.close()
			for i := range 4 {
				s.store(digest.FromString("x"), piece, i, data)
			}
			s.bg.Wait() // the prune at open is done: it would set the count right
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], lie)
			if err := os.WriteFile(filepath.Join(dir, stateFile), b[:], 0o644); err != nil {
				t.Fatal(err)
			}
			for i := 4; i < 12; i++ {
				s.store(digest.FromString("x"), piece, i, data)
				if _, total := chunkBytes(t, s); total > max {
					t.Fatalf(".state said %d: after store %d the files hold %d bytes, bound %d", lie, i, total, max)
				}
			}
		})
	}
}

// A range cache directory that is a symlink (moved to a bigger disk, say)
// is still bounded: the prune walks what the link points to.
func TestChunkStoreDirIsASymlink(t *testing.T) {
	const max = 64 << 10
	const piece = 16 << 10
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "v1")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	s := openChunkStore(link, max, t.Logf)
	defer s.close()
	data := make([]byte, piece)
	for i := range 12 {
		s.store(digest.FromString("x"), piece, i, data)
	}
	var total int64
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			fi, _ := d.Info()
			total += fi.Size()
		}
		return nil
	})
	if total > max || total == 0 {
		t.Errorf("the chunk files hold %d bytes, bound %d", total, max)
	}
}
