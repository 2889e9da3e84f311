package blobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// trickleBody sends a few bytes at a time, slowly, until its request is
// cancelled: a server that makes progress, far too little of it.
type trickleBody struct {
	r   io.ReadCloser
	ctx context.Context
}

func (b *trickleBody) Read(p []byte) (int, error) {
	select {
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	case <-time.After(20 * time.Millisecond):
	}
	return b.r.Read(p[:min(len(p), 64)])
}
func (b *trickleBody) Close() error { return b.r.Close() }

// silentBody sends nothing until its request is cancelled: headers, then
// nothing.
type silentBody struct {
	r   io.ReadCloser
	ctx context.Context
}

func (b *silentBody) Read(p []byte) (int, error) { <-b.ctx.Done(); return 0, b.ctx.Err() }
func (b *silentBody) Close() error               { return b.r.Close() }

// fastOpts makes a fixture's timeouts small enough for a unit test.
func fastOpts(rb *RemoteBlob) {
	rb.reg.opts.RangeIdle = 200 * time.Millisecond
	rb.reg.opts.RangeBudget = 100 * time.Millisecond
	rb.reg.opts.RangeMinRate = 2 << 20 // a 512 KiB chunk is due 0.45 s after its request
	rb.reg.opts.FailureMemory = time.Minute
}

// A response that trickles (or sends its headers, then nothing) is
// abandoned on the floor-rate schedule, retried once, and fails the read;
// the chunk then fails further reads at once, without a request, and the
// bytes it did send count as rejected, not fetched.
func TestRegistrySlowResponses(t *testing.T) {
	for _, mode := range []string{"trickle", "headers-then-nothing"} {
		t.Run(mode, func(t *testing.T) {
			f := newRegFixture(t, false, "")
			rb := f.remote(t)
			fastOpts(rb)
			rb.SetChunkSums(testChunk, f.sums)
			f.rt.set(func(req *http.Request, resp *http.Response) *http.Response {
				if mode == "trickle" {
					resp.Body = &trickleBody{r: resp.Body, ctx: req.Context()}
				} else {
					resp.Body = &silentBody{r: resp.Body, ctx: req.Context()}
				}
				return resp
			}, -1)
			p := make([]byte, 1000)
			start := time.Now()
			_, err := rb.ReadAt(p, testChunk+10)
			took := time.Since(start)
			want := errSlow
			if mode != "trickle" {
				want = errStalled
			}
			if !errors.Is(err, want) || !strings.Contains(err.Error(), string(rb.Digest())) || !strings.Contains(err.Error(), "bytes 524288-1048575") {
				t.Fatalf("read: %v, want %v naming the blob and the range", err, want)
			}
			st := rb.Stats()
			t.Logf("failed after %v: %v; %+v", took.Round(time.Millisecond), err, st)
			if st.Requests != 2 {
				t.Errorf("%d requests, want 2 (one retry)", st.Requests)
			}
			if st.Fetched != 0 || (mode == "trickle" && st.Rejected == 0) {
				t.Errorf("fetched %d, rejected %d bytes", st.Fetched, st.Rejected)
			}
			// Remembered: the next read of the chunk fails at once.
			if _, err := rb.ReadAt(p, testChunk+5000); !errors.Is(err, want) {
				t.Fatalf("second read: %v", err)
			}
			if st2 := rb.Stats(); st2.Requests != 2 || st2.FailedFast != 1 || st2.FailingChunks != 1 {
				t.Errorf("second read: %+v, want no new request, one fast failure, one failing chunk", st2)
			}
			// Other chunks are not affected.
			f.rt.set(nil, 0)
			if _, err := rb.ReadAt(p, 3*testChunk); err != nil || !bytes.Equal(p, f.blob[3*testChunk:][:1000]) {
				t.Errorf("read of another chunk: %v", err)
			}
		})
	}
}

