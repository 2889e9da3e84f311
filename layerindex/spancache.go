package layerindex

import (
	"container/list"
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
type SpanCache struct {
	max int64

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

// spanCall is one decode in progress; waiters block on done.
type spanCall struct {
	done   chan struct{}
	data   []byte
	err    error
	cached bool // data went into the cache (and may be recycled later)
}

// NewSpanCache returns a cache holding at most maxBytes of decoded spans.
// A span larger than maxBytes is decoded (once for concurrent callers) but
// not kept.
func NewSpanCache(maxBytes int64) *SpanCache {
	return &SpanCache{
		max:      maxBytes,
		entries:  make(map[spanKey]*list.Element),
		inflight: make(map[spanKey]*spanCall),
	}
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
// Recycling matters: a streaming read decodes a fresh 2 MiB span every
// few milliseconds, and allocating each one (zeroed, often fresh pages
// from the OS) cost a quarter of the CPU of a sequential read.
func (s *SpanCache) acquire(k spanKey, decode func(dst []byte) ([]byte, error)) (data []byte, release func(), err error) {
	counted := false
	for {
		s.mu.Lock()
		if e, ok := s.entries[k]; ok {
			s.lru.MoveToFront(e)
			if !counted {
				s.hits++
			}
			ce := e.Value.(*cacheEntry)
			// Taken under s.mu: eviction (also under s.mu) then sees a
			// reader and leaves the buffer to the GC.
			ce.rw.RLock()
			s.mu.Unlock()
			return ce.data, ce.rw.RUnlock, nil
		}
		if c, ok := s.inflight[k]; ok {
			if !counted {
				s.hits++
				counted = true
			}
			s.mu.Unlock()
			<-c.done
			if c.err != nil {
				return nil, noRelease, c.err
			}
			if !c.cached {
				return c.data, noRelease, nil // never cached, so never recycled
			}
			continue // cached: take it from the cache, with a read lock
		}
		c := &spanCall{done: make(chan struct{}), err: errDecodePanicked}
		s.inflight[k] = c
		s.misses++
		dst := s.takeBuffer()
		s.mu.Unlock()
		release = noRelease
		// Whatever happens (even a panic in decode), waiters must be
		// released and the call forgotten.
		defer func() {
			s.mu.Lock()
			delete(s.inflight, k)
			if c.err == nil && c.data != nil {
				if ce := s.add(k, c.data); ce != nil {
					ce.rw.RLock()
					release = ce.rw.RUnlock
					c.cached = true
				}
			}
			s.mu.Unlock()
			close(c.done)
		}()
		c.data, c.err = decode(dst)
		return c.data, release, c.err
	}
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

// add caches data under k and evicts the least recently used spans beyond
// the bound, recycling the buffers nobody reads any more. It returns the
// new entry, or nil if data was not cached. s.mu is held.
func (s *SpanCache) add(k spanKey, data []byte) *cacheEntry {
	size := int64(len(data))
	if size > s.max {
		return nil
	}
	if _, ok := s.entries[k]; ok {
		return nil
	}
	ce := &cacheEntry{k: k, data: data}
	s.entries[k] = s.lru.PushFront(ce)
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
	return ce
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
