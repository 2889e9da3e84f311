package layerindex

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// testData makes size bytes mixing what layers hold: incompressible runs
// (binaries, already compressed files), text-like runs, and zero runs.
func testData(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	words := []string{"usr", "lib", "share", "bin", "etc", "local", "python3", "site-packages",
		"__init__.py", "def ", "return ", "import ", "\n", "    ", "self", "(", ")", ":", "0755 ", "root"}
	b := make([]byte, 0, size)
	for len(b) < size {
		n := min(size-len(b), 1+rng.IntN(200<<10))
		switch rng.IntN(4) {
		case 0:
			for range n {
				b = append(b, byte(rng.Uint32()))
			}
		case 1:
			b = append(b, make([]byte, n)...)
		default:
			end := len(b) + n
			for len(b) < end {
				b = append(b, words[rng.IntN(len(words))]...)
			}
			b = b[:end]
		}
	}
	return b
}

// indexAll indexes blob and returns the sequential output and the table.
func indexAll(t testing.TB, c Compression, blob []byte, span int64) ([]byte, *Checkpoints) {
	t.Helper()
	out, cps, err := tryIndex(c, blob, span)
	if err != nil {
		t.Fatalf("indexing: %v", err)
	}
	return out, cps
}

func tryIndex(c Compression, blob []byte, span int64) ([]byte, *Checkpoints, error) {
	ir, err := NewIndexingReader(c, bytes.NewReader(blob), span)
	if err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, ir); err != nil {
		return out.Bytes(), nil, err
	}
	cps := ir.Checkpoints()
	if cps == nil {
		return nil, nil, errors.New("no checkpoints after EOF")
	}
	return out.Bytes(), cps, nil
}

// checkTable checks the invariants of a decode table.
func checkTable(t testing.TB, cps *Checkpoints, blobLen, dataLen int) {
	t.Helper()
	if cps.CompressedSize != int64(blobLen) || cps.UncompressedSize != int64(dataLen) {
		t.Fatalf("sizes %d/%d, want %d/%d", cps.CompressedSize, cps.UncompressedSize, blobLen, dataLen)
	}
	if len(cps.Points) == 0 || cps.Points[0].Out != 0 || cps.Points[0].In != 0 {
		t.Fatalf("first checkpoint %+v", cps.Points)
	}
	for i := 1; i < len(cps.Points); i++ {
		p, q := cps.Points[i-1], cps.Points[i]
		if q.Out <= p.Out || q.In < p.In || q.Out >= cps.UncompressedSize {
			t.Fatalf("checkpoints %d,%d out of order: %+v %+v", i-1, i, p.Out, q.Out)
		}
	}
}

// checkDecode checks every way of reading blob against data.
func checkDecode(t *testing.T, c Compression, blob, data []byte, span int64) *Checkpoints {
	t.Helper()
	out, cps := indexAll(t, c, blob, span)
	if !bytes.Equal(out, data) {
		t.Fatalf("sequential output differs (%d bytes, want %d) at %d", len(out), len(data), firstDiff(out, data))
	}
	checkTable(t, cps, len(blob), len(data))
	if got := cps.SpanAt(cps.UncompressedSize + 10); got != cps.NumSpans()-1 {
		t.Errorf("SpanAt(past end) = %d", got)
	}
	var buf []byte
	var maxLen int64
	for i := range cps.NumSpans() {
		start, end := cps.Span(i)
		maxLen = max(maxLen, end-start)
		if cps.SpanAt(start) != i || cps.SpanAt(end-1) != i {
			t.Fatalf("SpanAt(%d)=%d SpanAt(%d)=%d, want %d", start, cps.SpanAt(start), end-1, cps.SpanAt(end-1), i)
		}
		var err error
		buf, err = cps.DecodeSpan(bytes.NewReader(blob), i, buf)
		if err != nil {
			t.Fatalf("span %d (%+v): %v", i, cps.Points[i].Kind, err)
		}
		if !bytes.Equal(buf, data[start:end]) {
			t.Fatalf("span %d [%d,%d) differs at %d", i, start, end, firstDiff(buf, data[start:end]))
		}
	}
	if maxLen != cps.MaxSpanLen() {
		t.Errorf("MaxSpanLen %d, want %d", cps.MaxSpanLen(), maxLen)
	}
	cache := NewSpanCache(64 << 20)
	checkReadAt(t, cps.NewReaderAt(bytes.NewReader(blob), cache, "k"), data, cps, 300)
	// Without a cache every read decodes from its checkpoint: fewer,
	// especially with large spans.
	uncached := 2
	if span > 0 && span <= 64<<10 {
		uncached = 8
	}
	checkReadAt(t, cps.NewReaderAt(bytes.NewReader(blob), nil, ""), data, cps, uncached)
	return cps
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkReadAt does n random reads, reads crossing each checkpoint, and reads
// at and past the end, checking the io.ReaderAt contract.
func checkReadAt(t testing.TB, ra io.ReaderAt, data []byte, cps *Checkpoints, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(data)), uint64(n)))
	size := int64(len(data))
	check := func(off int64, l int) {
		t.Helper()
		p := make([]byte, l)
		got, err := ra.ReadAt(p, off)
		wantN := int(max(0, min(int64(l), size-off)))
		if got != wantN {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d", l, off, got, err, wantN)
		}
		if wantN < l && err != io.EOF {
			t.Fatalf("ReadAt(%d bytes at %d) short without io.EOF: %v", l, off, err)
		}
		if wantN == l && err != nil && !(err == io.EOF && off+int64(l) == size) {
			t.Fatalf("ReadAt(%d bytes at %d): %v", l, off, err)
		}
		if wantN > 0 && !bytes.Equal(p[:got], data[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes at %d) differs at %d", l, off, firstDiff(p[:got], data[off:]))
		}
	}
	for range n {
		off := rng.Int64N(size + 1)
		check(off, rng.IntN(256<<10))
	}
	// Reads across checkpoints (at most ~20 of them when uncached).
	every := 1
	if n < 100 {
		every = max(1, len(cps.Points)/(2*n+4))
	}
	for i := 0; i < len(cps.Points); i += every {
		check(max(0, cps.Points[i].Out-100), 200)
	}
	check(0, int(size))
	if size > 5 {
		check(size-5, 10)
	}
	check(size, 10)
	check(size+100, 10)
	if _, err := ra.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("ReadAt at -1 succeeded")
	}
}

