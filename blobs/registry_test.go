package blobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// These tests run against go-containerregistry's in-process registry on
// loopback, through a fault-injecting transport; tests/ repeats the
// important cases against a real registry server.

const testChunk = 512 << 10

// fault rewrites range responses of blob GETs; nil passes through.
type fault func(req *http.Request, resp *http.Response) *http.Response

type faultRT struct {
	mu        sync.Mutex
	f         fault
	times     int // faults left; <0 forever
	rangeGets atomic.Int64
	base      http.RoundTripper
}

func (r *faultRT) set(f fault, times int) {
	r.mu.Lock()
	r.f, r.times = f, times
	r.mu.Unlock()
}

func (r *faultRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil || req.Header.Get("Range") == "" || !strings.Contains(req.URL.Path, "/blobs/") {
		return resp, err
	}
	r.rangeGets.Add(1)
	r.mu.Lock()
	f := r.f
	if f != nil && r.times != 0 {
		if r.times > 0 {
			r.times--
		}
	} else {
		f = nil
	}
	r.mu.Unlock()
	if f == nil {
		return resp, nil
	}
	return f(req, resp), nil
}

func replaceBody(resp *http.Response, status int, body []byte, hdr map[string]string) *http.Response {
	resp.Body.Close()
	resp.StatusCode = status
	resp.Status = fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	for k, v := range hdr {
		resp.Header.Set(k, v)
	}
	return resp
}

type regFixture struct {
	host  string
	src   Source
	blob  []byte // the layer blob (random bytes: never read as a tar here)
	sums  [][32]byte
	rt    *faultRT
	reg   *httptest.Server
	image *Image
}

func sumsOf(b []byte) [][32]byte {
	var s [][32]byte
	for off := 0; off < len(b); off += testChunk {
		s = append(s, sha256.Sum256(b[off:min(off+testChunk, len(b))]))
	}
	return s
}

// newRegFixture serves one image with one 5.3-chunk layer from an
// in-process registry and opens it through a fault-injecting transport.
func newRegFixture(t *testing.T, referrers bool, chunkDir string) *regFixture {
	t.Helper()
	var opts []ggcrregistry.Option
	opts = append(opts, ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	if referrers {
		opts = append(opts, ggcrregistry.WithReferrersSupport(true))
	}
	srv := httptest.NewServer(ggcrregistry.New(opts...))
	t.Cleanup(srv.Close)
	f := &regFixture{host: strings.TrimPrefix(srv.URL, "http://"), reg: srv}
	f.blob = make([]byte, 5*testChunk+12345)
	rand.New(rand.NewSource(1)).Read(f.blob)
	f.sums = sumsOf(f.blob)
	f.src = Source{Transport: TransportDocker, Path: f.host + "/test/img", Ref: "v1"}
	ctx := context.Background()
	push, err := dialRegistry(ctx, f.src, RemoteOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustJSON(t, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("whatever")}}})
	for _, b := range [][]byte{f.blob, cfg} {
		if err := push.upload(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	m := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		"layers": []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(f.blob), Size: int64(len(f.blob))}}})
	if _, err := push.do(ctx, http.MethodPut, push.url("manifests", "v1"), ocispec.MediaTypeImageManifest, m); err != nil {
		t.Fatal(err)
	}
	f.rt = &faultRT{base: http.DefaultTransport}
	f.image, err = OpenImage(ctx, f.src, Options{Remote: RemoteOptions{Transport: f.rt, ChunkDir: chunkDir, Logf: t.Logf}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.image.Close() })
	if f.image.ManifestDigest != digest.FromBytes(m) {
		t.Fatalf("manifest digest %s, want %s", f.image.ManifestDigest, digest.FromBytes(m))
	}
	return f
}

func (f *regFixture) remote(t *testing.T) *RemoteBlob {
	rb, ok := f.image.Layers[0].Blob.(*RemoteBlob)
	if !ok {
		t.Fatalf("layer blob is %T", f.image.Layers[0].Blob)
	}
	return rb
}

