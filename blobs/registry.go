package blobs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// RemoteOptions say how to reach registries. The zero value verifies TLS,
// takes credentials from the user's Docker/podman auth files and keeps
// fetched ranges in memory only.
type RemoteOptions struct {
	// Creds is "user:password" (or "user" with an empty password); it
	// replaces the auth files, for scripts.
	Creds string
	// Insecure skips TLS certificate verification (--tls-verify=false)
	// and, as Docker does for insecure registries, falls back to plain
	// HTTP when the registry does not speak TLS.
	Insecure bool
	// PlainHTTP talks HTTP without TLS. Loopback registries may do so
	// without this flag, as Docker allows.
	PlainHTTP bool
	// ChunkDir, if set, is the on-disk range cache shared by all mounts:
	// fetched, verified pieces of layer blobs keyed by blob digest.
	ChunkDir string
	// ChunkCacheMax bounds ChunkDir in bytes (0: DefaultChunkCacheMax).
	ChunkCacheMax int64
	// Logf receives retries and failed reads (the mount log).
	Logf func(format string, args ...any)
	// Transport is the base HTTP transport (nil: a clone of
	// http.DefaultTransport); tests inject faults here.
	Transport http.RoundTripper
	// IdleTimeout abandons (and retries or resumes) a response that
	// makes no progress for this long, so a stalled connection cannot
	// hang a mount (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// RangeIdle and RangeBudget bound the range reads a FUSE read waits
	// for: an attempt with no progress for RangeIdle is abandoned, and
	// no new attempt starts after RangeBudget, except the first retry
	// (0: DefaultRangeIdle, DefaultRangeBudget).
	RangeIdle, RangeBudget time.Duration
	// RangeMinRate is the floor rate, in bytes per second, of a range
	// read: the k-th chunk of a response must have arrived RangeIdle +
	// k×chunk/RangeMinRate after the request was sent, or the attempt is
	// abandoned as too slow (a trickling server). 0: DefaultRangeMinRate.
	RangeMinRate int64
	// FailureMemory is how long a chunk whose fetch failed fails further
	// reads at once (EIO, no request), doubling with each consecutive
	// failure up to 16×; a success forgets it. 0: DefaultFailureMemory.
	FailureMemory time.Duration
}

// Defaults of the RemoteOptions timeouts. A FUSE read waits for its
// chunks, so a registry that stalls or trickles must cost a failed read
// (EIO) within seconds, not minutes; a streaming pass over a layer may
// wait longer. At the floor rate a 512 KiB chunk takes 4 s, so one that
// has not arrived 7 s after its request is abandoned (twice at most: the
// read then fails after about 14 s).
const (
	DefaultIdleTimeout   = 60 * time.Second
	DefaultRangeIdle     = 3 * time.Second
	DefaultRangeBudget   = 5 * time.Second
	DefaultRangeMinRate  = 128 << 10 // 1 Mbit/s
	DefaultFailureMemory = 2 * time.Second
)

// withDefaults fills in the zero timeouts.
func (o RemoteOptions) withDefaults() RemoteOptions {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.RangeIdle <= 0 {
		o.RangeIdle = DefaultRangeIdle
	}
	if o.RangeBudget <= 0 {
		o.RangeBudget = DefaultRangeBudget
	}
	if o.RangeMinRate <= 0 {
		o.RangeMinRate = DefaultRangeMinRate
	}
	if o.FailureMemory <= 0 {
		o.FailureMemory = DefaultFailureMemory
	}
	return o
}

// Accept lists what a manifest GET may return. Schema1 is left out on
// purpose: registries then convert or refuse, and we refuse it anyway.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	mtDockerManifest, mtDockerList,
}, ", ")

// registry is one repository on one registry, with an authenticated
// client. It is safe for concurrent use.
type registry struct {
	src    Source
	repo   name.Repository
	ref    string // tag or digest to resolve first
	base   string // scheme://host
	client *http.Client
	logf   func(string, ...any)
	chunks *chunkStore   // nil without a ChunkDir
	mem    *chunkLRU     // verified chunks in memory, for reads smaller than a chunk
	opts   RemoteOptions // timeouts filled in
}

