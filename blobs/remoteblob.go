package blobs

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readRemote is readVerified for registry sources: manifests and indexes
// from the manifests endpoint, configs from the blobs endpoint.
func (r *resolver) readRemote(what string, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if what == "config" {
		data, err := r.remote.getBlob(r.ctx, what, d, limit)
		if err != nil {
			return nil, r.errorf("%w", err)
		}
		return data, nil
	}
	data, got, err := r.remote.getManifest(r.ctx, string(d.Digest), limit)
	if err != nil {
		return nil, r.errorf("%w", err)
	}
	if d.Size > 0 && got.Size != d.Size {
		return nil, r.errorf("%s %s: is %d bytes, descriptor says %d: %w", what, d.Digest, got.Size, d.Size, ErrDigestMismatch)
	}
	return data, nil
}

// Remote is the registry repository an image was opened from.
type Remote struct {
	reg      *registry
	manifest ocispec.Descriptor
}

// ErrUnverified: a lazily fetched blob was read before its chunk digests
// were known. Serving such bytes would trust the network.
var ErrUnverified = errors.New("no chunk digests to verify fetched bytes against")

// BlobStats are a RemoteBlob's counters since it was opened.
type BlobStats struct {
	Fetched     int64 `json:"fetched"`      // bytes received from the registry (range reads and streams)
	Served      int64 `json:"served"`       // bytes returned by ReadAt
	Requests    int64 `json:"requests"`     // HTTP requests for this blob
	Retries     int64 `json:"retries"`      //
	ChunkHits   int64 `json:"chunk_hits"`   // chunks found in memory or on disk
	ChunkMisses int64 `json:"chunk_misses"` // chunks that had to be fetched
	Chunks      int   `json:"chunks"`       // chunks of the blob (0 until SetChunkSums)
	Local       int   `json:"local_chunks"` // chunks present in the on-disk range cache
}

// RemoteBlob is a layer blob in a registry, read lazily in fixed-size
// chunks with HTTP Range requests. Every chunk is checked against the
// layer index's chunk digests before any of its bytes are returned, so a
// registry, proxy or cache that returns wrong bytes causes a failed read
// (and a log line), never wrong data. It is safe for concurrent use;
// concurrent readers of one chunk share one request.
type RemoteBlob struct {
	reg    *registry
	dg     digest.Digest
	size   int64
	redir  redirectCache
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu       sync.Mutex
	csize    int64
	sums     [][32]byte
	present  []bool // on disk
	inflight map[int]*chunkCall
	// stalledUntil: chunks whose fetch just failed by stalling.
	stalledUntil map[int]time.Time
	lastMiss     int // last chunk fetched, for read-ahead
	seqRun       int // consecutive misses that each followed the previous one

	fetched, served, requests, retries, hits, misses atomic.Int64
}

type chunkCall struct {
	done chan struct{}
	data []byte
	err  error
}

func (r *registry) blob(dg digest.Digest, size int64) *RemoteBlob {
	ctx, cancel := context.WithCancel(context.Background())
	return &RemoteBlob{reg: r, dg: dg, size: size, ctx: ctx, cancel: cancel, inflight: map[int]*chunkCall{}, stalledUntil: map[int]time.Time{}, lastMiss: -2}
}

// Size is the blob size from the manifest descriptor.
func (b *RemoteBlob) Size() int64 { return b.size }

// Digest is the blob's digest.
func (b *RemoteBlob) Digest() digest.Digest { return b.dg }

// Close cancels reads in flight.
func (b *RemoteBlob) Close() error { b.cancel(); return nil }

// SetChunkSums gives the digests every fetched chunk is checked against
// (from the layer index). Until it is called, ReadAt fails.
func (b *RemoteBlob) SetChunkSums(size int64, sums [][32]byte) error {
	// Bounded: the table may come from a published index, and one huge
	// "chunk" would make every read fetch (and hold) the whole layer.
	if size < 4<<10 || size > 8<<20 || int64(len(sums)) != (b.size+size-1)/size {
		return fmt.Errorf("blob %s: %d chunk digests of %d bytes do not cover %d bytes: %w", b.dg, len(sums), size, b.size, ErrInvalid)
	}
	var present []bool
	if b.reg.chunks != nil {
		present = b.reg.chunks.present(b.dg, size, len(sums))
	}
	b.mu.Lock()
	b.csize, b.sums, b.present = size, sums, present
	b.mu.Unlock()
	return nil
}

