package layerindex

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSpanCacheSingleflight(t *testing.T) {
	s := NewSpanCache(1 << 20)
	var calls atomic.Int32
	release := make(chan struct{})
	const n = 16
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			b, err := s.get(spanKey{"a", 1}, func() ([]byte, error) {
				calls.Add(1)
				<-release
				return []byte("data"), nil
			})
			if err != nil || string(b) != "data" {
				t.Errorf("get: %q, %v", b, err)
			}
		})
	}
	// Let every goroutine reach the cache before the decode finishes.
	for {
		s.mu.Lock()
		waiting := s.hits + s.misses
		s.mu.Unlock()
		if waiting == n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	hits, misses, size := s.Stats()
	if calls.Load() != 1 || misses != 1 || hits != n-1 || size != 4 {
		t.Fatalf("calls %d, stats %d/%d/%d", calls.Load(), hits, misses, size)
	}
}

// Two different spans decode at the same time: neither decode can finish
// until the other has started, so a lock held while decoding would hang.
func TestSpanCacheParallel(t *testing.T) {
	s := NewSpanCache(1 << 20)
	var started sync.WaitGroup
	started.Add(2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			s.get(spanKey{"k", i}, func() ([]byte, error) {
				started.Done()
				started.Wait()
				return []byte{byte(i)}, nil
			})
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("decodes of different spans did not run in parallel")
	}
}

func TestSpanCacheLRU(t *testing.T) {
	s := NewSpanCache(100)
	decodes := 0
	get := func(key string, size int) {
		t.Helper()
		b, err := s.get(spanKey{key, 0}, func() ([]byte, error) {
			decodes++
			return bytes.Repeat([]byte(key), size), nil
		})
		if err != nil || len(b) != size || b[0] != key[0] {
			t.Fatalf("get %s: %d bytes, %v", key, len(b), err)
		}
	}
	get("a", 40)
	get("b", 40)
	get("a", 40) // a is now the most recent
	get("c", 40) // evicts b
	if _, _, size := s.Stats(); size != 80 {
		t.Fatalf("cached %d bytes", size)
	}
	decodes = 0
	get("a", 40)
	get("c", 40)
	if decodes != 0 {
		t.Fatal("a or c was evicted")
	}
	get("b", 40)
	if decodes != 1 {
		t.Fatal("b was not evicted")
	}
	// Larger than the whole cache: served, not kept, nothing evicted.
	get("z", 101)
	get("z", 101)
	if decodes != 3 {
		t.Fatalf("oversized span decoded %d times", decodes-1)
	}
	if _, _, size := s.Stats(); size > 100 {
		t.Fatalf("cached %d bytes over a bound of 100", size)
	}
}

func TestSpanCacheErrorsNotCached(t *testing.T) {
	s := NewSpanCache(100)
	boom := errors.New("boom")
	for range 2 {
		if _, err := s.get(spanKey{"e", 0}, func() ([]byte, error) { return nil, boom }); err != boom {
			t.Fatalf("err = %v", err)
		}
	}
	if _, misses, _ := s.Stats(); misses != 2 {
		t.Fatalf("misses %d", misses)
	}
	// A panicking decode releases its waiters and is forgotten.
	func() {
		defer func() { recover() }()
		s.get(spanKey{"p", 0}, func() ([]byte, error) { panic("x") })
	}()
	if b, err := s.get(spanKey{"p", 0}, func() ([]byte, error) { return []byte("ok"), nil }); err != nil || string(b) != "ok" {
		t.Fatalf("after panic: %q, %v", b, err)
	}
	var nilCache *SpanCache
	if h, m, b := nilCache.Stats(); h+m+b != 0 {
		t.Fatal("nil cache stats")
	}
}

// get is acquire for tests that keep the bytes: they get a copy.
func (s *SpanCache) get(k spanKey, decode func() ([]byte, error)) ([]byte, error) {
	data, release, err := s.acquire(k, func([]byte) ([]byte, error) { return decode() })
	if err != nil {
		return nil, err
	}
	defer release()
	return bytes.Clone(data), nil
}

