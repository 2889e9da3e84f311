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
}

// spanCall is one decode in progress; waiters block on done.
type spanCall struct {
	done chan struct{}
	data []byte
	err  error
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

// get returns span k, calling decode if it is neither cached nor being
// decoded. Errors are not cached: the next get tries again.
func (s *SpanCache) get(k spanKey, decode func() ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	if e, ok := s.entries[k]; ok {
		s.lru.MoveToFront(e)
		s.hits++
		data := e.Value.(*cacheEntry).data
		s.mu.Unlock()
		return data, nil
	}
	if c, ok := s.inflight[k]; ok {
		s.hits++
		s.mu.Unlock()
		<-c.done
		return c.data, c.err
	}
	c := &spanCall{done: make(chan struct{})}
	s.inflight[k] = c
	s.misses++
	s.mu.Unlock()

	// Whatever happens (even a panic in decode), waiters must be released
	// and the call forgotten.
	defer func() {
		s.mu.Lock()
		delete(s.inflight, k)
		if c.err == nil && c.data != nil {
			s.add(k, c.data)
		}
		s.mu.Unlock()
		close(c.done)
	}()
	c.err = errDecodePanicked
	c.data, c.err = decode()
	return c.data, c.err
}

var errDecodePanicked = codecError("span decode panicked")

type codecError string

func (e codecError) Error() string { return string(e) }

// add caches data under k and evicts the least recently used spans beyond
// the bound. s.mu is held.
func (s *SpanCache) add(k spanKey, data []byte) {
	size := int64(len(data))
	if size > s.max {
		return
	}
	if _, ok := s.entries[k]; ok {
		return
	}
	s.entries[k] = s.lru.PushFront(&cacheEntry{k: k, data: data})
	s.bytes += size
	for s.bytes > s.max {
		e := s.lru.Back()
		ce := e.Value.(*cacheEntry)
		s.lru.Remove(e)
		delete(s.entries, ce.k)
		s.bytes -= int64(len(ce.data))
	}
}

// has reports whether span k is cached or being decoded.
func (s *SpanCache) has(k spanKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, cached := s.entries[k]
	_, inflight := s.inflight[k]
	return cached || inflight
}
