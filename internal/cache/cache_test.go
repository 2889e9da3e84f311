package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

func index(t *testing.T, content string) *layerindex.Index {
	tb := tartest.Tar(t, tartest.File("f", content, 0o644))
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tb), layerindex.None, layerindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestStoreLoadPrune(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	a, b := index(t, "a"), index(t, "bb")
	if _, err := d.LoadIndex(a.Digest); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty cache: err = %v, want ErrNotExist", err)
	}
	// Concurrent writers of one index never leave a torn file.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); d.StoreIndex(a) }()
	}
	wg.Wait()
	if err := d.StoreIndex(b); err != nil {
		t.Fatal(err)
	}
	if got, err := d.LoadIndex(a.Digest); err != nil || got.Digest != a.Digest || len(got.Entries) != 1 {
		t.Fatalf("LoadIndex = %v, %v", got, err)
	}
	h, hc, err := d.LoadHeader(b.Digest)
	if err != nil || h.Entries != nil || h.DiffID != b.DiffID {
		t.Fatalf("LoadHeader = %+v, %v", h, err)
	}
	hc.Close()
	if !d.HasIndex(b.Digest) {
		t.Fatal("HasIndex = false for a stored index")
	}
	// A file stored under the wrong name is not trusted.
	pa, _ := d.indexPath(a.Digest)
	pb, _ := d.indexPath(b.Digest)
	raw, _ := os.ReadFile(pa)
	os.WriteFile(pb, raw, 0o600)
	if _, err := d.LoadIndex(b.Digest); !errors.Is(err, layerindex.ErrBadIndex) {
		t.Errorf("index under another digest: err = %v, want ErrBadIndex", err)
	}
	d.StoreIndex(b)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(pa, old, old)
	es, err := d.List()
	if err != nil || len(es) != 2 || es[0].Digest != a.Digest {
		t.Fatalf("List = %+v, %v; want 2 entries, least recently used (a) first", es, err)
	}
	removed, err := d.Prune(es[1].Size)
	if err != nil || len(removed) != 1 || removed[0].Digest != a.Digest {
		t.Fatalf("Prune = %+v, %v; want a removed", removed, err)
	}
	if _, err := os.Stat(filepath.Dir(pa)); err != nil {
		t.Fatal(err)
	}
	if rest, _ := d.List(); len(rest) != 1 {
		t.Errorf("after prune: %d entries, want 1", len(rest))
	}
}

// Index files of an older format (another index/vN directory) are listed
// as stale and pruned first, whatever the bound: nothing can read them.
func TestPruneStaleFormat(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	cur := index(t, "current")
	if err := d.StoreIndex(cur); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(d.Root, "index", "v4", "sha256", cur.Digest.Encoded())
	os.MkdirAll(filepath.Dir(stale), 0o700)
	os.WriteFile(stale, []byte("an index of format 4"), 0o600)
	es, err := d.List()
	if err != nil || len(es) != 2 || es[0].Kind != "stale" || es[0].Path != stale {
		t.Fatalf("List = %+v, %v; want the stale file first", es, err)
	}
	removed, err := d.Prune(1 << 30)
	if err != nil || len(removed) != 1 || removed[0].Path != stale {
		t.Fatalf("Prune(1 GiB) = %+v, %v; want the stale file removed", removed, err)
	}
	if !d.HasIndex(cur.Digest) {
		t.Fatal("the current index was pruned")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(des)
}

// TestWriteAtomicClosesFile: WriteAtomic left every file it published
// open (Discard does nothing after Publish, and nothing else closed it),
// one descriptor per index, tree or mark written, until the GC happened to
// run the file's finalizer — with the temp file's flock held meanwhile.
func TestWriteAtomicClosesFile(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no finalizers
	dir := t.TempDir()
	before := openFDs(t)
	for i := 0; i < 20; i++ {
		if err := WriteAtomic(filepath.Join(dir, "sub", fmt.Sprint(i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after 20 WriteAtomic calls, %d before", after, before)
	}
}

// A ".tmp-" name in the cache that is not a regular file (a FIFO, a
// symlink to one) is nobody's temp file: the sweep of a cold mount, `cache
// ls` and `cache prune` must not open it and wait for a writer forever.
func TestSweepTempsSkipsFIFO(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	dec := filepath.Join(d.Root, "decoded")
	if err := os.MkdirAll(dec, 0o700); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dec, ".tmp-fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dec, ".tmp-link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(fifo, old, old)
	unix.Lutimes(link, []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())})
	done := make(chan []Entry, 1)
	go func() { done <- d.SweepTemps() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SweepTemps hangs on a FIFO named like a temp file")
	}
	go func() { l, _ := d.List(); done <- l }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("List hangs on a FIFO named like a temp file")
	}
}
