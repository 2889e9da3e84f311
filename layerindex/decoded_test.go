package layerindex

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// decodedFixture writes a layer's uncompressed stream to a file and
// returns it with an index carrying its piece digests, as Build makes
// them when it tees the stream.
func decodedFixture(t *testing.T, n int) ([]byte, *os.File, *Index) {
	t.Helper()
	data := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(data)
	h := &chunkHasher{size: ChunkSize, h: sha256.New()}
	h.Write(data)
	ix := &Index{Digest: "sha256:test", UncompressedSize: int64(n), Decoded: h.finish()}
	p := filepath.Join(t.TempDir(), "copy.tar")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return data, f, ix
}

func TestDecodedCopyReads(t *testing.T) {
	data, f, ix := decodedFixture(t, 3*ChunkSize+1234)
	dc, err := NewDecodedCopy(f, ix)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for range 200 {
				off := r.Int63n(int64(len(data)))
				p := make([]byte, r.Intn(2*ChunkSize))
				n, err := dc.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
					t.Errorf("wrong bytes at %d", off)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Damage in the file fails the reads of that piece, tells OnDamage once,
// and leaves the other pieces readable.
func TestDecodedCopyDamage(t *testing.T) {
	data, f, ix := decodedFixture(t, 3*ChunkSize)
	f.WriteAt([]byte("XXXXXXXXXXXXXXXX"), ChunkSize+100)
	dc, err := NewDecodedCopy(f, ix)
	if err != nil {
		t.Fatal(err)
	}
	var told int
	dc.OnDamage = func(error) { told++ }
	for range 2 {
		if _, err := dc.ReadAt(make([]byte, 10), ChunkSize+95); !errors.Is(err, ErrDamagedCopy) {
			t.Fatalf("read of the damaged piece: %v", err)
		}
	}
	if err := dc.Verify(0, 3*ChunkSize); !errors.Is(err, ErrDamagedCopy) {
		t.Fatalf("Verify over the damage: %v", err)
	}
	p := make([]byte, 100)
	if _, err := dc.ReadAt(p, 2*ChunkSize+5); err != nil || !bytes.Equal(p, data[2*ChunkSize+5:2*ChunkSize+105]) {
		t.Fatalf("undamaged piece: %v", err)
	}
	if told != 1 {
		t.Errorf("OnDamage called %d times, want 1", told)
	}
}

// Bytes checked once are checked again after the file is written to
// while in use: a change made under a running mount is not served.
func TestDecodedCopyChangedInUse(t *testing.T) {
	data, f, ix := decodedFixture(t, 2*ChunkSize)
	dc, err := NewDecodedCopy(f, ix)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64)
	if _, err := dc.ReadAt(p, 1000); err != nil || !bytes.Equal(p, data[1000:1064]) {
		t.Fatalf("first read: %v", err)
	}
	time.Sleep(10 * time.Millisecond) // a ctime the write surely moves
	if _, err := f.WriteAt(bytes.Repeat([]byte{'!'}, 64), 1000); err != nil {
		t.Fatal(err)
	}
	n, err := dc.ReadAt(p, 1000)
	if err == nil && !bytes.Equal(p[:n], data[1000:1000+n]) {
		t.Fatal("bytes written after the check were served")
	}
	if !errors.Is(err, ErrDamagedCopy) {
		t.Fatalf("read after an in-place write: %v, want ErrDamagedCopy", err)
	}
	// Truncated in use: refused, not short.
	f.Truncate(ChunkSize)
	if _, err := dc.ReadAt(p, 10); !errors.Is(err, ErrDamagedCopy) {
		t.Fatalf("read after truncation: %v", err)
	}
}

// An index without piece digests, or a file of the wrong size, is no
// decoded copy.
func TestDecodedCopyRefused(t *testing.T) {
	_, f, ix := decodedFixture(t, ChunkSize+1)
	bad := *ix
	bad.Decoded = ChunkSums{}
	if _, err := NewDecodedCopy(f, &bad); err == nil {
		t.Error("index without piece digests accepted")
	}
	f.Truncate(ChunkSize)
	if _, err := NewDecodedCopy(f, ix); !errors.Is(err, ErrDamagedCopy) {
		t.Errorf("short file: %v", err)
	}
}

// The piece size comes from the index, which may be a published one: a
// piece is hashed whole from one buffer, so a table of one "piece" as
// large as the layer made every first read allocate the layer's size.
func TestDecodedCopyPieceSizeBounded(t *testing.T) {
	data, f, ix := decodedFixture(t, 3*ChunkSize)
	for _, size := range []int64{1, 4<<10 - 1, 8<<20 + 1, 1 << 40} {
		bad := *ix
		bad.Decoded = ChunkSums{Size: size, Sums: make([][32]byte, (int64(len(data))+size-1)/size)}
		if _, err := NewDecodedCopy(f, &bad); err == nil {
			t.Errorf("pieces of %d bytes accepted", size)
		}
	}
}

// A piece hashed while another reader sees the file's ctime move (a write
// landed after the hash read) is not marked checked: the marks were just
// cleared for the new ctime, and a mark set after that, from the old
// bytes' hash, let the new bytes be served unchecked.
func TestDecodedCopyCheckRacesWrite(t *testing.T) {
	data, f, ix := decodedFixture(t, 2*ChunkSize)
	dc, err := NewDecodedCopy(f, ix)
	if err != nil {
		t.Fatal(err)
	}
	// Reader A: sees the file, hashes piece 0 (good bytes).
	seen, err := dc.sinceChecked()
	if err != nil {
		t.Fatal(err)
	}
	if err := dc.check(0); err != nil {
		t.Fatal(err)
	}
	// A write lands; reader B sees the new ctime before A marks.
	time.Sleep(10 * time.Millisecond)
	if _, err := f.WriteAt(bytes.Repeat([]byte{'!'}, 64), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.sinceChecked(); err != nil {
		t.Fatal(err)
	}
	dc.markOK(0, seen)
	p := make([]byte, 64)
	n, err := dc.ReadAt(p, 1000)
	if err == nil && !bytes.Equal(p[:n], data[1000:1000+n]) {
		t.Fatal("bytes written after the check were served")
	}
	if !errors.Is(err, ErrDamagedCopy) {
		t.Fatalf("read: %v, want ErrDamagedCopy", err)
	}
}

// A copy whose size changes under a running mount is damage like any
// other: OnDamage is told, so the loader drops the file from the cache
// (the EIO hint says it was dropped).
func TestDecodedCopyTruncatedTellsOnDamage(t *testing.T) {
	_, f, ix := decodedFixture(t, 2*ChunkSize)
	dc, err := NewDecodedCopy(f, ix)
	if err != nil {
		t.Fatal(err)
	}
	told := 0
	dc.OnDamage = func(error) { told++ }
	f.Truncate(ChunkSize)
	for range 2 {
		if _, err := dc.ReadAt(make([]byte, 10), 10); !errors.Is(err, ErrDamagedCopy) {
			t.Fatalf("read after truncation: %v", err)
		}
	}
	if told != 1 {
		t.Errorf("OnDamage called %d times, want 1", told)
	}
}

// A published index carries no decoded-copy digests: they describe the
// publisher's cache file, not anything a mount elsewhere may check.
func TestPublishedDropsDecodedDigests(t *testing.T) {
	_, _, ix := decodedFixture(t, 3*ChunkSize)
	ix.Compression = Zstd
	if got := ix.Published(); len(got.Decoded.Sums) != 0 || got.Decoded.Size != 0 {
		t.Fatalf("published index keeps %d decoded digests", len(got.Decoded.Sums))
	}
	if len(ix.Decoded.Sums) == 0 {
		t.Fatal("Published changed the index it was called on")
	}
}
