// Package dirlock takes an exclusive lock on a directory itself. It is how
// ocimount keeps two of its commands from claiming one directory at once:
// a mount point, between the server's check and its mount, and a bundle
// directory, while the bundle is made, removed or undone. One package so
// that both take the same kind of lock and report it the same way.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrLocked: another ocimount holds the directory's lock.
var ErrLocked = errors.New("locked by another ocimount")

// Lock takes an exclusive flock on directory dir itself, without waiting.
// Locking the directory's own inode needs no lock file (nothing to leave
// behind or to clean up after a crash: the kernel drops the lock with the
// last descriptor), and the descriptor is close-on-exec, so a background
// server started meanwhile never inherits it. unlock may be called more
// than once.
func Lock(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0) // a FIFO fails at once, never waits
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}
