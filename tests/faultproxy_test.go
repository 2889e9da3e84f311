package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultMode is what the fault proxy does to blob GETs that carry a Range
// header (every other request passes through untouched).
type faultMode int

const (
	passThrough   faultMode = iota
	corruptByte             // flip one byte of the body
	ignoreRange             // answer 200 with the whole blob
	badRange                // right bytes, Content-Range off by one
	shortBody               // declare the full length, send half, close
	unavailable             // 503
	bogus416                // 416 with the whole blob's Content-Length, then close
	redirectStore           // 307 to the "object store" with a presigned-looking URL
	stallBody               // send half the body, then hold the connection open
	stallHeaders            // send nothing, hold the connection open
	trickle                 // send the headers, then the body at 1 KB/s
	headersOnly             // send the headers, then nothing, holding the connection open
	swapBody                // whole-blob GETs only: another blob's bytes (faultProxy.swap), cut to this one's length
)

func (m faultMode) String() string {
	return [...]string{"pass", "corrupt", "ignore-range", "bad-content-range", "short-body", "503", "416", "redirect", "stall-body", "stall-headers", "trickle", "headers-then-nothing", "swap"}[m]
}

// faultProxy is a reverse proxy in front of a registry that breaks ranged
// blob reads on demand.
type faultProxy struct {
	Host     string // 127.0.0.1:PORT
	upstream string // http://registry
	store    *blobStore
	srv      *http.Server
	client   *http.Client

	mu      sync.Mutex
	mode    faultMode
	left    int       // faulty answers left before passing (<0: forever)
	target  string    // if set, only ranged GETs of this blob get faults
	wmode   faultMode // for whole-blob GETs (no Range) of blobs over 1 MiB
	wleft   int
	wtarget string         // if set, only whole GETs of this blob get faults
	swap    []byte         // swapBody's bytes
	slow    int            // trickle and headersOnly answers started
	slowBy  []string       // the client address of each, to tell connections apart
	release chan struct{}  // closed to free stalled handlers
	faults  int            // faulty answers given
	ranged  map[string]int // ranged blob GETs seen, by digest
	whole   map[string]int // blob GETs without Range, by digest
	// blobBytes counts the body bytes of blob GETs passed through.
	blobBytes int64
	lastErr   string
}

func startFaultProxy(t *testing.T, upstreamHost string, store *blobStore) *faultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		Host:     l.Addr().String(),
		upstream: "http://" + upstreamHost,
		store:    store,
		client: &http.Client{
			Transport:     &http.Transport{MaxIdleConnsPerHost: 16},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ranged: map[string]int{},
		whole:  map[string]int{},
	}
	p.srv = &http.Server{Handler: p, ErrorLog: nil}
	go p.srv.Serve(l)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// set switches the mode for the next n ranged blob reads (n<0: until the
// next set); after them the proxy passes through.
func (p *faultProxy) set(m faultMode, n int) {
	p.setFor(m, n, "")
}

// setFor is set for the ranged GETs of one blob only (dg "": all).
func (p *faultProxy) setFor(m faultMode, n int, dg string) {
	p.mu.Lock()
	p.mode, p.left, p.faults, p.target, p.slow, p.slowBy = m, n, 0, dg, 0, nil
	if p.release != nil {
		close(p.release)
	}
	p.release = make(chan struct{})
	p.mu.Unlock()
}

// setWhole is set for GETs of whole blobs (no Range header) larger than
// 1 MiB: the streams of a first mount. Only corruptByte and shortBody.
func (p *faultProxy) setWhole(m faultMode, n int) {
	p.mu.Lock()
	p.wmode, p.wleft = m, n
	p.mu.Unlock()
}

// swapWhole makes the whole-blob GETs of blob dg answer with the bytes
// of other instead (cut to dg's length): a registry serving another blob
// under a layer's digest.
func (p *faultProxy) swapWhole(dg string, other []byte) {
	p.mu.Lock()
	p.wmode, p.wleft, p.wtarget, p.swap = swapBody, -1, dg, other
	p.mu.Unlock()
}

// slowStarted counts trickle and headersOnly answers begun since set.
func (p *faultProxy) slowStarted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slow
}

// slowConns lists the client address (connection) of each slow answer.
func (p *faultProxy) slowConns() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.slowBy...)
}

func (p *faultProxy) takeWhole(dg string) faultMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wmode == passThrough || p.wleft == 0 || (p.wtarget != "" && p.wtarget != dg) {
		return passThrough
	}
	if p.wleft > 0 {
		p.wleft--
	}
	p.faults++
	return p.wmode
}

// reset clears the request counters.
func (p *faultProxy) reset() {
	p.mu.Lock()
	p.ranged, p.whole, p.faults, p.blobBytes = map[string]int{}, map[string]int{}, 0, 0
	p.mu.Unlock()
}

func (p *faultProxy) counts(dg string) (ranged, whole, faults int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ranged[dg], p.whole[dg], p.faults
}

// take decides the mode for one ranged request.
func (p *faultProxy) take(dg string) faultMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ranged[dg]++
	if p.mode == passThrough || p.left == 0 || (p.target != "" && p.target != dg) {
		return passThrough
	}
	if p.left > 0 {
		p.left--
	}
	p.faults++
	return p.mode
}

