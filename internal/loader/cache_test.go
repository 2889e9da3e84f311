package loader

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/cache"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// zstdImage writes an image whose one zstd layer is a single frame of
// more than maxFrameSpan bytes, so it is served from a decoded copy, and
// a small gzip layer on top. It returns the source and the big file.
func zstdImage(t *testing.T) (blobs.Source, []byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	big := make([]byte, 10<<20)
	rand.New(rand.NewSource(7)).Read(big)
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "v1", Layers: []tartest.ImageLayer{
		{Compression: tartest.Zstd, Tar: tartest.Tar(t, tartest.Dir("d", 0o755), tartest.FileBytes("d/big", big, 0o644))},
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("d/small", "s", 0o644))},
	}})
	return blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"}, big
}

func readTreeFile(tree *overlay.Tree, name string) ([]byte, error) {
	f, err := tree.FS().Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func decodedFiles(t *testing.T, cacheDir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(cacheDir, "decoded", "*.tar"))
	return m
}

// A decoded copy damaged in the cache must never be served: the read
// fails (through ReadAt and through the splice path alike), the file is
// dropped, and the next load decodes the layer again.
func TestDamagedDecodedCopyNeverServed(t *testing.T) {
	src, big := zstdImage(t)
	cacheDir := t.TempDir()
	var logs []string
	o := Options{CacheDir: cacheDir, Logf: func(f string, a ...any) { logs = append(logs, f) }}
	cold := load(t, src, o)
	if got, err := readTreeFile(cold.Tree, "d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("cold read: %d bytes, %v", len(got), err)
	}
	cold.Close()
	dec := decodedFiles(t, cacheDir)
	if len(dec) != 1 {
		t.Fatalf("decoded copies: %v, want one", dec)
	}
	b, err := os.ReadFile(dec[0])
	if err != nil {
		t.Fatal(err)
	}
	mid := len(b) / 2
	for i := range 16 {
		b[mid+i] ^= 0x5a
	}
	if err := os.WriteFile(dec[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	warm := load(t, src, o)
	if !warm.FromCache[0] {
		t.Fatal("warm load did not use the cached decoded copy (the test damages the wrong thing)")
	}
	// The splice path: the piece holding the damage is refused.
	id, ok := warm.Tree.Walk("d/big")
	if !ok {
		t.Fatal("d/big missing")
	}
	_, _, _, err = warm.Tree.BackingFile(id, 0, int64(len(big)))
	if !errors.Is(err, layerindex.ErrDamagedCopy) {
		t.Fatalf("BackingFile over the damage: %v, want ErrDamagedCopy", err)
	}
	got, err := readTreeFile(warm.Tree, "d/big")
	if !errors.Is(err, layerindex.ErrDamagedCopy) {
		t.Fatalf("read of a damaged decoded copy: %d bytes, err %v; want ErrDamagedCopy", len(got), err)
	}
	if _, err := os.Stat(dec[0]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("damaged decoded copy still in the cache: %v", err)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "removing it from the cache") {
		t.Errorf("damage not logged: %q", logs)
	}
	warm.Close()

	again := load(t, src, o)
	if again.FromCache[0] {
		t.Error("layer 0 came from the cache after its decoded copy was dropped")
	}
	if got, err := readTreeFile(again.Tree, "d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read after rebuild: %d bytes, %v", len(got), err)
	}
	if len(decodedFiles(t, cacheDir)) != 1 {
		t.Error("decoded copy not rebuilt")
	}
}

// Truncating or shortening a decoded copy, or replacing it with a file of
// the same size, is caught the same way.
func TestReplacedDecodedCopy(t *testing.T) {
	src, big := zstdImage(t)
	cacheDir := t.TempDir()
	o := Options{CacheDir: cacheDir}
	load(t, src, o).Close()
	dec := decodedFiles(t, cacheDir)[0]
	for _, damage := range []struct {
		name string
		f    func() error
	}{
		{"same-size-zeros", func() error { return os.WriteFile(dec, make([]byte, len(big)+3072), 0o600) }},
		{"truncated", func() error { return os.Truncate(dec, 1<<20) }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			load(t, src, o).Close() // make sure a good copy is there
			if err := damage.f(); err != nil {
				t.Fatal(err)
			}
			im := load(t, src, o)
			got, err := readTreeFile(im.Tree, "d/big")
			if err == nil && !bytes.Equal(got, big) {
				t.Fatal("wrong bytes served")
			}
			if err == nil && im.FromCache[0] {
				t.Fatal("damaged copy used without error")
			}
		})
	}
}

