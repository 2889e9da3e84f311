package layerindex

import (
	"container/list"
	"context"
	"fmt"
	"runtime"
	"sync"
)

// SpanCache is an LRU cache of decoded spans, shared by the readers of many
// blobs and bounded by the bytes of the spans it holds.
//
// Concurrent requests for the same span decode it once: FUSE issues many
// parallel reads that land in the same span (readahead, several processes
// opening the same file), and decoding a span is by far the costliest step.
// Different spans decode in parallel, and no lock is held while decoding.
// Cached spans are never modified, so they are handed out without copying;
// an evicted span stays valid for whoever still holds it.
//
// The cache owns every goroutine the read path starts: span decodes (run
// in their own goroutine so a reader of a prefix can return early) and
// sequential read-ahead, which it also bounds (slots). Close waits for
// them, so a server that drops an image leaves nothing running.
type SpanCache struct {
	max int64
	// readAhead is how many spans past the one being read a sequential
	// reader keeps decoded or decoding; slots bounds read-ahead decodes
	// over all readers of the cache (skipped, not queued, when full).
	readAhead int
	slots     chan struct{}
	bg        sync.WaitGroup // decodes and read-ahead in flight
	closed    bool           // under mu: start no more goroutines

	mu       sync.Mutex
	lru      list.List // of *cacheEntry, most recently used first
	entries  map[spanKey]*list.Element
	inflight map[spanKey]*spanCall
	free     [][]byte // recycled span buffers, at most maxFree
	bytes    int64
	hits     int64
	misses   int64
}

type spanKey struct {
	key  string
	span int
}

type cacheEntry struct {
	k    spanKey
	data []byte
	// rw is read-locked by every caller still reading data; an evicted
	// entry whose lock can be taken has no reader left and its buffer
	// is recycled.
	rw sync.RWMutex
}

// spanCall is one decode in progress; waiters block on done, or, when
// they need only a prefix of the span, until progress covers it.
type spanCall struct {
	done   chan struct{}
	data   []byte
	err    error
	cached bool // data went into the cache (and may be recycled later)

	// ce is the cache entry the span will become. Readers of a prefix
	// read-lock ce.rw (under SpanCache.mu, while the call is in flight)
	// before touching buf, so the buffer cannot be recycled under them
	// once the entry is cached and then evicted.
	ce *cacheEntry
	// mu guards avail and buf: buf[:avail] is decoded and never written
	// again. cond (on mu) is broadcast on progress and at the end.
	mu    sync.Mutex
	cond  sync.Cond
	avail int
	buf   []byte
	ended bool
}

// progress publishes that buf[:n] is decoded. The decoder must not move
// buf afterwards.
func (c *spanCall) progress(buf []byte, n int) {
	c.mu.Lock()
	c.buf, c.avail = buf, n
	c.mu.Unlock()
	c.cond.Broadcast()
}