// close waits for the registry's background work (range-cache pruning).
func (r *registry) close() error {
	if r.chunks != nil {
		r.chunks.close()
	}
	return nil
}

// dialRegistry parses src, finds credentials, decides the scheme and
// authenticates (token exchange happens here, once, so a mount fails early
// on bad credentials instead of on its first read).
func dialRegistry(ctx context.Context, src Source, ro RemoteOptions, push bool) (*registry, error) {
	var nopts []name.Option
	if ro.PlainHTTP || ro.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	s := src.Path
	ref := src.Ref
	if ref == "" {
		ref = "latest"
	}
	if t, d, ok := strings.Cut(ref, "@"); ok { // tag@digest: the digest wins
		_ = t
		ref = d
	}
	if strings.Contains(ref, ":") {
		s += "@" + ref
	} else {
		s += ":" + ref
	}
	r, err := name.ParseReference(s, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", src, ErrInvalid, err)
	}
	repo := r.Context()
	var auth authn.Authenticator = authn.Anonymous
	if ro.Creds != "" {
		u, p, _ := strings.Cut(ro.Creds, ":")
		auth = &authn.Basic{Username: u, Password: p}
	} else {
		a, err := authn.Resolve(ctx, authn.DefaultKeychain, repo)
		if err != nil {
			return nil, fmt.Errorf("%s: reading registry credentials: %w", src, err)
		}
		auth = a
	}
	baseRT := ro.Transport
	if baseRT == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 30 * time.Second
		t.MaxIdleConnsPerHost = 16
		if ro.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked: --tls-verify=false
		}
		baseRT = t
	}
	scheme, err := pickScheme(ctx, repo.Registry, baseRT, ro)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if scheme == "http" && !ro.PlainHTTP && !ro.Insecure {
		// ggcr decides the scheme from the name; make it agree with
		// the one we found (a loopback registry without TLS).
		repo, _ = name.NewRepository(repo.String(), name.Insecure)
	}
	scopes := []string{repo.Scope(transport.PullScope)}
	if push {
		scopes = []string{repo.Scope(transport.PushScope)}
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, baseRT, scopes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, describeTransportErr(err))
	}
	reg := &registry{
		src:  src,
		repo: repo,
		ref:  r.Identifier(),
		base: scheme + "://" + repo.RegistryStr(),
		client: &http.Client{
			Transport: rt,
			// Follow redirects (blob GETs go to object storage); Go
			// drops the Authorization header when the host changes.
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return errors.New("more than 10 redirects")
				}
				return nil
			},
		},
		logf: ro.Logf,
		opts: ro.withDefaults(),
		mem:  newChunkLRU(memChunkBytes),
	}
	if reg.logf == nil {
		reg.logf = func(string, ...any) {}
	}
	if ro.ChunkDir != "" {
		reg.chunks = openChunkStore(ro.ChunkDir, ro.ChunkCacheMax, reg.logf)
	}
	return reg, nil
}

// pickScheme is Docker's rule: TLS first; plain HTTP only when the user
// said so, or the registry is on loopback (or --tls-verify=false) and does
// not speak TLS at all. A TLS registry on loopback therefore keeps TLS,
// which ggcr's name-based guess would not.
func pickScheme(ctx context.Context, reg name.Registry, rt http.RoundTripper, ro RemoteOptions) (string, error) {
	if ro.PlainHTTP {
		return "http", nil
	}
	host := reg.RegistryStr()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		return "https", nil
	}
	var rhe tls.RecordHeaderError
	if (ro.Insecure || isLoopback(host)) && (errors.As(err, &rhe) || strings.Contains(err.Error(), "server gave HTTP response")) {
		return "http", nil
	}
	if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
		return "", fmt.Errorf("registry %s: no answer in 30 s: %w", host, err)
	}
	return "", fmt.Errorf("registry %s: %w", host, err)
}

func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// describeTransportErr keeps ggcr's structured error (status code and
// registry error codes) but names the common case plainly.
func describeTransportErr(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("authentication failed (check --creds or `docker login`): %w", err)
	}
	return err
}

func (r *registry) url(kind, ref string) string {
	return r.base + "/v2/" + r.repo.RepositoryStr() + "/" + kind + "/" + ref
}