// A read of one chunk does not wait for a slow fetch of another.
func TestRegistrySlowChunkDoesNotBlockOthers(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	fastOpts(rb)
	rb.reg.opts.RangeMinRate = 1 << 10 // the slow fetch lasts until the test ends it
	rb.reg.opts.RangeIdle = time.Minute
	rb.SetChunkSums(testChunk, f.sums)
	release := make(chan struct{})
	var slowStarted atomic.Bool
	f.rt.set(func(req *http.Request, resp *http.Response) *http.Response {
		if strings.HasPrefix(req.Header.Get("Range"), "bytes=0-") {
			slowStarted.Store(true)
			ctx, cancel := context.WithCancel(req.Context())
			go func() { <-release; cancel() }()
			resp.Body = &trickleBody{r: resp.Body, ctx: ctx}
		}
		return resp
	}, -1)
	slowDone := make(chan error, 1)
	go func() {
		_, err := rb.ReadAt(make([]byte, 100), 0)
		slowDone <- err
	}()
	for !slowStarted.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	p := make([]byte, 4096)
	if _, err := rb.ReadAt(p, 4*testChunk+1); err != nil || !bytes.Equal(p, f.blob[4*testChunk+1:][:4096]) {
		t.Fatalf("read of chunk 4 while chunk 0 trickles: %v", err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the slow read ended (%v) before the other one: the test proves nothing", err)
	default:
	}
	f.rt.set(nil, 0)
	close(release)
	if err := <-slowDone; err != nil {
		t.Logf("slow read, released: %v", err)
	}
}

// A registry that keeps sending the same wrong bytes for a chunk is
// asked twice, not six times; a success forgets the failure.
func TestRegistrySameWrongBytesTwice(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	fastOpts(rb)
	rb.reg.opts.FailureMemory = 20 * time.Millisecond
	rb.SetChunkSums(testChunk, f.sums)
	var ranges []string
	f.rt.set(func(req *http.Request, resp *http.Response) *http.Response {
		ranges = append(ranges, req.Header.Get("Range"))
		b, _ := io.ReadAll(resp.Body)
		var start int64
		fmt.Sscanf(req.Header.Get("Range"), "bytes=%d-", &start)
		if i := testChunk + 7 - start; i >= 0 && i < int64(len(b)) {
			b[i] ^= 1 // always the same byte of chunk 1
		}
		return replaceBody(resp, resp.StatusCode, b, nil)
	}, -1)
	// Three chunks in one request; only the middle one is wrong.
	p := make([]byte, 3*testChunk)
	_, err := rb.ReadAt(p, 0)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "same wrong bytes twice") {
		t.Fatalf("read: %v", err)
	}
	st := rb.Stats()
	t.Logf("%v; ranges asked %q; %+v", err, ranges, st)
	if st.Requests != 2 {
		t.Errorf("%d requests, want 2", st.Requests)
	}
	if len(ranges) != 2 || ranges[0] != "bytes=0-1572863" {
		t.Fatalf("ranges asked: %q", ranges)
	}
	if st.FailingChunks != 0 && st.FailingChunks != 1 {
		t.Errorf("%d failing chunks, want the bad one only", st.FailingChunks)
	}
	// Chunk 0 was fine and is served; chunk 2 too.
	if _, err := rb.ReadAt(p[:10], 0); err != nil {
		t.Errorf("chunk 0: %v", err)
	}
	if _, err := rb.ReadAt(p[:10], 2*testChunk); err != nil {
		t.Errorf("chunk 2: %v", err)
	}
	if st.Fetched < 2*testChunk || st.Rejected < testChunk {
		t.Errorf("fetched %d rejected %d: the good chunks count as fetched, the bad one as rejected", st.Fetched, st.Rejected)
	}
	f.rt.set(nil, 0)
	time.Sleep(25 * time.Millisecond)
	if _, err := rb.ReadAt(p[:10], testChunk); err != nil {
		t.Fatalf("after the failure expired: %v", err)
	}
	if st := rb.Stats(); st.FailingChunks != 0 {
		t.Errorf("a success did not forget the failure: %+v", st)
	}
}