func TestRegistryReadVerified(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	if _, err := rb.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrUnverified) {
		t.Fatalf("read before chunk digests: %v, want ErrUnverified", err)
	}
	if err := rb.SetChunkSums(testChunk, f.sums[:2]); err == nil {
		t.Fatal("a chunk table that does not cover the blob was accepted")
	}
	if err := rb.SetChunkSums(testChunk, f.sums); err != nil {
		t.Fatal(err)
	}
	// Reads that start and end inside chunks, cross boundaries, and run
	// past the end.
	for _, r := range [][2]int64{{0, 1}, {testChunk - 3, 10}, {3*testChunk + 5, 2*testChunk + 100}, {int64(len(f.blob)) - 7, 100}} {
		p := make([]byte, r[1])
		n, err := rb.ReadAt(p, r[0])
		want := f.blob[r[0]:min(r[0]+r[1], int64(len(f.blob)))]
		if n != len(want) || !bytes.Equal(p[:n], want) {
			t.Fatalf("ReadAt(%d, %d): n=%d err=%v, bytes differ", r[1], r[0], n, err)
		}
		if n < len(p) && err != io.EOF {
			t.Fatalf("short read without io.EOF: %v", err)
		}
	}
	whole, err := io.ReadAll(rb.Stream(context.Background(), 0))
	if err != nil || !bytes.Equal(whole, f.blob) {
		t.Fatalf("Stream: %v (equal=%v)", err, bytes.Equal(whole, f.blob))
	}
}

// A registry or proxy that misbehaves must cost retries or a failed read,
// never a wrong byte.
func TestRegistryFaults(t *testing.T) {
	corrupt := func(req *http.Request, resp *http.Response) *http.Response {
		b, _ := io.ReadAll(resp.Body)
		b[len(b)/2] ^= 0x40
		return replaceBody(resp, resp.StatusCode, b, nil)
	}
	ignoreRange := func(req *http.Request, resp *http.Response) *http.Response {
		return replaceBody(resp, http.StatusOK, make([]byte, 6*testChunk), map[string]string{"Content-Range": ""})
	}
	badRange := func(req *http.Request, resp *http.Response) *http.Response {
		b, _ := io.ReadAll(resp.Body)
		return replaceBody(resp, resp.StatusCode, b, map[string]string{"Content-Range": "bytes 0-99/100"})
	}
	short := func(req *http.Request, resp *http.Response) *http.Response {
		b, _ := io.ReadAll(resp.Body)
		return replaceBody(resp, resp.StatusCode, b[:len(b)/3], nil)
	}
	unavailable := func(req *http.Request, resp *http.Response) *http.Response {
		return replaceBody(resp, http.StatusServiceUnavailable, []byte("busy"), nil)
	}
	notSatisfiable := func(req *http.Request, resp *http.Response) *http.Response {
		// distribution answers 416 with the whole blob's length and
		// then closes: a client that reads the body hangs or fails.
		resp.Body.Close()
		resp.StatusCode, resp.Status = 416, "416 Requested Range Not Satisfiable"
		resp.Body = io.NopCloser(&explodingReader{})
		resp.ContentLength = 1 << 30
		return resp
	}
	cases := []struct {
		name  string
		f     fault
		times int
		ok    bool
	}{
		{"corrupt-once", corrupt, 1, true},
		{"corrupt-always", corrupt, -1, false},
		{"200-ignoring-range", ignoreRange, 2, true},
		{"200-ignoring-range-always", ignoreRange, -1, false},
		{"bad-content-range", badRange, 2, true},
		{"short-body", short, 2, true},
		{"short-body-always", short, -1, false},
		{"503-twice", unavailable, 2, true},
		{"416", notSatisfiable, 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newRegFixture(t, false, "")
			rb := f.remote(t)
			rb.reg.opts.FailureMemory = 5 * time.Millisecond
			if err := rb.SetChunkSums(testChunk, f.sums); err != nil {
				t.Fatal(err)
			}
			f.rt.set(c.f, c.times)
			p := make([]byte, 1000)
			n, err := rb.ReadAt(p, 2*testChunk+100)
			if c.ok {
				if err != nil || !bytes.Equal(p[:n], f.blob[2*testChunk+100:][:1000]) {
					t.Fatalf("n=%d err=%v (bytes equal: %v)", n, err, bytes.Equal(p[:n], f.blob[2*testChunk+100:][:1000]))
				}
				if st := rb.Stats(); st.Retries == 0 {
					t.Errorf("no retries counted: %+v", st)
				}
				return
			}
			if err == nil || n != 0 {
				t.Fatalf("persistent fault served %d bytes, err %v", n, err)
			}
			if !strings.Contains(err.Error(), string(rb.Digest())) {
				t.Errorf("error does not name the blob: %v", err)
			}
			// The fault clears: once the failure is forgotten, the same
			// read works.
			f.rt.set(nil, 0)
			time.Sleep(rb.reg.opts.FailureMemory * 17)
			n, err = rb.ReadAt(p, 2*testChunk+100)
			if err != nil || !bytes.Equal(p[:n], f.blob[2*testChunk+100:][:1000]) {
				t.Fatalf("after the fault cleared: n=%d err=%v", n, err)
			}
		})
	}
}