// Stats returns the blob's counters.
func (b *RemoteBlob) Stats() BlobStats {
	s := BlobStats{
		Fetched: b.fetched.Load(), Served: b.served.Load(), Requests: b.requests.Load(),
		Retries: b.retries.Load(), ChunkHits: b.hits.Load(), ChunkMisses: b.misses.Load(),
	}
	b.mu.Lock()
	s.Chunks = len(b.sums)
	csize := b.csize
	b.mu.Unlock()
	if b.reg.chunks != nil && csize > 0 {
		// Ask the disk, not our flags: the cache may have been pruned
		// (by this mount or another) since.
		present := b.reg.chunks.present(b.dg, csize, s.Chunks)
		b.mu.Lock()
		b.present = present
		b.mu.Unlock()
		for _, p := range present {
			if p {
				s.Local++
			}
		}
	}
	return s
}

// ReadAt reads verified bytes, fetching the chunks it needs.
func (b *RemoteBlob) ReadAt(p []byte, off int64) (int, error) {
	return b.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that stops waiting for another reader's fetch
// of a chunk when ctx ends (a fetch this read started itself runs to its
// end: other readers may be waiting for it, and it is bounded by
// RemoteOptions.RangeBudget).
func (b *RemoteBlob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: negative offset", b.dg)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	b.mu.Lock()
	cs := b.csize
	b.mu.Unlock()
	if cs == 0 {
		return 0, fmt.Errorf("blob %s: %w", b.dg, ErrUnverified)
	}
	want := min(int64(len(p)), b.size-off)
	n := int64(0)
	for n < want {
		idx := int((off + n) / cs)
		last := int((off + want - 1) / cs)
		data, err := b.chunk(ctx, idx, last)
		if err != nil {
			b.served.Add(n)
			return int(n), err
		}
		k := copy(p[n:want], data[off+n-int64(idx)*cs:])
		n += int64(k)
	}
	b.served.Add(n)
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// chunk returns chunk idx, verified. last is the last chunk the current
// read needs: on a miss, the missing chunks idx..last (plus read-ahead
// when reads are sequential) are fetched with one request.
func (b *RemoteBlob) chunk(ctx context.Context, idx, last int) ([]byte, error) {
	if data := b.reg.mem.get(b, idx); data != nil {
		b.hits.Add(1)
		return data, nil
	}
	b.mu.Lock()
	if t, ok := b.stalledUntil[idx]; ok {
		if time.Now().Before(t) {
			b.mu.Unlock()
			return nil, fmt.Errorf("blob %s chunk %d: %w moments ago; not retrying yet", b.dg, idx, errStalled)
		}
		delete(b.stalledUntil, idx)
	}
	if c, ok := b.inflight[idx]; ok {
		b.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if c.err == nil {
			b.hits.Add(1)
		}
		return c.data, c.err
	}
	// Claim a run of chunks nobody is fetching: idx, the rest of this
	// read, and up to readAhead more once misses have been sequential for
	// a while (a streaming reader). Not sooner: one gzip span decode also
	// reads a few chunks in order, and a lazy mount must not fetch
	// megabytes for every small file.
	end := last
	if b.lastMiss == idx-1 || b.lastMiss == idx {
		b.seqRun++
	} else {
		b.seqRun = 0
	}
	if b.seqRun >= seqBeforeReadAhead {
		end = max(end, idx+readAhead)
	}
	end = min(end, len(b.sums)-1, idx+maxRun-1)
	calls := []*chunkCall{}
	for i := idx; i <= end; i++ {
		if _, busy := b.inflight[i]; busy || (i > idx && b.reg.mem.has(b, i)) {
			break
		}
		c := &chunkCall{done: make(chan struct{})}
		b.inflight[i] = c
		calls = append(calls, c)
	}
	end = idx + len(calls) - 1
	b.lastMiss = end
	b.mu.Unlock()

	b.fill(idx, calls)

	b.mu.Lock()
	for i := idx; i <= end; i++ {
		delete(b.inflight, i)
	}
	b.mu.Unlock()
	for _, c := range calls {
		close(c.done)
	}
	return calls[0].data, calls[0].err
}

// progressReader pushes a watchdog back (by idle) on every read that
// returns bytes.
type progressReader struct {
	r    io.Reader
	wd   *time.Timer
	idle time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.wd.Reset(p.idle)
	}
	return n, err
}

const (
	seqBeforeReadAhead = 4
	readAhead          = 3  // extra chunks fetched after sequential misses (2 MiB in all)
	maxRun             = 16 // chunks per request at most (8 MiB)
)

// fill completes calls for chunks first..: from the disk cache where
// present and valid, the rest from the registry.
func (b *RemoteBlob) fill(first int, calls []*chunkCall) {
	store := b.reg.chunks
	need := -1 // first chunk that must be fetched
	for i, c := range calls {
		idx := first + i
		if store != nil && b.isPresent(idx) {
			if data, ok := store.load(b.dg, b.csize, idx, b.sums[idx]); ok {
				c.data = data
				b.reg.mem.put(b, idx, data)
				b.hits.Add(1)
				continue
			}
			b.setPresent(idx, false)
		}
		if need < 0 {
			need = i
		}
		// Fetch the rest in one request, even chunks that happen to be
		// on disk: one round trip beats several.
		break
	}
	if need < 0 {
		return
	}
	from := first + need
	to := first + len(calls) - 1
	b.misses.Add(int64(to - from + 1))
	data, err := b.fetch(from, to)
	for i := need; i < len(calls); i++ {
		idx := first + i
		if err != nil {
			calls[i].err = err
			continue
		}
		lo := int64(idx-from) * b.csize
		hi := min(lo+b.csize, int64(len(data)))
		calls[i].data = data[lo:hi:hi]
		b.reg.mem.put(b, idx, calls[i].data)
		if store != nil {
			if store.store(b.dg, b.csize, idx, calls[i].data) {
				b.setPresent(idx, true)
			}
		}
	}
}

func (b *RemoteBlob) isPresent(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return i < len(b.present) && b.present[i]
}

func (b *RemoteBlob) setPresent(i int, v bool) {
	b.mu.Lock()
	if i < len(b.present) {
		b.present[i] = v
	}
	b.mu.Unlock()
}

// errStalled marks an attempt abandoned for lack of progress.
var errStalled = errors.New("registry stalled")

// errBadResponse marks a response that broke the Range contract; it is
// retried like a transient failure.
var errBadResponse = errors.New("bad range response")

// fetch gets chunks from..to with one Range request and verifies each.
// Wrong, short or misranged answers are retried with backoff; after
// maxAttempts the read fails. Nothing unverified is returned.
func (b *RemoteBlob) fetch(from, to int) ([]byte, error) {
	start := int64(from) * b.csize
	end := min(int64(to+1)*b.csize, b.size) - 1
	data, err := b.fetchRange(start, end, func(data []byte) error {
		for i := from; i <= to; i++ {
			lo := int64(i-from) * b.csize
			hi := min(lo+b.csize, int64(len(data)))
			if sha256.Sum256(data[lo:hi]) != b.sums[i] {
				return fmt.Errorf("chunk %d does not match the index's digest (wrong bytes from the registry or a proxy): %w", i, ErrDigestMismatch)
			}
		}
		return nil
	})
	if errors.Is(err, errStalled) {
		// The kernel retries a failed read at once (read-ahead, then the
		// read itself); answer those from this failure instead of
		// stalling again, for a moment.
		b.mu.Lock()
		until := time.Now().Add(b.reg.opts.RangeIdle)
		for i := from; i <= to; i++ {
			b.stalledUntil[i] = until
		}
		b.mu.Unlock()
	}
	return data, err
}

// fetchRange gets bytes start..end (inclusive) with one Range request;
// check, if set, judges the bytes (an error is retried like a wrong
// answer). Failures are retried with backoff within the range budget.
func (b *RemoteBlob) fetchRange(start, end int64, check func([]byte) error) ([]byte, error) {
	what := fmt.Sprintf("blob %s bytes %d-%d", b.dg, start, end)
	var lastErr error
	giveUp := time.Now().Add(b.reg.opts.RangeBudget)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if time.Now().After(giveUp) {
				break // a FUSE read must not hang: fail it, the next read tries again
			}
			b.retries.Add(1)
			b.reg.logf("%s: retry %d after: %v", what, attempt, lastErr)
			if err := sleepCtx(b.ctx, backoff(attempt)); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		data, retry, err := b.fetchOnce(start, end)
		if err == nil && check != nil {
			if err = check(data); err != nil {
				retry = true
			}
		}
		if err == nil {
			return data, nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	b.reg.logf("%s: read failed: %v", what, lastErr)
	return nil, fmt.Errorf("%s: %w", what, lastErr)
}

// Unverified returns the blob's bytes by exact Range requests (retried on
// transport errors and bad answers, never cached), checked against
// nothing. It exists for layers whose own table of contents carries the
// digests (eStargz, zstd:chunked): their reader checks every chunk it
// decodes against the TOC's chunk digest, which the manifest covers,
// before serving a byte of it, so the 512 KiB chunk table an ocimount
// index has is not needed. Nothing else may read through it.
func (b *RemoteBlob) Unverified() io.ReaderAt { return unverifiedBlob{b} }

type unverifiedBlob struct{ b *RemoteBlob }

// TOCChunks gives the on-disk range cache to a TOC reader: load returns
// a decoded chunk whose sha256 is sum if the cache has it (checked; a
// damaged file is dropped), store keeps one the reader has checked. Both
// are nil without a range cache.
func (b *RemoteBlob) TOCChunks() (load func(sum [32]byte) ([]byte, bool), store func(sum [32]byte, data []byte)) {
	s := b.reg.chunks
	if s == nil {
		return nil, nil
	}
	load = func(sum [32]byte) ([]byte, bool) {
		data, ok := s.loadPath(s.tocPath(b.dg, sum), sum)
		if ok {
			b.hits.Add(1)
		}
		return data, ok
	}
	store = func(sum [32]byte, data []byte) { s.storePath(s.tocPath(b.dg, sum), data) }
	return load, store
}

// ReadAt fetches exactly p's range (short only at the blob's end).
func (u unverifiedBlob) ReadAt(p []byte, off int64) (int, error) {
	b := u.b
	if off < 0 || off >= b.size {
		if len(p) == 0 && off >= 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), b.size-off)
	if want == 0 {
		return 0, nil
	}
	data, err := b.fetchRange(off, off+want-1, nil)
	if err != nil {
		return 0, err
	}
	n := copy(p, data)
	b.served.Add(int64(n))
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// fetchOnce does one Range GET, via the cached redirect target if there
// is one. It reports whether a failure is worth retrying.
func (b *RemoteBlob) fetchOnce(start, end int64) (_ []byte, retry bool, _ error) {
	// A response that makes no progress for RangeIdle (no headers, no
	// body bytes) is stalled: abandon it and retry.
	rangeIdle := b.reg.opts.RangeIdle
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	stalled := false
	var smu sync.Mutex
	wd := time.AfterFunc(rangeIdle, func() { smu.Lock(); stalled = true; smu.Unlock(); cancel() })
	defer wd.Stop()
	stallErr := func(err error) error {
		smu.Lock()
		defer smu.Unlock()
		if stalled {
			return fmt.Errorf("%w (no progress for %v): %v", errStalled, rangeIdle, err)
		}
		return err
	}
	now := time.Now()
	u := b.redir.get(now)
	viaRedirect := u != ""
	if !viaRedirect {
		u = b.reg.url("blobs", string(b.dg))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10))
	b.requests.Add(1)
	resp, err := b.reg.client.Do(req)
	if err != nil {
		if b.ctx.Err() != nil {
			return nil, false, b.ctx.Err()
		}
		if viaRedirect {
			b.redir.drop()
		}
		return nil, true, stallErr(err)
	}
	defer resp.Body.Close()
	if !viaRedirect && resp.Request != nil && resp.Request.URL.String() != u {
		b.redir.set(resp.Request.URL, now)
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK && start == 0 && end == b.size-1 && resp.ContentLength == b.size:
		// A range covering the whole (small) blob: some servers answer
		// with the whole body and 200, which is the same bytes.
		data := make([]byte, b.size)
		got, err := io.ReadFull(&progressReader{r: resp.Body, wd: wd, idle: rangeIdle}, data)
		b.fetched.Add(int64(got))
		if err != nil {
			return nil, true, stallErr(fmt.Errorf("%w: body ended after %d of %d bytes: %v", errBadResponse, got, b.size, err))
		}
		return data, false, nil
	case resp.StatusCode == http.StatusOK:
		// The server ignored Range. Never read a whole layer to serve
		// a chunk: drop the connection and retry.
		return nil, true, fmt.Errorf("%w: HTTP 200 to a Range request", errBadResponse)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// Its body may claim the whole blob's length; never read it.
		return nil, true, fmt.Errorf("%w: HTTP %s for a range inside the blob", errBadResponse, resp.Status)
	case viaRedirect && resp.StatusCode/100 == 4:
		b.redir.drop() // expired or revoked presigned URL: ask the registry again
		return nil, true, fmt.Errorf("redirect target: HTTP %s", resp.Status)
	case retryableStatus(resp.StatusCode):
		return nil, true, fmt.Errorf("HTTP %s", resp.Status)
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, fmt.Errorf("%w (HTTP %s)", ErrNotFound, resp.Status)
	default:
		return nil, false, fmt.Errorf("HTTP %s", resp.Status)
	}
	s, e, total, ok := rangeOf(resp.Header.Get("Content-Range"))
	if !ok || s != start || e != end || (total >= 0 && total != b.size) {
		return nil, true, fmt.Errorf("%w: Content-Range %q for bytes %d-%d of %d", errBadResponse, resp.Header.Get("Content-Range"), start, end, b.size)
	}
	n := end - start + 1
	data := make([]byte, n)
	got, err := io.ReadFull(&progressReader{r: resp.Body, wd: wd, idle: rangeIdle}, data)
	b.fetched.Add(int64(got))
	if err != nil {
		return nil, true, stallErr(fmt.Errorf("%w: body ended after %d of %d bytes: %v", errBadResponse, got, n, err))
	}
	return data, false, nil
}

// Stream returns the whole blob as one sequential stream, for the first
// pass that builds the layer's index (and so its chunk digests). If the
// connection breaks, it resumes with a Range request where it stopped;
// the caller verifies the blob digest at the end. With keepChunk > 0 (and
// an on-disk range cache) the bytes are also stored as chunks of that
// size, so later reads fetch nothing (--prefetch); they are checked
// against the index's digests when loaded, like any cached chunk.
func (b *RemoteBlob) Stream(ctx context.Context, keepChunk int64) io.ReadCloser {
	r := &resumingReader{b: b, ctx: ctx}
	if keepChunk > 0 && b.reg.chunks != nil {
		r.keep = keepChunk
	}
	return r
}

type resumingReader struct {
	b       *RemoteBlob
	ctx     context.Context
	body    io.ReadCloser
	off     int64
	resumes int
	keep    int64
	buf     []byte
}

// kept stores complete chunks of what the stream has returned.
func (r *resumingReader) kept(p []byte) {
	for len(p) > 0 {
		k := min(int64(len(p)), r.keep-int64(len(r.buf)))
		r.buf = append(r.buf, p[:k]...)
		p = p[k:]
		end := r.off - int64(len(p))
		if int64(len(r.buf)) == r.keep || end == r.b.size {
			idx := int((end - 1) / r.keep)
			r.b.reg.chunks.store(r.b.dg, r.keep, idx, r.buf)
			r.buf = r.buf[:0]
		}
	}
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.b.size {
			// Anything past the descriptor's size would be a lie;
			// the digest check catches a short or long blob anyway.
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		if int64(len(p)) > r.b.size-r.off {
			p = p[:r.b.size-r.off]
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		r.b.fetched.Add(int64(n))
		if r.keep > 0 && n > 0 {
			r.kept(p[:n])
		}
		if n > 0 || err == nil {
			return n, nil
		}
		r.body.Close()
		r.body = nil
		if err == io.EOF && r.off < r.b.size {
			err = io.ErrUnexpectedEOF
		}
		if r.ctx.Err() != nil {
			return 0, r.ctx.Err()
		}
		r.resumes++
		if r.resumes >= maxAttempts {
			return 0, fmt.Errorf("blob %s: stream broke %d times, last at byte %d: %w", r.b.dg, r.resumes, r.off, err)
		}
		r.b.retries.Add(1)
		r.b.reg.logf("blob %s: stream broke at byte %d (%v); resuming", r.b.dg, r.off, err)
		if err := sleepCtx(r.ctx, backoff(r.resumes)); err != nil {
			return 0, err
		}
	}
}

func (r *resumingReader) open() error {
	hdr := http.Header{}
	if r.off > 0 {
		// An explicit end: some registries refuse open-ended ranges.
		hdr.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-"+strconv.FormatInt(r.b.size-1, 10))
	}
	r.b.requests.Add(1)
	resp, err := r.b.reg.get(r.ctx, "blob "+string(r.b.dg), r.b.reg.url("blobs", string(r.b.dg)), hdr)
	if err != nil {
		return err
	}
	if r.off > 0 {
		s, _, _, ok := rangeOf(resp.Header.Get("Content-Range"))
		if resp.StatusCode != http.StatusPartialContent || !ok || s != r.off {
			resp.Body.Close()
			return fmt.Errorf("blob %s: cannot resume at byte %d: %w (HTTP %s, Content-Range %q)", r.b.dg, r.off, errBadResponse, resp.Status, resp.Header.Get("Content-Range"))
		}
	}
	r.body = resp.Body
	return nil
}

func (r *resumingReader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}

// memChunkBytes bounds a registry's in-memory LRU of verified chunks
// (registry.mem). It exists for the reads that come in smaller pieces than
// a chunk (a gzip span decode reads its compressed input 32 KiB at a
// time); the decoded-span cache above it is what keeps hot data.
const memChunkBytes = 32 << 20

type chunkKey struct {
	b   *RemoteBlob
	idx int
}

type chunkLRU struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    *list.List
	m     map[chunkKey]*list.Element
}

type lruItem struct {
	k    chunkKey
	data []byte
}

func newChunkLRU(max int64) *chunkLRU {
	return &chunkLRU{max: max, ll: list.New(), m: map[chunkKey]*list.Element{}}
}

func (c *chunkLRU) get(b *RemoteBlob, idx int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[chunkKey{b, idx}]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruItem).data
	}
	return nil
}

func (c *chunkLRU) has(b *RemoteBlob, idx int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[chunkKey{b, idx}]
	return ok
}

func (c *chunkLRU) put(b *RemoteBlob, idx int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := chunkKey{b, idx}
	if _, ok := c.m[k]; ok {
		return
	}
	c.m[k] = c.ll.PushFront(&lruItem{k, data})
	c.bytes += int64(len(data))
	for c.bytes > c.max && c.ll.Len() > 1 {
		e := c.ll.Back()
		it := e.Value.(*lruItem)
		c.ll.Remove(e)
		delete(c.m, it.k)
		c.bytes -= int64(len(it.data))
	}
}
