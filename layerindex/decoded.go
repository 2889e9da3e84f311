package layerindex

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrDamagedCopy: a piece of a decoded copy does not match the digest the
// indexing pass recorded for it. The copy is a cache file; the layer
// itself is fine, and indexing it again writes a new copy.
var ErrDamagedCopy = errors.New("decoded copy damaged")

// DecodedCopy serves a layer's uncompressed stream from a local file (the
// decoded copy of a zstd layer that cannot be entered mid-frame), checking
// every ChunkSize piece against Index.Decoded before a byte of it is used.
//
// The file sits in the cache directory, where a disk error, a stray tool
// or a hostile user with access to it can change bytes that were verified
// when it was written; its size alone says nothing about its content. A
// piece is hashed once per DecodedCopy (about 0.3 ms for 512 KiB) and
// then read from the file directly, as often as needed, or spliced by
// FUSE (File). A piece that does not match fails every read that touches
// it with ErrDamagedCopy, and OnDamage is told once, so the caller can
// drop the file and the next mount rebuild it.
type DecodedCopy struct {
	f    *os.File
	sums ChunkSums
	size int64
	name string // for errors: the file and the layer

	ok  []atomic.Uint64 // bit k: piece k was checked and matched
	bad []atomic.Uint64 // bit k: piece k did not match

	// changed is the file's ctime when the ok bits were last valid: a
	// write to the file (which moves its ctime) while a mount uses it
	// makes every piece be checked again before it is served.
	mu      sync.Mutex
	changed syscall.Timespec

	// OnDamage, if set before use, is called once, with the error, the
	// first time a piece does not match.
	OnDamage func(error)
	damaged  sync.Once
}

// NewDecodedCopy wraps f, which must hold the uncompressed stream of the
// layer ix describes. It fails (the caller re-indexes) if ix has no
// digests of the decoded stream or the file is not exactly that long.
func NewDecodedCopy(f *os.File, ix *Index) (*DecodedCopy, error) {
	if ix.Decoded.Size <= 0 || ix.Decoded.Count(ix.UncompressedSize) != len(ix.Decoded.Sums) {
		return nil, fmt.Errorf("%s: the index of %s has no digests of the decoded stream", f.Name(), ix.Digest)
	}
	// Bounded as a registry blob's chunk table is: a piece is read whole
	// into memory to be hashed, and the table may come from a published
	// index (one "piece" the size of the layer would be a buffer of that
	// size per read).
	if ix.Decoded.Size < minPiece || ix.Decoded.Size > maxPiece {
		return nil, fmt.Errorf("%s: the index of %s has digests of %d-byte pieces of the decoded stream (%d to %d allowed)", f.Name(), ix.Digest, ix.Decoded.Size, minPiece, maxPiece)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != ix.UncompressedSize {
		return nil, fmt.Errorf("%s: %d bytes, the decoded stream of %s has %d: %w", f.Name(), fi.Size(), ix.Digest, ix.UncompressedSize, ErrDamagedCopy)
	}
	n := len(ix.Decoded.Sums)
	d := &DecodedCopy{
		f: f, sums: ix.Decoded, size: ix.UncompressedSize,
		name: fmt.Sprintf("decoded copy %s of layer %s", f.Name(), ix.Digest),
		ok:   make([]atomic.Uint64, (n+63)/64),
		bad:  make([]atomic.Uint64, (n+63)/64),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		d.changed = st.Ctim
	}
	return d, nil
}

// Bounds of the piece size of Index.Decoded (Build uses ChunkSize).
const (
	minPiece = 4 << 10
	maxPiece = 8 << 20
)

// sinceChecked forgets what was checked if the file changed since
// (its ctime moved): those bytes may not be what was checked. It returns
// the ctime it found, which pieces checked after it are marked under
// (markOK).
func (d *DecodedCopy) sinceChecked() (syscall.Timespec, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(d.f.Fd()), &st); err != nil {
		return st.Ctim, fmt.Errorf("%s: %w", d.name, err)
	}
	if st.Size != d.size {
		err := fmt.Errorf("%s: now %d bytes, want %d: %w", d.name, st.Size, d.size, ErrDamagedCopy)
		d.tell(err)
		return st.Ctim, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.Ctim != d.changed {
		for i := range d.ok {
			d.ok[i].Store(0)
		}
		d.changed = st.Ctim
	}
	return st.Ctim, nil
}

// markOK records that piece k matched when hashed after the file was
// seen with ctime seen. If another reader has seen the ctime move since
// (and cleared the marks), the hash may be of bytes from before a write:
// the piece stays unmarked and is hashed again on its next use.
func (d *DecodedCopy) markOK(k int, seen syscall.Timespec) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == seen {
		d.ok[k/64].Or(uint64(1) << (k % 64))
	}
}

// ReadAt reads the stream, checking the pieces it touches first.
func (d *DecodedCopy) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, io.EOF
	}
	if err := d.Verify(off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.f.ReadAt(p, off)
}

// File is overlay.FileBacked: reads may be spliced from the file, but
// only of ranges Verify has passed.
func (d *DecodedCopy) File() (*os.File, int64) { return d.f, 0 }

// Close closes the file.
func (d *DecodedCopy) Close() error { return d.f.Close() }

var pieceBufs = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// Verify checks that the pieces holding stream bytes [off, off+n) match
// their digests, hashing each at most once (two readers racing on one
// piece may both hash it; neither serves it unchecked).
func (d *DecodedCopy) Verify(off, n int64) error {
	if n <= 0 || off >= d.size {
		return nil
	}
	seen, err := d.sinceChecked()
	if err != nil {
		return err
	}
	end := min(off+n, d.size)
	for k := int(off / d.sums.Size); int64(k)*d.sums.Size < end; k++ {
		w, bit := k/64, uint64(1)<<(k%64)
		if d.ok[w].Load()&bit != 0 {
			continue
		}
		if d.bad[w].Load()&bit != 0 {
			return d.pieceError(k, nil)
		}
		if err := d.check(k); err != nil {
			return err
		}
		d.markOK(k, seen)
	}
	return nil
}

func (d *DecodedCopy) check(k int) error {
	start := int64(k) * d.sums.Size
	l := min(d.sums.Size, d.size-start)
	bp := pieceBufs.Get().(*[]byte)
	defer pieceBufs.Put(bp)
	buf := *bp
	if int64(cap(buf)) < l {
		buf = make([]byte, l)
	}
	buf = buf[:l]
	if _, err := d.f.ReadAt(buf, start); err != nil {
		// A short file (truncated under a running mount) reads EOF.
		return d.damage(k, err)
	}
	if sha256.Sum256(buf) != d.sums.Sums[k] {
		return d.damage(k, nil)
	}
	return nil
}

func (d *DecodedCopy) damage(k int, cause error) error {
	d.bad[k/64].Or(uint64(1) << (k % 64))
	err := d.pieceError(k, cause)
	d.tell(err)
	return err
}

// tell passes the first damage found to OnDamage.
func (d *DecodedCopy) tell(err error) {
	d.damaged.Do(func() {
		if d.OnDamage != nil {
			d.OnDamage(err)
		}
	})
}

func (d *DecodedCopy) pieceError(k int, cause error) error {
	start := int64(k) * d.sums.Size
	end := min(start+d.sums.Size, d.size)
	what := "does not match its digest"
	if cause != nil {
		what = fmt.Sprintf("cannot be read (%v)", cause)
	}
	return fmt.Errorf("%s: bytes %d-%d %s: %w", d.name, start, end, what, ErrDamagedCopy)
}