// A truncated index file is caught when it is loaded, not read by read.
func TestTruncatedIndexRebuiltAtLoad(t *testing.T) {
	src, big := zstdImage(t)
	cacheDir := t.TempDir()
	var logs []string
	o := Options{CacheDir: cacheDir, Span: 64 << 10, Logf: func(f string, a ...any) { logs = append(logs, f) }}
	load(t, src, o).Close()
	idx, _ := filepath.Glob(filepath.Join(cacheDir, "index", "v*", "sha256", "*"))
	if len(idx) != 2 {
		t.Fatalf("index files: %v", idx)
	}
	sizes := map[string]int64{}
	for _, p := range idx {
		fi, _ := os.Stat(p)
		sizes[p] = fi.Size()
		// Cut the file in its windows/entries sections, behind the head.
		if err := os.Truncate(p, fi.Size()*2/3); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range idx {
		if _, _, err := (cache.Dir{Root: cacheDir}).LoadHeader(layerDigest(p)); !errors.Is(err, layerindex.ErrBadIndex) {
			t.Errorf("LoadHeader of truncated %s: %v, want ErrBadIndex", filepath.Base(p), err)
		}
	}
	im := load(t, src, o)
	for i, c := range im.FromCache {
		if c {
			t.Errorf("layer %d served from a truncated index", i)
		}
	}
	if got, err := readTreeFile(im.Tree, "d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	for p, n := range sizes {
		if fi, err := os.Stat(p); err != nil || fi.Size() != n {
			t.Errorf("%s not rebuilt: %v", p, err)
		}
	}
}

func layerDigest(indexPath string) digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(indexPath))
}

// A warm mount reads index files, the tree file and decoded copies: each
// must count as used, or prune takes indexes in daily use first.
func TestWarmLoadRecordsUse(t *testing.T) {
	src, _ := zstdImage(t)
	cacheDir := t.TempDir()
	o := Options{CacheDir: cacheDir}
	load(t, src, o).Close()
	old := time.Now().Add(-30 * 24 * time.Hour)
	var files []string
	filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(p, "-published") {
			files = append(files, p)
			os.Chtimes(p, old, old)
		}
		return nil
	})
	if len(files) < 4 {
		t.Fatalf("cache files: %v", files)
	}
	im := load(t, src, o)
	for i, c := range im.FromCache {
		if !c {
			t.Fatalf("layer %d not warm", i)
		}
	}
	for _, p := range files {
		if fi, err := os.Stat(p); err != nil || fi.ModTime().Before(time.Now().Add(-time.Hour)) {
			t.Errorf("%s: not marked as used by a warm load (%v)", p, err)
		}
	}
}

// A cold load serves the tree it just wrote, mapped, as a warm one does:
// not the heap the merge built, which would stay with the server.
func TestColdLoadServesMappedTree(t *testing.T) {
	src, big := zstdImage(t)
	for _, cacheDir := range []string{t.TempDir(), ""} {
		im := load(t, src, Options{CacheDir: cacheDir})
		if !im.Tree.Mapped() {
			t.Errorf("cache %q: cold load serves the merged heap tree", cacheDir)
		}
		if got, err := readTreeFile(im.Tree, "d/big"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read: %d bytes, %v", len(got), err)
		}
		im.Close()
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "ocimount-tree-*"))
	if len(left) > 0 {
		t.Errorf("temp tree files left: %v", left)
	}
}

// Temp files a killed mount left are swept by the next cold mount and by
// prune, and listed by cache ls; one still being written is left alone.
func TestLeftoverTempFiles(t *testing.T) {
	src, _ := zstdImage(t)
	cacheDir := t.TempDir()
	d := cache.Dir{Root: cacheDir}
	decDir := filepath.Join(cacheDir, "decoded")
	os.MkdirAll(decDir, 0o700)
	old := time.Now().Add(-time.Hour)
	dead := filepath.Join(decDir, ".tmp-layer-dead")
	os.WriteFile(dead, make([]byte, 1<<20), 0o600)
	os.Chtimes(dead, old, old)
	live, err := cache.CreateTemp(decDir, ".tmp-layer-*") // held by this "process"
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	os.Chtimes(live.Name(), old, old)

	es, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	var temps, inUse int
	for _, e := range es {
		if e.Kind == "temp" {
			temps++
			if e.InUse {
				inUse++
			}
		}
	}
	if temps != 2 || inUse != 1 {
		t.Errorf("cache ls: %d temp files (%d in use), want 2 (1)", temps, inUse)
	}

	load(t, src, Options{CacheDir: cacheDir}).Close()
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cold mount left %s: %v", dead, err)
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Errorf("cold mount removed a temp file being written: %v", err)
	}

	os.WriteFile(dead, []byte("x"), 0o600)
	os.Chtimes(dead, old, old)
	if _, err := d.Prune(0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("prune left %s", dead)
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Errorf("prune removed a temp file being written: %v", err)
	}
}