// get does one GET with retries for transient failures (network errors,
// 5xx, 429) and returns a response with a 2xx status, or an error that
// names what and the status.
func (r *registry) get(ctx context.Context, what, u string, hdr http.Header) (*http.Response, error) {
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return nil, err
			}
			r.logf("%s: retry %d after: %v", what, attempt, lastErr)
		}
		rctx, cancel := context.WithCancel(ctx)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
		if err != nil {
			cancel()
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		wd := time.AfterFunc(r.opts.IdleTimeout, cancel)
		resp, err := r.client.Do(req)
		if err != nil {
			wd.Stop()
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = err
			continue
		}
		if resp.StatusCode/100 == 2 {
			resp.Body = &watchdogBody{ReadCloser: resp.Body, t: wd, idle: r.opts.IdleTimeout, cancel: cancel}
			return resp, nil
		}
		wd.Stop()
		cancel()
		resp.Body.Close()
		lastErr = fmt.Errorf("%s", resp.Status)
		if !retryableStatus(resp.StatusCode) {
			switch resp.StatusCode {
			case http.StatusNotFound:
				return nil, fmt.Errorf("%s: %w (HTTP %s)", what, ErrNotFound, resp.Status)
			case http.StatusUnauthorized, http.StatusForbidden:
				return nil, fmt.Errorf("%s: access denied (HTTP %s; check --creds or `docker login`)", what, resp.Status)
			}
			return nil, fmt.Errorf("%s: HTTP %s", what, resp.Status)
		}
	}
	return nil, fmt.Errorf("%s: giving up after %d attempts: %w", what, maxAttempts, lastErr)
}

const maxAttempts = 6

// watchdogBody cancels its request when no Read has returned for idle
// (RemoteOptions.IdleTimeout).
type watchdogBody struct {
	io.ReadCloser
	t      *time.Timer
	idle   time.Duration
	cancel context.CancelFunc
}

func (w *watchdogBody) Read(p []byte) (int, error) {
	n, err := w.ReadCloser.Read(p)
	w.t.Reset(w.idle)
	return n, err
}

func (w *watchdogBody) Close() error {
	w.t.Stop()
	w.cancel()
	return w.ReadCloser.Close()
}

func retryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// backoff grows 100 ms, 200 ms, ... capped at 3 s: a registry that
// restarts comes back within the retries, a dead one fails the read in
// about ten seconds, not minutes.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << (attempt - 1)
	return min(d, 3*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// getManifest fetches a manifest or index by tag or digest. A digest
// reference is verified; a tag's digest is computed from the bytes (the
// Docker-Content-Digest header is only a claim).
func (r *registry) getManifest(ctx context.Context, ref string, limit int64) ([]byte, ocispec.Descriptor, error) {
	what := "manifest " + ref
	resp, err := r.get(ctx, what, r.url("manifests", ref), http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: %w", what, err)
	}
	if int64(len(data)) > limit {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: larger than %d bytes: %w", what, limit, ErrInvalid)
	}
	d := ocispec.Descriptor{MediaType: strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]), Size: int64(len(data))}
	if dg, err := digest.Parse(ref); err == nil {
		if got := dg.Algorithm().FromBytes(data); got != dg {
			return nil, d, fmt.Errorf("%s: %w (content is %s)", what, ErrDigestMismatch, got)
		}
		d.Digest = dg
	} else {
		d.Digest = digest.FromBytes(data)
	}
	return data, d, nil
}

