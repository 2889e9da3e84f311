// Package fs serves an overlay.Tree read-only through FUSE. It is a thin
// adapter: all semantics live in overlay; this package only translates
// tree nodes to go-fuse inodes, attributes to fuse.Attr and errors to
// errnos. It is the only package that imports go-fuse.
//
// Inodes are created lazily on LOOKUP (never a go-fuse inode per image
// entry up front), so the kernel's FORGET frees them again; the tree itself
// is immutable, so every handler runs concurrently without locks.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Options configure a mount. The zero value mounts nosuid,nodev, visible
// to the mounting user only.
type Options struct {
	FsName     string // shown as the source in /proc/mounts
	AllowOther bool
	Suid       bool
	Dev        bool
	Logger     *slog.Logger
	Debug      bool
}

type root struct {
	tree *overlay.Tree
	log  *slog.Logger
	// statfs figures, computed once at mount: the tree never changes.
	blocks uint64
}

type node struct {
	fusefs.Inode
	r  *root
	id overlay.NodeID
}

var (
	_ fusefs.NodeGetattrer      = (*node)(nil)
	_ fusefs.NodeLookuper       = (*node)(nil)
	_ fusefs.NodeOpendirHandler = (*node)(nil)
	_ fusefs.FileReaddirenter   = (*dirHandle)(nil)
	_ fusefs.FileSeekdirer      = (*dirHandle)(nil)
	_ fusefs.FileLookuper       = (*dirHandle)(nil)
	_ fusefs.NodeReadlinker     = (*node)(nil)
	_ fusefs.NodeOpener         = (*node)(nil)
	_ fusefs.NodeReader         = (*node)(nil)
	_ fusefs.NodeGetxattrer     = (*node)(nil)
	_ fusefs.NodeListxattrer    = (*node)(nil)
	_ fusefs.NodeStatfser       = (*node)(nil)
)

// cacheTimeout is how long the kernel may trust entries, attributes and
// negative lookups: the image never changes while mounted, and negative
// caching matters (dynamic loaders and interpreters probe many paths).
const cacheTimeout = 24 * time.Hour

// Mount serves tree at dir and returns once the kernel mount is up.
func Mount(dir string, tree *overlay.Tree, o Options) (*fuse.Server, error) {
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	r := &root{tree: tree, log: lg, blocks: tree.UsedBlocks()}
	to := cacheTimeout
	mopts := []string{"ro", "default_permissions"}
	flags := uintptr(unix.MS_RDONLY)
	if o.Suid {
		mopts = append(mopts, "suid")
	} else {
		mopts = append(mopts, "nosuid")
		flags |= unix.MS_NOSUID
	}
	if o.Dev {
		mopts = append(mopts, "dev")
	} else {
		mopts = append(mopts, "nodev")
		flags |= unix.MS_NODEV
	}
	opts := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			FsName:               o.FsName,
			Name:                 "ocimount",
			Options:              mopts,
			AllowOther:           o.AllowOther,
			MaxWrite:             1 << 20, // also max_read: fewer, larger reads
			MaxReadAhead:         readaheadKB << 10,
			DirectMount:          true, // as root: no fusermount needed; falls back to it otherwise
			DirectMountFlags:     flags,
			EnableSymlinkCaching: true,
			DisableXAttrs:        !tree.HasXattrs(),
			Debug:                o.Debug,
		},
		EntryTimeout:    &to,
		AttrTimeout:     &to,
		NegativeTimeout: &to,
		NullPermissions: true, // mode 000 stays 000; default_permissions enforces
		RootStableAttr:  &fusefs.StableAttr{Ino: uint64(overlay.RootID), Gen: 1},
	}
	srv, err := fusefs.Mount(dir, &node{r: r, id: overlay.RootID}, opts)
	if err == nil {
		raiseReadahead(dir, lg)
	}
	return srv, err
}

// readaheadKB is the kernel read-ahead set on the mount. FUSE mounts get
// 128 KiB whatever the server asks at INIT, so a streaming read arrives as
// 128 KiB requests, each a round trip; at 1 MiB a sequential read of a
// gzip layer goes from about 0.65x to about 0.9x of pigz -dc on this
// 2-core machine (measured, see docs/bench-results.md).
const readaheadKB = 1024

// raiseReadahead sets the mount's backing-device read-ahead, best effort:
// it needs root (the sysfs file is root-only) and is harmless otherwise.
func raiseReadahead(dir string, lg *slog.Logger) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(readaheadKB)), 0); err != nil {
		lg.Debug("cannot raise read-ahead", "path", p, "err", err)
	}
}

// errno is the only place errors become errnos. go-fuse's own conversion
// cannot see through %w, so map with errors.Is here and log the rest.
func (r *root) errno(op, path string, err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &en):
		return en
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	}
	r.log.Error("I/O error", "op", op, "path", path, "err", err)
	return syscall.EIO
}

