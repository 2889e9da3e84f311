package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal (progress is for people, not
// for logs or pipes).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress aggregates per-layer byte counts from the parallel indexers and
// redraws one status line at most every 200 ms: bytes done of total, how
// many layers are finished, rate and ETA. Layers whose index came from the
// cache count as done at once, so a warm mount shows 100% immediately.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	done   map[int]int64
	total  map[int]int64
	start  time.Time
	last   time.Time
	drawn  bool
	layers int
}

func newProgress(w io.Writer, layers int) *progress {
	return &progress{w: w, done: map[int]int64{}, total: map[int]int64{}, start: time.Now(), layers: layers}
}

// update records layer i's progress. Safe for concurrent use.
func (p *progress) update(i int, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[i], p.total[i] = done, total
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw()
	}
}

func (p *progress) draw() {
	var d, t int64
	finished := 0
	for i, td := range p.total {
		d += p.done[i]
		t += td
		if p.done[i] >= td {
			finished++
		}
	}
	el := time.Since(p.start).Seconds()
	rate := float64(d) / max(el, 1e-3)
	eta := "-"
	if rate > 0 && t > d {
		eta = (time.Duration(float64(t-d)/rate) * time.Second / time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\x1b[Kindexing %d/%d layers: %s / %s (%.0f%%) %s/s ETA %s",
		finished, p.layers, mib(d), mib(t), 100*float64(d)/float64(max(t, 1)), mib(int64(rate)), eta)
	p.drawn = true
}

// finish clears the status line.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