// getBlob reads a small blob whole (configs, index artifacts) and
// verifies it.
func (r *registry) getBlob(ctx context.Context, what string, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: digest %q: %w: %w", what, string(d.Digest), ErrInvalid, err)
	}
	if d.Size > limit {
		return nil, fmt.Errorf("%s %s: %d bytes is more than the %d allowed: %w", what, d.Digest, d.Size, limit, ErrInvalid)
	}
	resp, err := r.get(ctx, what+" "+string(d.Digest), r.url("blobs", string(d.Digest)), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if d.Size > 0 {
		// Never read more than the descriptor promises (and one byte to
		// tell that a blob is longer), nor anything of a body that
		// announces another length.
		if resp.ContentLength >= 0 && resp.ContentLength != d.Size {
			return nil, fmt.Errorf("%s %s: the registry sends %d bytes, descriptor says %d: %w", what, d.Digest, resp.ContentLength, d.Size, ErrDigestMismatch)
		}
		limit = min(limit, d.Size)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %s: larger than %d bytes: %w", what, d.Digest, limit, ErrInvalid)
	}
	if d.Size > 0 && int64(len(data)) != d.Size {
		return nil, fmt.Errorf("%s %s: blob is %d bytes, descriptor says %d: %w", what, d.Digest, len(data), d.Size, ErrDigestMismatch)
	}
	if got := d.Digest.Algorithm().FromBytes(data); got != d.Digest {
		return nil, fmt.Errorf("%s %s: %w (content is %s)", what, d.Digest, ErrDigestMismatch, got)
	}
	return data, nil
}

// openRegistry resolves a registry reference to one image manifest
// (descending through indexes by platform, as for a layout) and opens its
// layers as lazily fetched RemoteBlobs.
func openRegistry(ctx context.Context, src Source, o Options, want ocispec.Platform) (*Image, error) {
	reg, err := dialRegistry(ctx, src, o.Remote, false)
	if err != nil {
		return nil, err
	}
	r := &resolver{ctx: ctx, src: src, want: want, remote: reg}
	data, d, err := reg.getManifest(ctx, reg.ref, maxMetaBlob)
	if err != nil {
		return nil, r.errorf("%w", err)
	}
	desc, plat, mdata, err := r.resolveBytes(d, data, 0)
	if err != nil {
		return nil, err
	}
	im, err := r.loadImage(desc, plat, mdata)
	if err != nil {
		return nil, err
	}
	im.Remote = &Remote{reg: reg, manifest: desc}
	im.closers = append(im.closers, reg.close)
	return im, nil
}

// rangeOf parses a Content-Range header ("bytes 0-99/1234" or
// "bytes 0-99/*"; total is -1 for "*"). Positions and length are digits
// only (RFC 9110 14.4): strconv alone would also take "-2" and "+5", and a
// negative total would pass for an unknown one.
func rangeOf(h string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, ok1 := digits(a)
	end, ok2 := digits(b)
	total, ok3 := int64(-1), true
	if tot != "*" {
		total, ok3 = digits(tot)
	}
	if !ok1 || !ok2 || !ok3 || end < start {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// digits parses a non-empty run of ASCII digits that fits an int64.
func digits(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// expiryOf guesses how long a redirect target stays valid from the
// presigning conventions of the common object stores; unknown URLs are
// reused for a minute (a stale one just costs one more redirect).
func expiryOf(u *url.URL, now time.Time) time.Time {
	q := u.Query()
	if d, e := q.Get("X-Amz-Date"), q.Get("X-Amz-Expires"); d != "" && e != "" {
		if t, err := time.Parse("20060102T150405Z", d); err == nil {
			if s, err := strconv.Atoi(e); err == nil {
				return t.Add(time.Duration(s)*time.Second - 30*time.Second)
			}
		}
	}
	for _, k := range []string{"Expires", "X-Goog-Expires"} {
		if s, err := strconv.ParseInt(q.Get(k), 10, 64); err == nil && s > 1e9 {
			return time.Unix(s, 0).Add(-30 * time.Second)
		}
	}
	if se := q.Get("se"); se != "" { // Azure SAS
		if t, err := time.Parse(time.RFC3339, se); err == nil {
			return t.Add(-30 * time.Second)
		}
	}
	return now.Add(time.Minute)
}

// redirectCache remembers where a blob's GET was redirected, so range
// reads skip the registry round trip until the target expires.
type redirectCache struct {
	mu  sync.Mutex
	u   string
	exp time.Time
}

func (c *redirectCache) get(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.u != "" && now.Before(c.exp) {
		return c.u
	}
	c.u = ""
	return ""
}

func (c *redirectCache) set(u *url.URL, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.u, c.exp = u.String(), expiryOf(u, now)
}

func (c *redirectCache) drop() {
	c.mu.Lock()
	c.u = ""
	c.mu.Unlock()
}
