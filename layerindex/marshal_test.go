package layerindex

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ocimount/ocimount/internal/tartest"
)

func marshalFixture(t testing.TB, c tartest.Compression) *Index {
	big := bytes.Repeat([]byte("some compressible text 0123456789\n"), 20000)
	tarball := tartest.Tar(t,
		tartest.Dir("etc", 0o755),
		tartest.File("etc/passwd", "root:x:0:0\n", 0o644, tartest.Owner(70000, 4294967295), tartest.MTime(time.Unix(1, 5))),
		tartest.File("etc/cap", "x", 0o4755, tartest.Xattr("security.capability", "\x01\x00\x00\x02"), tartest.Xattr("user.a", "")),
		tartest.FileBytes("data/big", big, 0o644),
		tartest.Symlink("lib", "usr/lib"),
		tartest.Hardlink("etc/passwd2", "etc/passwd"),
		tartest.Char("dev/null", 1, 3),
		tartest.Block("dev/loop0", 7, 0),
		tartest.FIFO("fifo"),
		tartest.Whiteout("etc/shadow"),
	)
	comp := map[tartest.Compression]Compression{tartest.Uncompressed: None, tartest.Gzip: Gzip, tartest.Zstd: Zstd}[c]
	blob := tartest.CompressMulti(t, c, tarball, 200<<10)
	if c == tartest.Uncompressed {
		blob = tarball
	}
	o := Options{Span: 64 << 10}
	if comp == Zstd {
		o.Tee = io.Discard // so the index has decoded-copy digests to round-trip
	}
	ix, err := Build(context.Background(), bytes.NewReader(blob), comp, o)
	if err != nil {
		t.Fatal(err)
	}
	if comp == Zstd && ix.Decoded.Count(ix.UncompressedSize) != len(ix.Decoded.Sums) || (comp == Zstd) != (len(ix.Decoded.Sums) > 0) {
		t.Fatalf("decoded digests: %d for %d bytes", len(ix.Decoded.Sums), ix.UncompressedSize)
	}
	return ix
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, c := range []tartest.Compression{tartest.Uncompressed, tartest.Gzip, tartest.Zstd} {
		t.Run(string(c), func(t *testing.T) {
			ix := marshalFixture(t, c)
			if c != tartest.Uncompressed && len(ix.Checkpoints.Points) < 2 {
				t.Fatalf("fixture has %d checkpoints, want several", len(ix.Checkpoints.Points))
			}
			b, err := ix.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalIndex(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Checkpoints != nil {
				if err := got.Checkpoints.LoadWindows(); err != nil {
					t.Fatal(err)
				}
			}
			if got.StoredLen() != int64(len(b)) {
				t.Errorf("StoredLen %d, file is %d bytes", got.StoredLen(), len(b))
			}
			if d := cmp.Diff(ix, got, cmp.AllowUnexported(Checkpoint{}), cmpopts.IgnoreUnexported(Index{})); d != "" {
				t.Errorf("round trip differs (-want +got):\n%s", d)
			}
			// The head alone (as a warm mount reads it) has everything
			// but the entries.
			hs, err := HeadSize(b)
			if err != nil {
				t.Fatal(err)
			}
			h, err := UnmarshalHeader(b[:hs], bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if h.Checkpoints != nil {
				if err := h.Checkpoints.LoadWindows(); err != nil {
					t.Fatal(err)
				}
			}
			want := *ix
			want.Entries = nil
			if h.StoredLen() != int64(len(b)) {
				t.Errorf("head-only StoredLen %d, file is %d bytes", h.StoredLen(), len(b))
			}
			if d := cmp.Diff(&want, h, cmp.AllowUnexported(Checkpoint{}), cmpopts.IgnoreUnexported(Index{})); d != "" {
				t.Errorf("head differs (-want +got):\n%s", d)
			}
			t.Logf("%d entries: %d bytes", len(ix.Entries), len(b))
		})
	}
}

// Every single-byte corruption and every truncation must be detected.
func TestUnmarshalDetectsDamage(t *testing.T) {
	b, err := marshalFixture(t, tartest.Gzip).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	step := max(1, len(b)/500)
	for i := 0; i < len(b); i += step {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := UnmarshalIndex(c); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("flipping byte %d: err = %v, want ErrBadIndex", i, err)
		}
		if _, err := UnmarshalIndex(b[:i]); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("truncating to %d: err = %v, want ErrBadIndex", i, err)
		}
	}
}