// waitFor blocks until buf holds upto bytes or the call ended, and
// returns the decoded prefix, or nil if the call ended first; or
// ctx.Err() as soon as ctx ends.
func (c *spanCall) waitFor(ctx context.Context, upto int) ([]byte, error) {
	if ctx.Done() != nil {
		// Wake the wait below when ctx ends; the broadcast takes c.mu,
		// so it cannot slip in between the check and the Wait.
		stop := context.AfterFunc(ctx, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
		defer stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail < upto && !c.ended {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.cond.Wait()
	}
	// A span that failed to decode fails every read of it, even of bytes
	// decoded before the failure.
	if c.avail >= upto && !(c.ended && c.err != nil) {
		return c.buf[:c.avail], nil
	}
	return nil, nil
}

// NewSpanCache returns a cache holding at most maxBytes of decoded spans.
// A span larger than maxBytes is decoded (once for concurrent callers) but
// not kept.
func NewSpanCache(maxBytes int64) *SpanCache {
	ra := defaultReadAhead()
	return &SpanCache{
		max:       maxBytes,
		readAhead: ra,
		slots:     make(chan struct{}, ra),
		entries:   make(map[spanKey]*list.Element),
		inflight:  make(map[spanKey]*spanCall),
	}
}

// defaultReadAhead: spans decode independently (each has its own
// checkpoint), so on n cores up to n of them inflate at once while the
// kernel copies out the current one; a streaming read then runs faster
// than a single-threaded gunzip of the layer, which a one-span read-ahead
// could only approach. More than 4 buys nothing measurable.
func defaultReadAhead() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// Close waits for the decodes and read-ahead the cache started; reads
// after Close still work, decoding in the caller's goroutine, with no
// read-ahead.
func (s *SpanCache) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.bg.Wait()
}

// goBackground runs f in a goroutine the cache waits for at Close, and
// reports false (running nothing) once the cache is closed.
func (s *SpanCache) goBackground(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
	return true
}

// Stats reports the lookups served without decoding (hits, which include
// waiting for another caller's decode), the decodes done (misses), and the
// bytes now cached.
func (s *SpanCache) Stats() (hits, misses int64, bytes int64) {
	if s == nil {
		return 0, 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits, s.misses, s.bytes
}

// acquire returns span k, calling decode (with a recycled buffer to decode
// into, possibly nil) if it is neither cached nor being decoded. The
// caller must call release once it no longer reads data: until then the
// span's buffer cannot be recycled, even if it is evicted meanwhile.
// Errors are not cached: the next acquire tries again.
//
// Recycling matters: a streaming read decodes a fresh 1 MiB span every
// few milliseconds, and allocating each one (zeroed, often fresh pages
// from the OS) cost a quarter of the CPU of a sequential read.
func (s *SpanCache) acquire(k spanKey, decode func(dst []byte) ([]byte, error)) (data []byte, release func(), err error) {
	return s.acquirePrefix(context.Background(), k, -1, func(dst []byte, _ func([]byte, int)) ([]byte, error) { return decode(dst) })
}

// acquirePrefix is acquire for a caller that needs only the first upto
// bytes of the span (upto < 0: all of it). decode may report progress
// (progress(buf, n): buf[:n] is final and buf will not move); the caller
// then gets the decoded prefix, at least upto bytes long, as soon as it
// is there, while the decode goes on to fill the cache. A random read
// lands on average mid-span, so it waits for half a span's decode
// instead of all of it. data may be the whole span or a prefix; the
// caller reads only the bytes it asked for. A caller whose ctx ends
// stops waiting (ctx.Err()); the decode goes on for the cache.
func (s *SpanCache) acquirePrefix(ctx context.Context, k spanKey, upto int, decode func(dst []byte, progress func([]byte, int)) ([]byte, error)) (data []byte, release func(), err error) {
	var inline func()
	s.mu.Lock()
	if e, ok := s.entries[k]; ok {
		s.lru.MoveToFront(e)
		s.hits++
		ce := e.Value.(*cacheEntry)
		// Taken under s.mu: eviction (also under s.mu) then sees a
		// reader and leaves the buffer to the GC.
		ce.rw.RLock()
		s.mu.Unlock()
		return ce.data, ce.rw.RUnlock, nil
	}
	c, inflight := s.inflight[k]
	if inflight {
		s.hits++
	} else {
		c = &spanCall{done: make(chan struct{}), err: errDecodePanicked, ce: &cacheEntry{k: k}}
		c.cond.L = &c.mu
		s.inflight[k] = c
		s.misses++
		buf := s.takeBuffer()
		if s.closed {
			inline = func() { s.run(k, c, buf, decode) }
		} else {
			s.bg.Add(1) // under s.mu, which Close takes before waiting
			go func() {
				defer s.bg.Done()
				s.run(k, c, buf, decode)
			}()
		}
	}
	// Read-locked under s.mu, before the call can complete and its entry
	// be cached (and then evicted and its buffer recycled).
	c.ce.rw.RLock()
	s.mu.Unlock()
	if inline != nil {
		inline() // closed cache: decode here, nothing left behind
	}
	if upto >= 0 {
		prefix, err := c.waitFor(ctx, upto)
		if err != nil {
			c.ce.rw.RUnlock()
			return nil, noRelease, err
		}
		if prefix != nil {
			return prefix, c.ce.rw.RUnlock, nil
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.ce.rw.RUnlock()
		return nil, noRelease, ctx.Err()
	}
	if c.err != nil || !c.cached {
		// Failed, or never cached (so never recycled): no lock needed.
		c.ce.rw.RUnlock()
		if c.err != nil {
			return nil, noRelease, c.err
		}
		return c.data, noRelease, nil
	}
	return c.data, c.ce.rw.RUnlock, nil
}

// run decodes span k for call c (in its own goroutine, so that callers
// waiting for a prefix can return while it finishes the span), caches the
// result and releases the waiters. Whatever happens (even a panic in
// decode), waiters are released and the call forgotten.
func (s *SpanCache) run(k spanKey, c *spanCall, dst []byte, decode func(dst []byte, progress func([]byte, int)) ([]byte, error)) {
	defer func() {
		if r := recover(); r != nil {
			// A bug, but one span's: fail its reads (EIO) rather than
			// take the whole mount down from a background goroutine.
			c.data, c.err = nil, fmt.Errorf("%w: %v", errDecodePanicked, r)
		}
		s.mu.Lock()
		delete(s.inflight, k)
		if c.err == nil && c.data != nil {
			c.ce.data = c.data
			c.cached = s.add(c.ce)
		}
		s.mu.Unlock()
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
		c.cond.Broadcast()
		close(c.done)
	}()
	c.data, c.err = decode(dst, c.progress)
}

func noRelease() {}

// takeBuffer pops a recycled span buffer (nil if none). s.mu is held.
func (s *SpanCache) takeBuffer() []byte {
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free = s.free[:n-1]
		return b[:0]
	}
	return nil
}

var errDecodePanicked = codecError("span decode panicked")

type codecError string

func (e codecError) Error() string { return string(e) }

// add caches ce (its span, ce.data) and evicts the least recently used
// spans beyond the bound, recycling the buffers nobody reads any more. It
// reports whether ce was cached. s.mu is held.
func (s *SpanCache) add(ce *cacheEntry) bool {
	size := int64(len(ce.data))
	if size > s.max {
		return false
	}
	if _, ok := s.entries[ce.k]; ok {
		return false
	}
	s.entries[ce.k] = s.lru.PushFront(ce)
	s.bytes += size
	for s.bytes > s.max {
		e := s.lru.Back()
		old := e.Value.(*cacheEntry)
		s.lru.Remove(e)
		delete(s.entries, old.k)
		s.bytes -= int64(len(old.data))
		// No reader holds it and none can find it now: reuse. The lock
		// is never released: the entry is dead.
		if old.rw.TryLock() && len(s.free) < maxFree {
			s.free = append(s.free, old.data)
		}
	}
	return true
}

// maxFree bounds the recycled buffers kept (a few spans' worth).
const maxFree = 4

// has reports whether span k is cached or being decoded.
func (s *SpanCache) has(k spanKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, cached := s.entries[k]
	_, inflight := s.inflight[k]
	return cached || inflight
}
