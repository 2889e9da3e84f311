package layerindex

import (
	"io"
	"sync"
)

// asyncWriter passes what is written to it on to w from another
// goroutine, through a few recycled blocks.
//
// The indexing pass of one layer is a single chain (read, inflate, parse
// tar) whose length is a cold mount's time to ready for an image with one
// big layer. Hashing the blob (its digest and the chunk digests) and the
// uncompressed stream (the DiffID) took a fifth of its CPU; on another
// core it overlaps the inflate instead of adding to it. The copy into the
// blocks costs a tenth of the hashing it moves off the chain.
type asyncWriter struct {
	w     io.Writer
	work  chan []byte
	free  chan []byte
	made  int
	cur   []byte
	done  chan struct{}
	close sync.Once
}

const (
	asyncBlock  = 256 << 10
	asyncBlocks = 8 // 2 MiB of slack between the chain and the hasher
)

func newAsyncWriter(w io.Writer) *asyncWriter {
	a := &asyncWriter{
		w:    w,
		work: make(chan []byte, asyncBlocks),
		free: make(chan []byte, asyncBlocks),
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			a.w.Write(b) // hashes: never fail
			a.free <- b[:0]
		}
	}()
	return a
}

// Write copies p into blocks, handing each full one to the goroutine. It
// blocks only when all blocks are waiting to be hashed.
func (a *asyncWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			select {
			case a.cur = <-a.free:
			default:
				if a.made < asyncBlocks {
					a.made++
					a.cur = make([]byte, 0, asyncBlock)
				} else {
					a.cur = <-a.free
				}
			}
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.work <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Close hands over the last partial block and waits until w has been
// given everything: only then may w's state (a hash sum) be read. It is
// safe to call more than once, and must be called (deferred) on every
// path so the goroutine ends.
func (a *asyncWriter) Close() error {
	a.close.Do(func() {
		if len(a.cur) > 0 {
			a.work <- a.cur
			a.cur = nil
		}
		close(a.work)
		<-a.done
	})
	return nil
}