type explodingReader struct{}

func (explodingReader) Read([]byte) (int, error) {
	panic("the body of a 416 was read")
}

// Concurrent readers of one chunk share one request.
func TestRegistryConcurrentReadsOneRequest(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	rb.SetChunkSums(testChunk, f.sums)
	slow := func(req *http.Request, resp *http.Response) *http.Response {
		time.Sleep(100 * time.Millisecond)
		return resp
	}
	f.rt.set(slow, -1)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			if _, err := rb.ReadAt(p, testChunk+int64(i)*1000); err != nil || !bytes.Equal(p, f.blob[testChunk+int64(i)*1000:][:4096]) {
				t.Errorf("reader %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := f.rt.rangeGets.Load(); n != 1 {
		t.Errorf("%d range requests for one chunk, want 1", n)
	}
}

// The range cache on disk is shared, verified on load and repaired.
func TestRegistryChunkStore(t *testing.T) {
	dir := t.TempDir()
	f := newRegFixture(t, false, dir)
	rb := f.remote(t)
	rb.SetChunkSums(testChunk, f.sums)
	p := make([]byte, 100)
	if _, err := rb.ReadAt(p, 3*testChunk); err != nil {
		t.Fatal(err)
	}
	dg := digest.FromBytes(f.blob)
	path := filepath.Join(dir, "sha256", dg.Encoded(), fmt.Sprint(testChunk), "3")
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, f.blob[3*testChunk:4*testChunk]) {
		t.Fatalf("chunk 3 not stored as fetched: %v", err)
	}
	// Damage it: a new opener (another mount) must refetch, not serve it.
	b, _ := os.ReadFile(path)
	b[7] ^= 1
	os.WriteFile(path, b, 0o644)
	g, err := OpenImage(context.Background(), f.src, Options{Remote: RemoteOptions{Transport: f.rt, ChunkDir: dir, Logf: t.Logf}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rb2 := g.Layers[0].Blob.(*RemoteBlob)
	rb2.SetChunkSums(testChunk, f.sums)
	if st := rb2.Stats(); st.Local != 1 || st.Chunks != 6 {
		t.Fatalf("stats before read: %+v", st)
	}
	before := f.rt.rangeGets.Load()
	if _, err := rb2.ReadAt(p, 3*testChunk+50); err != nil || !bytes.Equal(p, f.blob[3*testChunk+50:][:100]) {
		t.Fatalf("read over a damaged cached chunk: %v", err)
	}
	if f.rt.rangeGets.Load() != before+1 {
		t.Errorf("damaged chunk was not refetched")
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, f.blob[3*testChunk:4*testChunk]) {
		t.Errorf("damaged chunk was not repaired")
	}
	// And a good cached chunk costs no request.
	before = f.rt.rangeGets.Load()
	g2, _ := OpenImage(context.Background(), f.src, Options{Remote: RemoteOptions{Transport: f.rt, ChunkDir: dir}})
	defer g2.Close()
	rb3 := g2.Layers[0].Blob.(*RemoteBlob)
	rb3.SetChunkSums(testChunk, f.sums)
	if _, err := rb3.ReadAt(p, 3*testChunk+10); err != nil || f.rt.rangeGets.Load() != before {
		t.Errorf("cached chunk: err=%v, %d requests", err, f.rt.rangeGets.Load()-before)
	}
}

// Streams resume where they broke, and --prefetch keeps the chunks.
func TestRegistryStreamResumes(t *testing.T) {
	dir := t.TempDir()
	f := newRegFixture(t, false, dir)
	rb := f.remote(t)
	var cut atomic.Int64
	f.rt.base = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil && strings.Contains(req.URL.Path, "/blobs/") && cut.Add(1) <= 2 {
			resp.Body = &cutReader{r: resp.Body, left: 700 << 10}
		}
		return resp, err
	})
	got, err := io.ReadAll(rb.Stream(context.Background(), testChunk))
	if err != nil || !bytes.Equal(got, f.blob) {
		t.Fatalf("stream: %v, equal=%v", err, bytes.Equal(got, f.blob))
	}
	if st := rb.Stats(); st.Retries != 2 {
		t.Errorf("retries %d, want 2", st.Retries)
	}
	rb.SetChunkSums(testChunk, f.sums)
	if st := rb.Stats(); st.Local != st.Chunks {
		t.Errorf("prefetch kept %d of %d chunks", st.Local, st.Chunks)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type cutReader struct {
	r    io.ReadCloser
	left int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	return n, err
}
func (c *cutReader) Close() error { return c.r.Close() }

// Blob GETs redirected to object storage: the target is reused until it
// expires, and dropped when it stops working.
func TestRegistryRedirect(t *testing.T) {
	f := newRegFixture(t, false, "")
	var storeHits atomic.Int64
	var expired atomic.Bool
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storeHits.Add(1)
		if expired.Load() {
			http.Error(w, "expired", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(f.blob))
	}))
	defer store.Close()
	var registryBlobGets atomic.Int64
	f.rt.base = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == f.host && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			registryBlobGets.Add(1)
			expired.Store(false)
			loc := store.URL + "/blob?X-Amz-Date=" + time.Now().UTC().Format("20060102T150405Z") + "&X-Amz-Expires=300"
			return &http.Response{StatusCode: http.StatusTemporaryRedirect, Status: "307 Temporary Redirect",
				Header: http.Header{"Location": {loc}}, Body: http.NoBody, Request: req}, nil
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	rb := f.remote(t)
	rb.SetChunkSums(testChunk, f.sums)
	p := make([]byte, 100)
	for i := 0; i < 4; i++ {
		if _, err := rb.ReadAt(p, int64(i)*testChunk+1); err != nil || !bytes.Equal(p, f.blob[int64(i)*testChunk+1:][:100]) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if registryBlobGets.Load() != 1 || storeHits.Load() != 4 {
		t.Fatalf("registry blob GETs %d (want 1), store hits %d (want 4)", registryBlobGets.Load(), storeHits.Load())
	}
	expired.Store(true) // the presigned URL is revoked early
	if _, err := rb.ReadAt(p, 4*testChunk+1); err != nil || !bytes.Equal(p, f.blob[4*testChunk+1:][:100]) {
		t.Fatalf("read after the target expired: %v", err)
	}
	if registryBlobGets.Load() != 2 {
		t.Errorf("registry blob GETs %d after expiry, want 2", registryBlobGets.Load())
	}
}

// Index artifacts round-trip through the referrers API and through the
// tag fallback of registries without it.
func TestIndexArtifact(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			f := newRegFixture(t, referrers, "")
			ctx := context.Background()
			ld := f.image.Layers[0].Descriptor.Digest
			if got, _, err := f.image.Remote.FetchIndexes(ctx, map[digest.Digest]int64{ld: int64(len(f.blob))}); err != nil || len(got) != 0 {
				t.Fatalf("before push: %v, %d", err, len(got))
			}
			payload := []byte("OCIMIDX\x00 pretend index")
			art, err := f.image.Remote.PushIndexes(ctx, []digest.Digest{ld}, map[digest.Digest][]byte{ld: payload})
			if err != nil {
				t.Fatal(err)
			}
			got, from, err := f.image.Remote.FetchIndexes(ctx, map[digest.Digest]int64{ld: int64(len(f.blob))})
			if err != nil || from != art || !bytes.Equal(got[ld], payload) {
				t.Fatalf("fetch: err=%v from=%s want %s, got %q", err, from, art, got[ld])
			}
			// Pushing again adds a newer artifact; the newest wins.
			time.Sleep(1100 * time.Millisecond)
			payload2 := []byte("OCIMIDX\x00 newer")
			art2, err := f.image.Remote.PushIndexes(ctx, []digest.Digest{ld}, map[digest.Digest][]byte{ld: payload2})
			if err != nil {
				t.Fatal(err)
			}
			got, from, err = f.image.Remote.FetchIndexes(ctx, map[digest.Digest]int64{ld: int64(len(f.blob))})
			if err != nil || from != art2 || !bytes.Equal(got[ld], payload2) {
				t.Fatalf("second fetch: err=%v from=%s want %s", err, from, art2)
			}
		})
	}
}

