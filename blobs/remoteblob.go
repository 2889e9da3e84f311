package blobs

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
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
	// Fetched counts bytes received from the registry and kept: range
	// reads that matched their chunk digests, and the stream of a first
	// mount (checked against the blob digest at its end, which fails the
	// mount if it does not match).
	Fetched int64 `json:"fetched"`
	// Unverified counts the bytes of Fetched not checked here: exact
	// ranges read through Unverified by a TOC layer's reader, which checks
	// each decoded chunk against its TOC chunk digest before serving it (a
	// mismatch fails or refetches that read there; it is not in Rejected).
	Unverified int64 `json:"unverified"`
	// Rejected counts bytes received and thrown away: chunks that did not
	// match their digests, bodies cut short, stalled or too slow.
	Rejected    int64 `json:"rejected"`
	Served      int64 `json:"served"`       // bytes returned by ReadAt
	Requests    int64 `json:"requests"`     // HTTP requests for this blob
	Retries     int64 `json:"retries"`      //
	ChunkHits   int64 `json:"chunk_hits"`   // chunks found in memory or on disk
	ChunkMisses int64 `json:"chunk_misses"` // chunks that had to be fetched
	// FailedFast counts reads failed at once because their chunk had just
	// failed (RemoteOptions.FailureMemory); FailingChunks is how many
	// chunks are in that state now.
	FailedFast    int64 `json:"failed_fast"`
	FailingChunks int   `json:"failing_chunks"`
	Chunks        int   `json:"chunks"`       // chunks of the blob (0 until SetChunkSums)
	Local         int   `json:"local_chunks"` // chunks present in the on-disk range cache
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
	// failed: chunks whose last fetch failed, answered from the failure
	// until it expires (see failure).
	failed   map[int]*failure
	lastMiss int // last chunk fetched, for read-ahead
	seqRun   int // consecutive misses that each followed the previous one

	fetched, rejected, served, requests, retries, hits, misses, failedFast, unverified atomic.Int64
}

// failure is a chunk's recent fetch failure. The kernel retries a failed
// read at once (read-ahead, then the read itself), and every file in the
// chunk fails the same way: for a while, those reads get this error
// without a request, instead of six more attempts each. The while doubles
// with each consecutive failure (RemoteOptions.FailureMemory, up to 16×),
// so a registry that stays broken costs a request now and then, and one
// that recovers is used again within seconds.
type failure struct {
	err   error
	at    time.Time
	until time.Time
	n     int // consecutive failures
}

type chunkCall struct {
	done chan struct{}
	data []byte
	err  error
}