// A head-only load leaves the windows in the file and checks each when a
// read first resumes at its checkpoint: damage there must fail that read
// (ErrBadIndex), never yield a wrong window.
func TestHeadOnlyWindowDamage(t *testing.T) {
	ix := marshalFixture(t, tartest.Gzip)
	b, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := HeadSize(b)
	h, err := UnmarshalHeader(b[:hs], bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var checked int
	for i := range h.Checkpoints.Points {
		p := h.Checkpoints.Points[i]
		if p.windowZLen == 0 {
			continue
		}
		if p.windowOff < int64(hs) || p.windowOff+int64(p.windowZLen) > int64(len(b)) {
			t.Fatalf("checkpoint %d: window at %d+%d outside the windows section", i, p.windowOff, p.windowZLen)
		}
		w, err := p.window()
		if err != nil || !bytes.Equal(w, ix.Checkpoints.Points[i].Window) {
			t.Fatalf("checkpoint %d: window differs from the indexed one (%v)", i, err)
		}
		for _, at := range []int64{p.windowOff, p.windowOff + int64(p.windowZLen)/2, p.windowOff + int64(p.windowZLen) - 1} {
			c := bytes.Clone(b)
			c[at] ^= 0x01
			p.windowSrc = bytes.NewReader(c)
			if _, err := p.window(); !errors.Is(err, ErrBadIndex) {
				t.Fatalf("checkpoint %d: flipping byte %d of its stored window: err = %v, want ErrBadIndex", i, at, err)
			}
		}
		p.windowSrc = bytes.NewReader(b[:p.windowOff+int64(p.windowZLen)-1])
		if _, err := p.window(); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("checkpoint %d: truncated index file: err = %v, want ErrBadIndex", i, err)
		}
		checked++
	}
	if checked < 2 {
		t.Fatalf("fixture has %d stored windows, want several", checked)
	}
}

func FuzzUnmarshalIndex(f *testing.F) {
	for _, c := range []tartest.Compression{tartest.Uncompressed, tartest.Gzip, tartest.Zstd} {
		b, err := marshalFixture(f, c).MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		hs, _ := HeadSize(b)
		f.Add(b[headStart:hs-32], b[hs:len(b)-32])
	}
	f.Fuzz(func(t *testing.T, head, entries []byte) {
		ix, err := parseIndexBody(head, entries, true, nil, 0)
		if err != nil {
			if !errors.Is(err, ErrBadIndex) {
				t.Fatalf("error %v does not wrap ErrBadIndex", err)
			}
			return
		}
		// Whatever parses must serialize and parse back to the same index.
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		again, err := UnmarshalIndex(b)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if ix.Checkpoints != nil {
			if ix.Checkpoints.LoadWindows() != nil {
				return // a bad stored window fails only when used
			}
			again.Checkpoints.LoadWindows()
		}
		if d := cmp.Diff(ix, again, cmp.AllowUnexported(Checkpoint{}), cmpopts.IgnoreUnexported(Index{})); d != "" {
			t.Fatalf("re-parse differs:\n%s", d)
		}
	})
}

// The chunk table is what lazily fetched registry bytes are checked
// against, so it must be exactly the sha256 of each piece of the blob as
// stored, the last piece short.
func TestChunkSums(t *testing.T) {
	for _, n := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 17} {
		blob := make([]byte, n)
		for i := range blob {
			blob[i] = byte(i * 7 / 3)
		}
		h := &chunkHasher{size: ChunkSize, h: sha256.New()}
		// Odd write sizes cross piece boundaries in the middle of a write.
		for p := blob; len(p) > 0; {
			k := min(len(p), 100003)
			h.Write(p[:k])
			p = p[k:]
		}
		got := h.finish()
		if got.Count(int64(n)) != len(got.Sums) {
			t.Fatalf("n=%d: Count says %d, have %d sums", n, got.Count(int64(n)), len(got.Sums))
		}
		for i := range got.Sums {
			end := min((i+1)*ChunkSize, n)
			if want := sha256.Sum256(blob[i*ChunkSize : end]); want != got.Sums[i] {
				t.Fatalf("n=%d: piece %d sum differs", n, i)
			}
		}
	}
	ix := marshalFixture(t, tartest.Gzip)
	if len(ix.Chunks.Sums) == 0 || ix.Chunks.Size != ChunkSize {
		t.Fatalf("Build left no chunk table: %+v", ix.Chunks)
	}
}