func TestRangeOf(t *testing.T) {
	for h, want := range map[string][4]int64{
		"bytes 0-99/100":                 {0, 99, 100, 1},
		"bytes 5-5/*":                    {5, 5, -1, 1},
		"bytes 9-5/100":                  {0, 0, 0, 0},
		"bytes -1-5/100":                 {0, 0, 0, 0},
		"items 0-1/2":                    {0, 0, 0, 0},
		"bytes 0-1":                      {0, 0, 0, 0},
		"bytes 0-x/2":                    {0, 0, 0, 0},
		"bytes 1-2/3junk":                {0, 0, 0, 0},
		"bytes 0-0/-2":                   {0, 0, 0, 0}, // found by FuzzRangeOf: taken for "/*"
		"bytes +1-5/100":                 {0, 0, 0, 0},
		"bytes 0-+5/100":                 {0, 0, 0, 0},
		"bytes 0-5/+100":                 {0, 0, 0, 0},
		"bytes 0-5/":                     {0, 0, 0, 0},
		"bytes 0-5/99999999999999999999": {0, 0, 0, 0},
	} {
		s, e, tot, ok := rangeOf(h)
		got := [4]int64{s, e, tot, 0}
		if ok {
			got[3] = 1
		}
		if got != want {
			t.Errorf("%q: %v, want %v", h, got, want)
		}
	}
}