func TestNone(t *testing.T) {
	data := testData(1, 3<<20)
	cps := checkDecode(t, None, data, data, 0)
	if len(cps.Points) != 1 || cps.Points[0].Kind != CheckpointRaw {
		t.Fatalf("points %+v", cps.Points)
	}
	// Empty stream.
	_, cps = indexAll(t, None, nil, 0)
	if cps.UncompressedSize != 0 || cps.NumSpans() != 1 {
		t.Fatalf("empty: %+v", cps)
	}
}

func TestUnknownCompression(t *testing.T) {
	if _, err := NewIndexingReader(Compression(9), bytes.NewReader(nil), 0); err == nil {
		t.Fatal("no error")
	}
}

// requireCorrupt fails unless err marks a format error (and, with trunc, a
// truncation).
func requireCorrupt(t testing.TB, err error, trunc bool, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error does not wrap ErrCorrupt: %v", what, err)
	}
	if trunc && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s: truncation error does not wrap io.ErrUnexpectedEOF: %v", what, err)
	}
}

// checkMutations flips bytes at many positions and truncates at many
// lengths. Indexing must then fail with ErrCorrupt or give exactly the
// original data (a flip in a header field nobody checks), never panic or
// return other bytes. Truncations must fail with ErrCorrupt and
// io.ErrUnexpectedEOF unless they cut exactly between members or frames,
// where the output must be a prefix of data.
func checkMutations(t *testing.T, c Compression, blob, data []byte, checked bool) {
	t.Helper()
	step := max(1, len(blob)/200)
	for pos := 0; pos < len(blob); pos += step {
		for _, x := range []byte{0x01, 0xff} {
			mut := bytes.Clone(blob)
			mut[pos] ^= x
			out, _, err := tryIndex(c, mut, 64<<10)
			if err != nil {
				requireCorrupt(t, err, false, fmt.Sprintf("flip %#x at %d", x, pos))
				continue
			}
			if checked && !bytes.Equal(out, data) {
				t.Fatalf("flip %#x at %d: wrong output accepted", x, pos)
			}
		}
	}
	for l := 0; l < len(blob); l += max(1, step/2) {
		out, _, err := tryIndex(c, blob[:l], 64<<10)
		if err != nil {
			requireCorrupt(t, err, true, fmt.Sprintf("truncate to %d", l))
			continue
		}
		if l == 0 || !bytes.HasPrefix(data, out) {
			t.Fatalf("truncate to %d: accepted, %d bytes of output", l, len(out))
		}
	}
}

// checkCorruptSpans decodes every span of a damaged copy of blob with the
// table of the intact one: errors must wrap ErrCorrupt; nothing may panic.
func checkCorruptSpans(t *testing.T, cps *Checkpoints, blob []byte) {
	t.Helper()
	step := max(1, len(blob)/40)
	for pos := 0; pos < len(blob); pos += step {
		mut := bytes.Clone(blob)
		mut[pos] ^= 0x55
		for i := range cps.NumSpans() {
			if _, err := cps.DecodeSpan(bytes.NewReader(mut), i, nil); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("span %d with flip at %d: %v", i, pos, err)
			}
		}
		short := blob[:pos]
		for i := range cps.NumSpans() {
			if _, err := cps.DecodeSpan(bytes.NewReader(short), i, nil); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("span %d of blob cut at %d: %v", i, pos, err)
			}
		}
	}
}

// runCLI runs a compressor on in, skipping the test if it is not installed.
func runCLI(t testing.TB, in []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
	}
	return out.Bytes()
}

// chunks splits data at the given sizes, cyclically.
func chunks(data []byte, sizes ...int) [][]byte {
	var cs [][]byte
	for i := 0; len(data) > 0; i++ {
		n := min(len(data), sizes[i%len(sizes)])
		cs = append(cs, data[:n])
		data = data[n:]
	}
	return cs
}