func fileType(k layerindex.Kind) uint32 {
	switch k {
	case layerindex.KindDir:
		return syscall.S_IFDIR
	case layerindex.KindSymlink:
		return syscall.S_IFLNK
	case layerindex.KindChar:
		return syscall.S_IFCHR
	case layerindex.KindBlock:
		return syscall.S_IFBLK
	case layerindex.KindFIFO:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

func fillAttr(in overlay.Inode, a *fuse.Attr) {
	a.Ino = in.Ino
	a.Mode = fileType(in.Kind) | in.Mode
	a.Nlink = in.Nlink
	a.Uid, a.Gid = in.UID, in.GID
	if in.Kind != layerindex.KindDir {
		a.Size = uint64(in.Size)
	} else {
		a.Size = 4096
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	sec, nsec := uint64(in.ModSec), in.ModNsec
	a.Mtime, a.Mtimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
	if in.Kind == layerindex.KindChar || in.Kind == layerindex.KindBlock {
		a.Rdev = uint32(unix.Mkdev(in.DevMajor, in.DevMinor))
	}
}

func (n *node) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(n.r.tree.Attr(n.id), &out.Attr)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	t := n.r.tree
	if t.Kind(n.id) != layerindex.KindDir {
		return nil, syscall.ENOTDIR
	}
	id, ok := t.Lookup(n.id, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.child(ctx, id, out), 0
}

func (n *node) child(ctx context.Context, id overlay.NodeID, out *fuse.EntryOut) *fusefs.Inode {
	in := n.r.tree.Attr(id)
	fillAttr(in, &out.Attr)
	// Hardlinks share in.Ino, so go-fuse hands every name of one file the
	// same *Inode.
	return n.NewInode(ctx, &node{r: n.r, id: id}, fusefs.StableAttr{Mode: fileType(in.Kind), Ino: in.Ino, Gen: 1})
}

// dirHandle is an open directory. Its listing never changes, so opendir
// returns FOPEN_CACHE_DIR: the kernel keeps the listing in its page cache
// and a second `ls`/`find` of the directory does not reach the server.
// Positions 0 and 1 are "." and ".." (as on a disk filesystem; FUSE leaves
// them to the server), then the children in name order; offsets are
// positions, so seeking is exact.
type dirHandle struct {
	n          *node
	first      overlay.NodeID
	count, pos int
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if n.r.tree.Kind(n.id) != layerindex.KindDir {
		return nil, 0, syscall.ENOTDIR
	}
	first, count := n.r.tree.Children(n.id)
	return &dirHandle{n: n, first: first, count: count}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	t := d.n.r.tree
	var de fuse.DirEntry
	switch {
	case d.pos >= d.count+2:
		return nil, 0
	case d.pos == 0:
		de = fuse.DirEntry{Name: ".", Ino: t.Ino(d.n.id), Mode: syscall.S_IFDIR}
	case d.pos == 1:
		de = fuse.DirEntry{Name: "..", Ino: t.Ino(t.Parent(d.n.id)), Mode: syscall.S_IFDIR}
	default:
		id := d.first + overlay.NodeID(d.pos-2)
		de = fuse.DirEntry{Name: t.Name(id), Ino: t.Ino(id), Mode: fileType(t.Kind(id))}
	}
	d.pos++
	de.Off = uint64(d.pos)
	return &de, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.pos = int(min(off, uint64(d.count+2)))
	return 0
}

// Lookup serves READDIRPLUS for the entry just listed, by position rather
// than by name search.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if i := d.pos - 3; i >= 0 && i < d.count && d.n.r.tree.Name(d.first+overlay.NodeID(i)) == name {
		return d.n.child(ctx, d.first+overlay.NodeID(i), out), 0
	}
	return d.n.Lookup(ctx, name, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in := n.r.tree.Attr(n.id)
	if in.Kind != layerindex.KindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(in.Link), 0
}

// handle is an open regular file: random access to its content, and for
// content that lies uncompressed in a local file, where (for splice).
type handle struct {
	ra   io.ReaderAt
	size int64
	fd   uintptr
	off  int64 // offset of the content in fd
	fdOK bool
}

func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	t := n.r.tree
	ra, err := t.Open(n.id)
	if err != nil {
		return nil, 0, n.r.errno("open", t.Path(n.id), err)
	}
	h := &handle{ra: ra, size: t.Attr(n.id).Size}
	if f, off, ok := t.BackingFile(n.id); ok {
		h.fd, h.off, h.fdOK = f.Fd(), off, true
	}
	// Content never changes: let the page cache survive re-opens. Nothing
	// is ever written, so closing needs no FLUSH round trip.
	return h, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// Flush answers ENOSYS, which tells the kernel to stop sending FLUSH on
// every close of this mount (kernels without FOPEN_NOFLUSH): one round trip
// less per file read.
func (n *node) Flush(ctx context.Context, f fusefs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *node) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= h.size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := h.size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	if h.fdOK {
		// Zero-copy: the kernel splices from the backing file.
		return fuse.ReadResultFd(h.fd, h.off+off, len(dest)), 0
	}
	m, err := h.ra.ReadAt(dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && m == len(dest)) {
		return nil, n.r.errno("read", n.r.tree.Path(n.id), err)
	}
	return fuse.ReadResultData(dest[:m]), 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.r.tree.Attr(n.id).Xattrs {
		if x.Name == attr {
			if len(dest) == 0 {
				return uint32(len(x.Value)), 0
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	size := 0
	for _, x := range n.r.tree.Attr(n.id).Xattrs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	p := 0
	for _, x := range n.r.tree.Attr(n.id).Xattrs {
		p += copy(dest[p:], x.Name)
		dest[p] = 0
		p++
	}
	return uint32(size), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	t := n.r.tree
	out.Blocks = n.r.blocks
	out.Files = uint64(t.Len())
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}