func FuzzRangeOf(f *testing.F) {
	f.Add("bytes 0-99/100")
	f.Add("bytes 5-5/*")
	f.Fuzz(func(t *testing.T, h string) {
		s, e, tot, ok := rangeOf(h)
		if ok && (s < 0 || e < s || (tot != -1 && tot < 0)) {
			t.Fatalf("%q: accepted %d-%d/%d", h, s, e, tot)
		}
	})
}

// A stream that stalls (no bytes, no error) is abandoned after the idle
// timeout and resumed, instead of hanging the first mount forever.
func TestRegistryStreamStallResumes(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	rb.reg.opts.IdleTimeout = 300 * time.Millisecond // this image's registry only
	var n atomic.Int64
	f.rt.base = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil && strings.Contains(req.URL.Path, "/blobs/") && n.Add(1) == 1 {
			resp.Body = &stallReader{r: resp.Body, left: 1 << 20, ctx: req.Context()}
		}
		return resp, err
	})
	got, err := io.ReadAll(rb.Stream(context.Background(), 0))
	if err != nil || !bytes.Equal(got, f.blob) {
		t.Fatalf("stream: %v, equal=%v", err, bytes.Equal(got, f.blob))
	}
	if st := rb.Stats(); st.Retries != 1 {
		t.Errorf("retries %d, want 1", st.Retries)
	}
}

type stallReader struct {
	r    io.ReadCloser
	left int
	ctx  context.Context
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= n
	return n, err
}
func (s *stallReader) Close() error { return s.r.Close() }

// TestRegistryUnverified: Unverified reads exact ranges before (and
// without) chunk digests, for readers that check bytes themselves (TOC
// layers), short only at the blob's end; ReadAt stays refused.
func TestRegistryUnverified(t *testing.T) {
	f := newRegFixture(t, false, "")
	rb := f.remote(t)
	u := rb.Unverified()
	var got int64
	for _, r := range [][2]int64{{0, 1}, {testChunk - 3, 10}, {3*testChunk + 5, 2*testChunk + 100}, {int64(len(f.blob)) - 7, 100}} {
		p := make([]byte, r[1])
		n, err := u.ReadAt(p, r[0])
		want := f.blob[r[0]:min(r[0]+r[1], int64(len(f.blob)))]
		if n != len(want) || !bytes.Equal(p[:n], want) {
			t.Fatalf("ReadAt(%d, %d): n=%d err=%v, bytes differ", r[1], r[0], n, err)
		}
		got += int64(n)
		if n < len(p) && err != io.EOF {
			t.Fatalf("short read without io.EOF: %v", err)
		}
	}
	if _, err := u.ReadAt(make([]byte, 1), int64(len(f.blob))); err != io.EOF {
		t.Fatalf("read at the end: %v", err)
	}
	if _, err := rb.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrUnverified) {
		t.Fatalf("verified read without chunk digests: %v", err)
	}
	// Unverified bytes are fetched bytes, and said to be unchecked here.
	if st := rb.Stats(); st.Requests != 4 || st.Fetched != got || st.Unverified != got || st.Served != got || st.Rejected != 0 {
		t.Fatalf("stats %+v: want 4 requests, %d bytes fetched, unverified and served", st, got)
	}
}