func (r *registry) blob(dg digest.Digest, size int64) *RemoteBlob {
	ctx, cancel := context.WithCancel(context.Background())
	return &RemoteBlob{reg: r, dg: dg, size: size, ctx: ctx, cancel: cancel, inflight: map[int]*chunkCall{}, failed: map[int]*failure{}, lastMiss: -2}
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
		Fetched: b.fetched.Load(), Unverified: b.unverified.Load(), Rejected: b.rejected.Load(), Served: b.served.Load(), Requests: b.requests.Load(),
		Retries: b.retries.Load(), ChunkHits: b.hits.Load(), ChunkMisses: b.misses.Load(), FailedFast: b.failedFast.Load(),
	}
	now := time.Now()
	b.mu.Lock()
	s.Chunks = len(b.sums)
	csize := b.csize
	for _, f := range b.failed {
		if now.Before(f.until) {
			s.FailingChunks++
		}
	}
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
	now := time.Now()
	if f := b.failed[idx]; f != nil && now.Before(f.until) {
		cs, sum := b.csize, b.sums[idx]
		b.mu.Unlock()
		// Another mount sharing the range cache may have fetched the
		// chunk since: verified bytes on disk beat the remembered failure
		// (a miss costs one failed open).
		if store := b.reg.chunks; store != nil {
			if data, ok := store.load(b.dg, cs, idx, sum); ok {
				b.reg.mem.put(b, idx, data)
				b.hits.Add(1)
				b.mu.Lock()
				delete(b.failed, idx)
				if idx < len(b.present) {
					b.present[idx] = true
				}
				b.mu.Unlock()
				return data, nil
			}
		}
		b.failedFast.Add(1)
		return nil, fmt.Errorf("%w (chunk %d failed %v ago; not asked for again for %v)", f.err, idx,
			now.Sub(f.at).Round(time.Millisecond), f.until.Sub(now).Round(time.Millisecond))
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
		if _, busy := b.inflight[i]; busy || (i > idx && (b.reg.mem.has(b, i) || b.failing(i, now))) {
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

// failing reports whether chunk i is in its failure memory (b.mu held).
func (b *RemoteBlob) failing(i int, now time.Time) bool {
	f := b.failed[i]
	return f != nil && now.Before(f.until)
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
	data, errs := b.fetch(from, to)
	for i := need; i < len(calls); i++ {
		idx := first + i
		if errs[idx-from] != nil {
			calls[i].err = errs[idx-from]
			continue
		}
		calls[i].data = data[idx-from]
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

// errStalled marks an attempt abandoned for lack of progress, errSlow one
// abandoned for falling behind the floor rate (RemoteOptions.RangeMinRate).
var (
	errStalled = errors.New("registry stalled")
	errSlow    = errors.New("registry too slow")
)

// errBadResponse marks a response that broke the Range contract; it is
// retried like a transient failure.
var errBadResponse = errors.New("bad range response")

// fetch gets chunks from..to with one Range request and verifies each,
// returning each chunk's bytes or its error. Wrong, short, misranged,
// stalled or too slow answers are retried (retrying), asking only for the
// chunks still missing; the same wrong bytes twice are not retried again
// (the registry's blob is not the one the index describes). Chunks that
// still fail are remembered (failure). Nothing unverified is returned.
func (b *RemoteBlob) fetch(from, to int) ([][]byte, []error) {
	out := make([][]byte, to-from+1)
	errs := make([]error, to-from+1)
	lo, hi := from, to           // the chunks still missing
	var lastBad map[int][32]byte // chunk → sum of the wrong bytes of the last attempt
	lastErr := b.retrying(func() string { return b.what(lo, hi) }, func() (bool, error) {
		// On failure, data holds the whole chunks that arrived before it:
		// they are checked and kept like the chunks of a complete body (a
		// read-ahead run whose later chunks stall must not fail the chunk
		// its reader asked for).
		data, retry, err := b.fetchOnce(lo, hi)
		bad := map[int][32]byte{}
		next := lo // the first chunk that did not arrive
		for i := lo; i <= hi && int64(i-lo)*b.csize < int64(len(data)); i++ {
			off := int64(i-lo) * b.csize
			e := min(off+b.csize, int64(len(data)))
			piece := data[off:e:e]
			next = i + 1
			sum := sha256.Sum256(piece)
			if sum != b.sums[i] {
				bad[i] = sum
				b.rejected.Add(int64(len(piece)))
				continue
			}
			b.fetched.Add(int64(len(piece)))
			out[i-from] = piece
		}
		if err != nil {
			// Cut short: ask again from the first chunk that was wrong
			// or did not arrive.
			lo = next
			for i := range bad {
				lo = min(lo, i)
			}
			lastBad = bad
			return retry, err
		}
		if len(bad) == 0 {
			return false, nil
		}
		first, last, same := hi, lo, lastBad != nil
		for i, sum := range bad {
			first, last = min(first, i), max(last, i)
			if prev, ok := lastBad[i]; !ok || prev != sum {
				same = false
			}
		}
		lastBad = bad
		lo, hi = first, last
		err = fmt.Errorf("%s: does not match the index's chunk digests (wrong bytes from the registry or a proxy): %w", chunkList(bad), ErrDigestMismatch)
		if same {
			return false, fmt.Errorf("%w; the same wrong bytes twice: the registry's blob is not the one the layer index describes", err)
		}
		return true, err
	})
	if lastErr == nil {
		b.mu.Lock()
		for i := from; i <= to; i++ {
			delete(b.failed, i)
		}
		b.mu.Unlock()
		return out, errs
	}
	mlo, mhi := to, from // the chunks that failed
	for i := from; i <= to; i++ {
		if out[i-from] == nil {
			mlo, mhi = min(mlo, i), max(mhi, i)
		}
	}
	err := fmt.Errorf("%s: %w", b.what(mlo, mhi), lastErr)
	b.reg.logf("%s: read failed: %v", b.what(mlo, mhi), lastErr)
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := from; i <= to; i++ {
		if out[i-from] != nil {
			delete(b.failed, i)
			continue
		}
		errs[i-from] = err
		if b.ctx.Err() != nil {
			continue // closed: nothing to remember
		}
		f := b.failed[i]
		if f == nil {
			f = &failure{}
			b.failed[i] = f
		}
		f.n++
		f.err, f.at = err, now
		f.until = now.Add(b.reg.opts.FailureMemory << min(f.n-1, 4))
	}
	return out, errs
}

// retrying runs attempt until it succeeds (nil), fails for good (retry
// false) or maxAttempts ran, with backoff between attempts, and returns
// the last error. No new attempt starts after RangeBudget, except the
// first retry: an attempt cut for being slow may take longer than the
// budget, and the retry goes out on another connection (the slow one was
// closed by the cancellation). what names the bytes in log lines. Both
// range readers use it: fetch (chunks checked against the index's
// digests) and Unverified (exact ranges a TOC reader checks itself).
func (b *RemoteBlob) retrying(what func() string, attempt func() (retry bool, err error)) error {
	var lastErr error
	giveUp := time.Now().Add(b.reg.opts.RangeBudget)
	for n := 0; n < maxAttempts; n++ {
		if n > 0 {
			if n > 1 && time.Now().After(giveUp) {
				break // a FUSE read must not hang: fail it, the next read tries again
			}
			b.retries.Add(1)
			b.reg.logf("%s: retry %d after: %v", what(), n, lastErr)
			if err := sleepCtx(b.ctx, backoff(n)); err != nil {
				return err
			}
		}
		retry, err := attempt()
		if err == nil {
			return nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return lastErr
}

// what names a range of chunks in messages: the blob and the bytes.
func (b *RemoteBlob) what(from, to int) string {
	return fmt.Sprintf("blob %s bytes %d-%d", b.dg, int64(from)*b.csize, min(int64(to+1)*b.csize, b.size)-1)
}

// chunkList names the chunks of a failed check, in order.
func chunkList(bad map[int][32]byte) string {
	idx := make([]int, 0, len(bad))
	for i := range bad {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	if len(idx) == 1 {
		return "chunk " + strconv.Itoa(idx[0])
	}
	s := make([]string, len(idx))
	for i, v := range idx {
		s[i] = strconv.Itoa(v)
	}
	return "chunks " + strings.Join(s, ", ")
}

// Unverified returns the blob's bytes by exact Range requests, checked
// against nothing and never cached here. It exists for layers whose own
// table of contents carries the digests (eStargz, zstd:chunked): their
// reader (layerindex.TOCReader) checks every chunk it decodes against
// the TOC's chunk digest, which the manifest covers through its
// annotation, before serving a byte of it, so the chunk table an
// ocimount index has is not needed. Nothing else may read through it.
//
// Reads get the same robustness as verified ones (retrying, attemptWatch,
// the Content-Range checks of fetchBytes), but no failure memory: there
// are no chunk numbers to remember. In BlobStats, the bytes count in
// Fetched and also in Unverified (not checked here); bytes of failed
// attempts count in Rejected as usual, but bytes a TOC chunk digest
// refuses later do not (layerindex fails or refetches that read, and
// logs it).
func (b *RemoteBlob) Unverified() io.ReaderAt { return unverifiedBlob{b} }

type unverifiedBlob struct{ b *RemoteBlob }

// unverifiedUnit is the floor-rate schedule's unit for unverified reads
// (attemptWatch): they have no chunk size of their own; a TOC chunk's
// compressed range is often larger, and must not get one deadline for
// all of it.
const unverifiedUnit = 512 << 10

// ReadAt fetches exactly p's range (short only at the blob's end).
func (u unverifiedBlob) ReadAt(p []byte, off int64) (int, error) {
	b := u.b
	if off < 0 {
		return 0, fmt.Errorf("blob %s: negative offset", b.dg)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), b.size-off)
	if want == 0 {
		return 0, nil
	}
	start, end := off, off+want-1
	var data []byte
	err := b.retrying(func() string { return fmt.Sprintf("blob %s bytes %d-%d (unverified)", b.dg, start, end) }, func() (bool, error) {
		d, retry, err := b.fetchBytes(start, end, unverifiedUnit)
		if err != nil {
			b.rejected.Add(int64(len(d))) // an exact range: a part of it is of no use
			return retry, err
		}
		data = d
		return false, nil
	})
	if err != nil {
		b.reg.logf("blob %s bytes %d-%d (unverified): read failed: %v", b.dg, start, end, err)
		return 0, fmt.Errorf("blob %s bytes %d-%d: %w", b.dg, start, end, err)
	}
	b.fetched.Add(int64(len(data)))
	b.unverified.Add(int64(len(data)))
	n := copy(p, data)
	b.served.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TOCChunks gives the on-disk range cache to a TOC reader: load returns
// a decoded chunk whose sha256 is sum if the cache has it (checked; a
// damaged file is dropped), store keeps one the reader has checked,
// through the store's locked, bounded path like any fetched chunk. Both
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

// attemptWatch abandons one range attempt (cancelling its request) when
// it makes no progress for idle, or falls behind the floor-rate schedule:
// the k-th chunk of the response (or all of it) must have arrived
// idle + k×chunk/rate after the request went out. The schedule is per
// chunk, so a reader waiting for the first chunk of a long read-ahead run
// waits for that chunk's deadline, not the run's; and a server that sends
// headers, then nothing (or a byte a second) is cut as surely as one that
// sends nothing.
type attemptWatch struct {
	cancel      context.CancelFunc
	idle        time.Duration
	sent        time.Time
	csize, size int64 // schedule unit (the chunk size, or unverifiedUnit), bytes asked for
	rate        int64
	idleT       *time.Timer
	slowT       *time.Timer
	got         atomic.Int64
	mu          sync.Mutex
	why         error // why a timer cancelled the attempt
}

func newAttemptWatch(cancel context.CancelFunc, o RemoteOptions, csize, size int64) *attemptWatch {
	w := &attemptWatch{cancel: cancel, idle: o.RangeIdle, sent: time.Now(), csize: csize, size: size, rate: o.RangeMinRate}
	w.idleT = time.AfterFunc(w.idle, func() {
		w.fire(fmt.Errorf("%w (no progress for %v)", errStalled, w.idle))
	})
	w.slowT = time.AfterFunc(w.due(1), func() {
		got := w.got.Load()
		w.fire(fmt.Errorf("%w: %d of %d bytes in %v, below the floor of %d bytes/s", errSlow, got, w.size,
			time.Since(w.sent).Round(time.Millisecond), w.rate))
	})
	return w
}

// due is when chunk k (1-based) of the response must be complete,
// relative to the request.
func (w *attemptWatch) due(k int64) time.Duration {
	n := min(k*w.csize, w.size)
	return w.idle + time.Duration(float64(n)/float64(w.rate)*float64(time.Second))
}

func (w *attemptWatch) fire(why error) {
	w.mu.Lock()
	if w.why == nil {
		w.why = why
	}
	w.mu.Unlock()
	w.cancel()
}

// progress records n more bytes received.
func (w *attemptWatch) progress(n int) {
	if n <= 0 {
		return
	}
	w.idleT.Reset(w.idle)
	got := w.got.Add(int64(n))
	if prev := got - int64(n); got/w.csize > prev/w.csize && got < w.size {
		// A chunk completed: the next one is due on the schedule.
		w.slowT.Reset(time.Until(w.sent.Add(w.due(got/w.csize + 1))))
	}
}

func (w *attemptWatch) stop() {
	w.idleT.Stop()
	w.slowT.Stop()
}

// wrap says why the attempt failed, if a timer cut it.
func (w *attemptWatch) wrap(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.why != nil {
		return fmt.Errorf("%w: %v", w.why, err)
	}
	return err
}

// watchedReader reports the bytes it reads to an attemptWatch.
type watchedReader struct {
	r io.Reader
	w *attemptWatch
}

func (p *watchedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.w.progress(n)
	return n, err
}

// fetchOnce does one Range GET of chunks from..to (fetchBytes, with the
// floor-rate schedule per chunk). A body cut short still returns the
// whole chunks that arrived (with the error); the caller checks and counts
// those, and the bytes of a partial chunk count as rejected.
func (b *RemoteBlob) fetchOnce(from, to int) (_ []byte, retry bool, _ error) {
	start := int64(from) * b.csize
	end := min(int64(to+1)*b.csize, b.size) - 1
	return b.fetchBytes(start, end, b.csize)
}

// fetchBytes does one Range GET of bytes start..end (inclusive), via the
// cached redirect target if there is one, watched by an attemptWatch
// whose schedule has a deadline per unit bytes, and checks the answer
// against the Range contract (status, Content-Range, length). It reports
// whether a failure is worth retrying. Bytes of a failed attempt count as
// rejected; the caller counts the bytes of a complete body once it has
// checked them (or, unverified, handed them on).
func (b *RemoteBlob) fetchBytes(start, end, unit int64) (_ []byte, retry bool, _ error) {
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	w := newAttemptWatch(cancel, b.reg.opts, unit, end-start+1)
	defer w.stop()
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
		return nil, true, w.wrap(err)
	}
	defer resp.Body.Close()
	if !viaRedirect && resp.Request != nil && resp.Request.URL.String() != u {
		b.redir.set(resp.Request.URL, now)
	}
	readBody := func(n int64) ([]byte, bool, error) {
		data := make([]byte, n)
		got, err := io.ReadFull(&watchedReader{r: resp.Body, w: w}, data)
		if err != nil {
			if b.ctx.Err() != nil {
				b.rejected.Add(int64(got))
				return nil, false, b.ctx.Err()
			}
			// The whole units (chunks, for fetch) that arrived go back
			// with the error to be checked and kept (a read-ahead run
			// whose later chunks stall must not fail the chunk its
			// reader asked for); the rest is lost.
			whole := int64(got) / unit * unit
			b.rejected.Add(int64(got) - whole)
			return data[:whole], true, w.wrap(fmt.Errorf("%w: body ended after %d of %d bytes: %v", errBadResponse, got, n, err))
		}
		return data, false, nil
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK && start == 0 && end == b.size-1 && resp.ContentLength == b.size:
		// A range covering the whole (small) blob: some servers answer
		// with the whole body and 200, which is the same bytes.
		return readBody(b.size)
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
	return readBody(end - start + 1)
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