// Every kind of cache file, damaged every way a user or a disk can: the
// load still serves the image exactly (rebuilding what it must), or fails
// a read, but never serves other bytes, never hangs, and never changes a
// file outside the cache.
func TestCacheAttackMatrix(t *testing.T) {
	src, big := zstdImage(t)
	want := ""
	outside := filepath.Join(t.TempDir(), "not-ours")
	kinds := map[string]string{
		"index":   filepath.Join("index", "v*", "sha256", "*"),
		"tree":    filepath.Join("tree", "v*", "sha256", "*"),
		"decoded": filepath.Join("decoded", "*.tar"),
	}
	var otherFile string
	other := func(t *testing.T) string { // a file of another image's cache
		if otherFile == "" {
			c := filepath.Join(filepath.Dir(outside), "other-cache")
			s2, _ := image(t)
			load(t, s2, Options{CacheDir: c}).Close()
			m, _ := filepath.Glob(filepath.Join(c, "index", "v*", "sha256", "*"))
			otherFile = m[0]
		}
		return otherFile
	}
	damages := map[string]func(t *testing.T, p string){
		"flip": func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x10
			os.WriteFile(p, b, 0o600)
		},
		"truncate": func(t *testing.T, p string) { fi, _ := os.Stat(p); os.Truncate(p, fi.Size()/2) },
		"empty":    func(t *testing.T, p string) { os.Truncate(p, 0) },
		"other-image": func(t *testing.T, p string) {
			b, _ := os.ReadFile(other(t))
			os.WriteFile(p, b, 0o600)
		},
		"symlink": func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			os.WriteFile(outside, b, 0o600) // a perfect copy, but not ours
			old := time.Now().Add(-time.Hour)
			os.Chtimes(outside, old, old)
			os.Remove(p)
			os.Symlink(outside, p)
		},
		"directory": func(t *testing.T, p string) { os.Remove(p); os.MkdirAll(filepath.Join(p, "x"), 0o700) },
		"fifo":      func(t *testing.T, p string) { os.Remove(p); syscall.Mkfifo(p, 0o600) },
	}
	for kind, glob := range kinds {
		for name, damage := range damages {
			t.Run(kind+"/"+name, func(t *testing.T) {
				cacheDir := t.TempDir()
				o := Options{CacheDir: cacheDir}
				cold := load(t, src, o)
				if want == "" {
					want = dump(t, cold.Tree)
				}
				cold.Close()
				m, _ := filepath.Glob(filepath.Join(cacheDir, glob))
				if len(m) == 0 {
					t.Fatalf("no %s file", kind)
				}
				for _, p := range m {
					damage(t, p)
				}
				done := make(chan struct{})
				var im *Image
				var err error
				go func() {
					defer close(done)
					im, err = Load(context.Background(), src, blobs.Options{}, o)
				}()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatal("load hangs on the damaged cache")
				}
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				defer im.Close()
				got, err := readTreeFile(im.Tree, "d/big")
				if err == nil && !bytes.Equal(got, big) {
					t.Fatal("wrong bytes served")
				}
				if err != nil {
					t.Logf("read failed (allowed, never wrong bytes): %v", err)
				}
				if err == nil {
					if d := dump(t, im.Tree); d != want {
						t.Errorf("tree differs after damage")
					}
				}
				if name == "symlink" {
					if fi, err := os.Stat(outside); err == nil && time.Since(fi.ModTime()) < 30*time.Minute {
						t.Errorf("a file outside the cache was touched through a planted symlink")
					}
				}
			})
		}
	}
}

// A published index of a layer served from a decoded copy is not used:
// its decoded-copy digests are the publisher's. The layer is indexed here
// and its copy checked against this pass's own digests.
func TestPublishedDecodedDigestsIgnored(t *testing.T) {
	src, big := zstdImage(t)
	cacheDir := t.TempDir()
	o := Options{CacheDir: cacheDir}
	im := load(t, src, o)
	l := &im.Image.Layers[0]
	f, err := layerindex.Detect(l.Descriptor.MediaType, l.Blob)
	if err != nil {
		t.Fatal(err)
	}
	// A "published" index with forged decoded digests but otherwise right.
	pub, err := cache.Dir{Root: cacheDir}.LoadIndex(l.Descriptor.Digest)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pub.Decoded.Sums {
		pub.Decoded.Sums[i][0] ^= 1
	}
	b, err := pub.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r, err := indexLayer(context.Background(), l, f, nil, Options{CacheDir: cacheDir, Rebuild: true}, b) // the decoded copy is there
	if err != nil {
		t.Fatal(err)
	}
	if r.cached || r.published {
		t.Fatal("a published index was used for a decoded-copy layer")
	}
	defer r.closer.Close()
	e := &layerindex.Entry{}
	for _, en := range r.ix.Entries { // this pass's own index
		if en.Name == "d/big" {
			*e = en
		}
	}
	if e.Name == "" {
		t.Fatal("d/big not in the layer's index")
	}
	got := make([]byte, len(big))
	if _, err := layerindex.Content(r.content, e).ReadAt(got, 0); err != nil && err != io.EOF || !bytes.Equal(got, big) {
		t.Fatalf("read: %v", err)
	}
}