// A chunk this mount just failed to fetch, but another mount sharing the
// range cache fetched and stored since, is read from the disk: the
// remembered failure does not hide verified bytes.
func TestRegistryFailureMemoryYieldsToTheRangeCache(t *testing.T) {
	dir := t.TempDir()
	f := newRegFixture(t, false, dir)
	rb := f.remote(t)
	fastOpts(rb) // failures remembered for a minute
	rb.SetChunkSums(testChunk, f.sums)
	f.rt.set(func(req *http.Request, resp *http.Response) *http.Response {
		b, _ := io.ReadAll(resp.Body)
		for i := range b {
			b[i] ^= 0xff
		}
		return replaceBody(resp, resp.StatusCode, b, nil)
	}, -1)
	p := make([]byte, 100)
	if _, err := rb.ReadAt(p, testChunk+10); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("read through a corrupting proxy: %v", err)
	}
	// Another mount, with a good path to the registry, reads the chunk.
	g, err := OpenImage(context.Background(), f.src, Options{Remote: RemoteOptions{ChunkDir: dir, Logf: t.Logf}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	other := g.Layers[0].Blob.(*RemoteBlob)
	other.SetChunkSums(testChunk, f.sums)
	if _, err := other.ReadAt(p, testChunk+10); err != nil {
		t.Fatalf("other mount: %v", err)
	}
	before := rb.Stats().Requests
	if _, err := rb.ReadAt(p, testChunk+10); err != nil || !bytes.Equal(p, f.blob[testChunk+10:][:100]) {
		t.Fatalf("the chunk is in the range cache, but the read failed: %v", err)
	}
	if st := rb.Stats(); st.Requests != before || st.FailingChunks != 0 {
		t.Errorf("after reading the chunk from the range cache: %+v", st)
	}
}

// cutBody sends its first n bytes, then nothing until its request is
// cancelled: a response that stalls part way.
type cutBody struct {
	r   io.ReadCloser
	ctx context.Context
	n   int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	k, err := b.r.Read(p[:min(int64(len(p)), b.n)])
	b.n -= int64(k)
	return k, err
}
func (b *cutBody) Close() error { return b.r.Close() }

// A response that stalls after its first chunks (a read-ahead run whose
// later chunks are slow) keeps the chunks that arrived whole and verified:
// they are served, not failed with the rest, and the retry asks only for
// the missing ones.
func TestRegistryStallKeepsCompleteChunks(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	fastOpts(rb)
	rb.SetChunkSums(testChunk, f.sums)
	var ranges []string
	f.rt.set(func(req *http.Request, resp *http.Response) *http.Response {
		ranges = append(ranges, req.Header.Get("Range"))
		resp.Body = &cutBody{r: resp.Body, ctx: req.Context(), n: testChunk + 1000}
		return resp
	}, -1)
	p := make([]byte, 3*testChunk)
	n, err := rb.ReadAt(p, 0)
	if !errors.Is(err, errStalled) && !errors.Is(err, errSlow) {
		t.Fatalf("read: %d, %v; want the stall", n, err)
	}
	t.Logf("%d bytes, %v; ranges asked %q", n, err, ranges)
	if n < testChunk || !bytes.Equal(p[:n], f.blob[:n]) {
		t.Errorf("read returned %d bytes; chunk 0 arrived whole and should have been served", n)
	}
	if len(ranges) < 2 || ranges[1] != fmt.Sprintf("bytes=%d-%d", testChunk, 3*testChunk-1) {
		t.Errorf("ranges asked %q: the retry should ask for chunks 1-2 only", ranges)
	}
	// Chunk 0 is not remembered as failing.
	before := rb.Stats().Requests
	if _, err := rb.ReadAt(p[:100], 50); err != nil || !bytes.Equal(p[:100], f.blob[50:150]) {
		t.Errorf("chunk 0 after the stall: %v", err)
	}
	if st := rb.Stats(); st.Requests != before || st.FailingChunks < 1 || st.FailingChunks > 2 {
		t.Errorf("after the stall: %+v; want chunk 0 served without a request, chunk 2 (and maybe 1) failing", st)
	}
}