var testSpans = []int64{64 << 10, 512 << 10, 0}

func TestReaderAtConcurrent(t *testing.T) {
	data, gz := gzipTestBlob(7)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	var zs []byte
	for _, c := range chunks(data, 300<<10) {
		zs = enc.EncodeAll(c, zs)
	}
	for _, tc := range []struct {
		name string
		c    Compression
		blob []byte
	}{{"gzip", Gzip, gz}, {"zstd", Zstd, zs}} {
		t.Run(tc.name, func(t *testing.T) {
			_, cps := indexAll(t, tc.c, tc.blob, 256<<10)
			if cps.NumSpans() < 8 {
				t.Fatalf("only %d spans", cps.NumSpans())
			}
			cache := NewSpanCache(1 << 30)
			ra := cps.NewReaderAt(bytes.NewReader(tc.blob), cache, "blob")
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range 8 {
				wg.Go(func() {
					<-start
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					p := make([]byte, 64<<10)
					for range 60 {
						off := rng.Int64N(int64(len(data)))
						n, err := ra.ReadAt(p, off)
						if err != nil && err != io.EOF {
							t.Errorf("ReadAt: %v", err)
							return
						}
						if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
							t.Errorf("ReadAt at %d: wrong bytes", off)
							return
						}
					}
					// Everybody reads every span too.
					for i := range cps.NumSpans() {
						s, _ := cps.Span(i)
						if _, err := ra.ReadAt(p[:1], s); err != nil {
							t.Errorf("ReadAt: %v", err)
							return
						}
					}
				})
			}
			close(start)
			wg.Wait()
			hits, misses, size := cache.Stats()
			if misses != int64(cps.NumSpans()) {
				t.Errorf("%d decodes for %d spans (hits %d)", misses, cps.NumSpans(), hits)
			}
			if size != int64(len(data)) {
				t.Errorf("cached %d bytes, want %d", size, len(data))
			}
		})
	}
}

// A span larger than the whole cache is not cached; reads decode just what
// they need from its checkpoint.
func TestReaderAtSpanLargerThanCache(t *testing.T) {
	data := testData(8, 3<<20)
	blob := zstdStreamed(t, data)
	_, cps := indexAll(t, Zstd, blob, 0)
	if cps.NumSpans() != 1 {
		t.Fatalf("%d spans", cps.NumSpans())
	}
	cache := NewSpanCache(1 << 20)
	checkReadAt(t, cps.NewReaderAt(bytes.NewReader(blob), cache, "big"), data, cps, 10)
	if hits, misses, size := cache.Stats(); hits+misses+size != 0 {
		t.Fatalf("cache used: %d/%d/%d", hits, misses, size)
	}
}

// I/O errors of the blob are reported as such, not as corruption.
func TestReaderAtIOError(t *testing.T) {
	data := testData(9, 1<<20)
	blob := kgzipBytes(t, data, 6)
	_, cps := indexAll(t, Gzip, blob, 64<<10)
	boom := errors.New("disk on fire")
	ra := cps.NewReaderAt(failingReaderAt{boom}, NewSpanCache(1<<20), "x")
	if _, err := ra.ReadAt(make([]byte, 10), 500<<10); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
	if _, err := cps.DecodeSpan(failingReaderAt{boom}, 3, nil); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// With a cache of three spans, concurrent readers keep evicting spans
// that others are still copying from, and evicted buffers are recycled
// for new decodes: every read must still return the right bytes (run with
// -race: a buffer reused while read is a data race).
func TestReaderAtRecycledBuffers(t *testing.T) {
	data, gz := gzipTestBlob(11)
	_, cps := indexAll(t, Gzip, gz, 256<<10)
	cache := NewSpanCache(3 * 300 << 10)
	ra := cps.NewReaderAt(bytes.NewReader(gz), cache, "blob")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			p := make([]byte, 100<<10)
			for range 80 {
				off := rng.Int64N(int64(len(data)))
				if g%2 == 0 { // sequential stretches trigger read-ahead
					off = int64(rng.IntN(4)) << 20
				}
				n, err := ra.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Errorf("ReadAt: %v", err)
					return
				}
				if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
					t.Errorf("ReadAt at %d: wrong bytes", off)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, misses, _ := cache.Stats(); misses <= int64(cps.NumSpans()) {
		t.Fatalf("only %d decodes for %d spans: the cache did not evict", misses, cps.NumSpans())
	}
	cache.mu.Lock()
	recycled := len(cache.free)
	cache.mu.Unlock()
	t.Logf("%d buffers waiting for reuse", recycled)
}

// gzipTestBlob is 4 MiB of test data and its gzip encoding.
func gzipTestBlob(seed uint64) (data, gz []byte) {
	data = testData(seed, 4<<20)
	var b bytes.Buffer
	w, _ := kgzip.NewWriterLevel(&b, 6)
	w.Write(data)
	w.Close()
	return data, b.Bytes()
}