// A caller that needs only a prefix of a span returns as soon as the
// decode has reported it, while the decode goes on; callers that need
// more wait; the buffer it holds is not recycled when the finished span
// is evicted; and callers still waiting when a decode fails get the error
// (bytes handed out before the failure were final: see progressive).
func TestSpanCachePrefix(t *testing.T) {
	s := NewSpanCache(300)
	k := spanKey{"p", 0}
	goOn := make(chan struct{})
	decode := func(dst []byte, progress func([]byte, int)) ([]byte, error) {
		buf := make([]byte, 300)
		copy(buf, bytes.Repeat([]byte("a"), 100))
		progress(buf, 100)
		<-goOn
		copy(buf[100:], bytes.Repeat([]byte("b"), 200))
		progress(buf, 300)
		return buf, nil
	}
	prefix, releaseA, err := s.acquirePrefix(context.Background(), k, 50, decode)
	if err != nil || len(prefix) < 50 || string(prefix[:50]) != string(bytes.Repeat([]byte("a"), 50)) {
		t.Fatalf("prefix: %q, %v", prefix, err)
	}
	type res struct {
		data []byte
		err  error
	}
	more, whole := make(chan res, 1), make(chan res, 1)
	go func() {
		d, rel, err := s.acquirePrefix(context.Background(), k, 200, decode)
		more <- res{bytes.Clone(d), err}
		rel()
	}()
	go func() {
		d, rel, err := s.acquirePrefix(context.Background(), k, -1, decode)
		whole <- res{bytes.Clone(d), err}
		rel()
	}()
	select {
	case <-more:
		t.Fatal("a caller needing 200 bytes returned with 100 decoded")
	case <-whole:
		t.Fatal("a caller needing the span returned with 100 decoded")
	case <-time.After(50 * time.Millisecond):
	}
	close(goOn)
	m, w := <-more, <-whole
	want := string(bytes.Repeat([]byte("a"), 100)) + string(bytes.Repeat([]byte("b"), 200))
	if m.err != nil || len(m.data) < 200 || string(m.data[:200]) != want[:200] {
		t.Fatalf("200-byte prefix: %q, %v", m.data, m.err)
	}
	if w.err != nil || string(w.data) != want {
		t.Fatalf("whole span: %q, %v", w.data, w.err)
	}
	if _, misses, _ := s.Stats(); misses != 1 {
		t.Fatalf("%d decodes, want 1", misses)
	}
	// Evict the span while the first caller still holds its prefix: the
	// buffer must not be handed to the next decode.
	if _, err := s.get(spanKey{"q", 0}, func() ([]byte, error) { return make([]byte, 300), nil }); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	for _, f := range s.free {
		if &f[:1][0] == &prefix[0] {
			t.Error("a buffer still read by a prefix caller was recycled")
		}
	}
	s.mu.Unlock()
	releaseA()

	// A decode that fails after reporting progress fails every caller.
	boom := errors.New("boom")
	fail := make(chan struct{})
	bad := func(dst []byte, progress func([]byte, int)) ([]byte, error) {
		buf := make([]byte, 300)
		progress(buf, 100)
		<-fail
		return nil, boom
	}
	kb := spanKey{"bad", 0}
	_, rel, err := s.acquirePrefix(context.Background(), kb, 50, bad) // before the failure: served
	if err != nil {
		t.Fatal(err)
	}
	rel()
	late := make(chan error, 1)
	go func() { _, rel, err := s.acquirePrefix(context.Background(), kb, 200, bad); rel(); late <- err }()
	time.Sleep(20 * time.Millisecond)
	close(fail)
	if err := <-late; err != boom {
		t.Fatalf("caller waiting past the failure: err = %v, want boom", err)
	}
}