func blobDigestOf(path string) string {
	if i := strings.Index(path, "/blobs/"); i >= 0 && !strings.Contains(path, "/blobs/uploads") {
		return path[i+len("/blobs/"):]
	}
	return ""
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dg := blobDigestOf(r.URL.Path)
	mode := passThrough
	rng := r.Header.Get("Range")
	if r.Method == http.MethodGet && dg != "" {
		if rng != "" {
			mode = p.take(dg)
		} else {
			p.mu.Lock()
			p.whole[dg]++
			p.mu.Unlock()
		}
	}
	switch mode {
	case stallHeaders:
		p.mu.Lock()
		release := p.release
		p.mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(3 * time.Minute):
		}
		panic(http.ErrAbortHandler)
	case unavailable:
		http.Error(w, "fault proxy: unavailable", http.StatusServiceUnavailable)
		return
	case redirectStore:
		http.Redirect(w, r, p.store.presigned(dg), http.StatusTemporaryRedirect)
		return
	}
	out, _ := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), r.Body)
	out.Header = r.Header.Clone()
	out.ContentLength = r.ContentLength
	if mode == ignoreRange || mode == bogus416 {
		out.Header.Del("Range")
	}
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if dg != "" && rng == "" && r.Method == http.MethodGet && resp.StatusCode == http.StatusOK && resp.ContentLength > 1<<20 {
		mode = p.takeWhole(dg)
	}
	switch mode {
	case passThrough:
		w.WriteHeader(resp.StatusCode)
		n, _ := io.Copy(w, resp.Body)
		if dg != "" && r.Method == http.MethodGet {
			p.mu.Lock()
			p.blobBytes += n
			p.mu.Unlock()
		}
	case corruptByte:
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		if len(body) > 0 {
			body[len(body)/2] ^= 0x55
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	case ignoreRange:
		w.Header().Del("Content-Range")
		w.WriteHeader(http.StatusOK)
		io.Copy(w, resp.Body)
	case badRange:
		if s, e, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s+1, e+1, total))
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	case shortBody:
		n := resp.ContentLength / 2
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, n)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // close the connection mid-body
	case stallBody:
		p.mu.Lock()
		release := p.release
		p.mu.Unlock()
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, resp.ContentLength/2)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(3 * time.Minute):
		}
		panic(http.ErrAbortHandler)
	case trickle, headersOnly:
		p.mu.Lock()
		release := p.release
		p.slow++
		p.slowBy = append(p.slowBy, r.RemoteAddr)
		p.mu.Unlock()
		w.WriteHeader(resp.StatusCode)
		w.(http.Flusher).Flush()
		tick := time.NewTicker(64 * time.Millisecond)
		defer tick.Stop()
		give := time.After(3 * time.Minute)
		for {
			select {
			case <-release:
				panic(http.ErrAbortHandler)
			case <-r.Context().Done():
				panic(http.ErrAbortHandler)
			case <-give:
				panic(http.ErrAbortHandler)
			case <-tick.C:
			}
			if mode == trickle {
				// 64 bytes every 64 ms: 1 KB/s, a 512 KiB chunk in 8.5 min.
				if _, err := io.CopyN(w, resp.Body, 64); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	case swapBody:
		body := make([]byte, resp.ContentLength)
		p.mu.Lock()
		copy(body, p.swap)
		p.mu.Unlock()
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	case bogus416:
		// distribution 2.8 style: 416, a Content-Length of the whole
		// blob, and the connection closes early.
		w.Header().Del("Content-Range")
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		io.CopyN(w, resp.Body, min(resp.ContentLength/4, 4096))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

func parseContentRange(h string) (s, e, total int64, ok bool) {
	_, err := fmt.Sscanf(h, "bytes %d-%d/%d", &s, &e, &total)
	return s, e, total, err == nil
}

// blobStore stands in for object storage behind a registry's redirects:
// it serves blobs from an OCI layout's blobs/ directory, Range included,
// at URLs with S3-style presigning parameters.
type blobStore struct {
	Host string
	dir  string // OCI layout
	srv  *http.Server

	mu   sync.Mutex
	hits map[string]int // requests by digest
	deny int            // answer the next deny requests 403 (an expired URL)
}

func startBlobStore(t *testing.T, layout string) *blobStore {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &blobStore{Host: l.Addr().String(), dir: layout, hits: map[string]int{}}
	s.srv = &http.Server{Handler: s}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *blobStore) presigned(dg string) string {
	q := url.Values{}
	q.Set("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
	q.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
	q.Set("X-Amz-Expires", "1200")
	q.Set("X-Amz-Signature", "0123456789abcdef")
	return "http://" + s.Host + "/store/" + dg + "?" + q.Encode()
}

func (s *blobStore) count(dg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[dg]
}

func (s *blobStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dg, ok := strings.CutPrefix(r.URL.Path, "/store/")
	alg, hex, ok2 := strings.Cut(dg, ":")
	if !ok || !ok2 || r.URL.Query().Get("X-Amz-Signature") == "" || strings.ContainsAny(hex, "/.") {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "" {
		// Credentials must not leak to another host.
		http.Error(w, "unexpected Authorization header", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.hits[dg]++
	deny := s.deny > 0
	if deny {
		s.deny--
	}
	s.mu.Unlock()
	if deny {
		http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
		return
	}
	f, err := os.Open(filepath.Join(s.dir, "blobs", alg, hex))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, f)
}
