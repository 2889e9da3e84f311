// Package fs serves an overlay.Tree read-only through FUSE. It is a thin
// adapter: all semantics live in overlay; this package only translates
// tree nodes to FUSE node IDs, attributes to fuse.Attr and errors to
// errnos. It is the only package that imports go-fuse.
//
// It speaks go-fuse's raw protocol API rather than its Inode tree: the
// tree already has dense, stable IDs, so the kernel can use them directly
// and the server keeps no per-lookup or per-open state at all.
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

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Subtype is the FUSE subtype of every ocimount mount: mountinfo types
// them "fuse.ocimount" (whether mounted directly or through fusermount3).
// It is how `ocimount umount` and bundle removal recognise their own
// mounts; the source (FsName) is free text anyone can copy.
const Subtype = "ocimount"

// Options configure a mount. The zero value mounts nosuid,nodev, visible
// to the mounting user only.
type Options struct {
	FsName string // shown as the source in /proc/mounts
	// Source names the image in the hints of I/O error log lines
	// ("run 'ocimount index --verify SOURCE'"); FsName if empty.
	Source     string
	AllowOther bool
	Suid       bool
	Dev        bool
	Logger     *slog.Logger
	Debug      bool
}

// rawFS serves the tree with go-fuse's raw protocol API. The kernel's node
// IDs are the tree's own inode numbers (the NodeID of a file's first name;
// root = 1 = FUSE_ROOT_ID), so LOOKUP allocates nothing and FORGET has
// nothing to free: serving a 200,000-entry walk costs no memory beyond
// the tree. Hardlinked names share one node ID, hence one kernel inode
// and page cache. Nothing is per open either: a read finds its file from
// the node ID. The tree is immutable, so every handler runs concurrently
// without locks.
type rawFS struct {
	fuse.RawFileSystem // ENOSYS for everything not below (FLUSH, ACCESS, writes…)
	tree               *overlay.Tree
	log                *slog.Logger
	source             string // the image, for hints in log lines
	// statfs figures, computed once at mount: the tree never changes.
	blocks uint64
	// noXattrs: no entry of the image has an xattr. GETXATTR then answers
	// ENOSYS, after which the kernel answers every getxattr itself
	// (EOPNOTSUPP) without a round trip. Not go-fuse's DisableXAttrs: it
	// answers LISTXATTR with ENOSYS too, and listxattr then fails with
	// EOPNOTSUPP on every path, where an extracted tree lists nothing
	// (`tar --xattrs -c` and `getfattr -d` warned on every file).
	noXattrs bool
}

// maxRead is the largest READ (and max_write). Not a full 1 MiB: a
// spliced reply needs its data, the reply header and one spare page in a
// pipe, and pipes are capped at 1 MiB (fs.pipe-max-size); at 1 MiB every
// large read failed to splice, fell back to copying and logged
// "trySplice: ... max pipe size".
const maxRead = 1<<20 - 8<<10

// pageSize is the unit splice moves data in.
var pageSize = int64(os.Getpagesize())

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
	r := &rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), tree: tree, log: lg, blocks: tree.UsedBlocks(), source: o.Source, noXattrs: !tree.HasXattrs()}
	if r.source == "" {
		r.source = o.FsName
	}
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
	srv, err := fuse.NewServer(r, dir, &fuse.MountOptions{
		FsName:               o.FsName,
		Name:                 Subtype,
		Options:              mopts,
		AllowOther:           o.AllowOther,
		MaxWrite:             maxRead, // also max_read: fewer, larger reads
		MaxReadAhead:         readaheadKB << 10,
		DirectMount:          true, // as root: no fusermount needed; falls back to it otherwise
		DirectMountFlags:     flags,
		EnableSymlinkCaching: true,
		Debug:                o.Debug,
	})
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, err
	}
	raiseReadahead(dir, lg)
	return srv, nil
}

// readaheadKB is the kernel read-ahead set on the mount. FUSE mounts get
// 128 KiB whatever the server asks at INIT, so a streaming read arrives as
// 128 KiB requests, each a round trip; at 1 MiB there are an eighth as
// many, and sequential reads of a gzip layer are faster (docs/DESIGN.md,
// at read_ahead_kb, has the measurement).
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
func (r *rawFS) errno(op, path string, err error) fuse.Status {
	var en syscall.Errno
	switch {
	case err == nil:
		return fuse.OK
	case errors.As(err, &en):
		return fuse.Status(en)
	case errors.Is(err, iofs.ErrNotExist):
		return fuse.ENOENT
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fuse.EINTR
	}
	r.log.Error("I/O error", "op", op, "path", path, "err", err, "fix", r.fix(err))
	return fuse.EIO
}

// fix says, in an I/O error's log line, what the user can run about it:
// a log line that only says "EOF" leaves them nowhere.
func (r *rawFS) fix(err error) string {
	verify := fmt.Sprintf("ocimount index --verify %s", r.source)
	switch {
	case errors.Is(err, layerindex.ErrDamagedCopy):
		return "the damaged decoded copy was dropped from the cache; unmount and mount again to rebuild it (or run '" + verify + "')"
	case errors.Is(err, layerindex.ErrBadIndex):
		return "the cached layer index is damaged; run '" + verify + "' to rebuild it, then unmount and mount again"
	case errors.Is(err, layerindex.ErrHeaderMismatch):
		return "a published index does not match the layer; run '" + verify + "' to index the image here, then unmount and mount again"
	case errors.Is(err, layerindex.ErrCorrupt), errors.Is(err, layerindex.ErrDigestMismatch):
		return "the layer's bytes do not match what was indexed; run '" + verify + "' to check the image and rebuild its cache"
	}
	return "if it persists, run '" + verify + "' to check the image and the cache; 'ocimount status MOUNTPOINT' shows registry errors"
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

// node validates a node ID from the kernel.
func (r *rawFS) node(id uint64) (overlay.NodeID, fuse.Status) {
	n := overlay.NodeID(id)
	if uint64(n) != id || !r.tree.Valid(n) {
		return 0, fuse.Status(syscall.ESTALE)
	}
	return n, fuse.OK
}

func (r *rawFS) String() string { return "ocimount" }

func (r *rawFS) entry(id overlay.NodeID, out *fuse.EntryOut) {
	in := r.tree.Attr(id)
	out.NodeId = in.Ino
	out.Generation = 1
	fillAttr(in, &out.Attr)
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
}

func (r *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := r.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	if r.tree.Kind(dir) != layerindex.KindDir {
		return fuse.Status(syscall.ENOTDIR)
	}
	id, ok := r.tree.Lookup(dir, name)
	if !ok {
		// A negative entry the kernel caches (node ID 0, with a timeout).
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(cacheTimeout)
		return fuse.OK
	}
	r.entry(id, out)
	return fuse.OK
}

// Forget: lookups allocate nothing, so there is nothing to release.
func (r *rawFS) Forget(nodeid, nlookup uint64) {}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	id, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	fillAttr(r.tree.Attr(id), &out.Attr)
	out.SetTimeout(cacheTimeout)
	return fuse.OK
}

// OpenDir: a listing never changes, so FOPEN_CACHE_DIR lets the kernel keep
// it in its page cache; a second `ls`/`find` of the directory does not
// reach the server.
func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	id, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	if r.tree.Kind(id) != layerindex.KindDir {
		return fuse.Status(syscall.ENOTDIR)
	}
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

// ReadDir and ReadDirPlus list positions 0 and 1 as "." and ".." (as a
// disk filesystem does; FUSE leaves them to the server), then the children
// in name order. Offsets are positions + 1, so seeking is exact and no
// state is kept between calls.
func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readdir(in, out, false)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readdir(in, out, true)
}

func (r *rawFS) readdir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	dir, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	t := r.tree
	if t.Kind(dir) != layerindex.KindDir {
		return fuse.Status(syscall.ENOTDIR)
	}
	first, count := t.Children(dir)
	for pos := in.Offset; pos < uint64(count)+2; pos++ {
		var id overlay.NodeID
		de := fuse.DirEntry{Off: pos + 1, Mode: syscall.S_IFDIR}
		switch pos {
		case 0:
			de.Name, de.Ino = ".", t.Ino(dir)
		case 1:
			de.Name, de.Ino = "..", t.Ino(t.Parent(dir))
		default:
			id = first + overlay.NodeID(pos-2)
			de.Name, de.Ino, de.Mode = t.Name(id), t.Ino(id), fileType(t.Kind(id))
		}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if id != 0 { // "." and "..": the kernel takes no reference; leave it zero
			r.entry(id, eo)
		}
	}
	return fuse.OK
}

func (r *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	id, st := r.node(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	in := r.tree.Attr(id)
	if in.Kind != layerindex.KindSymlink {
		return nil, fuse.EINVAL
	}
	return []byte(in.Link), fuse.OK
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	id, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EROFS
	}
	if k := r.tree.Kind(id); k == layerindex.KindDir {
		return fuse.Status(syscall.EISDIR)
	}
	// Content never changes: let the page cache survive re-opens.
	// Nothing is ever written, so closing needs no FLUSH round trip.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	return fuse.OK
}

// Read finds the file from the node ID (opens keep no state).
func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, dest []byte) (fuse.ReadResult, fuse.Status) {
	id, st := r.node(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	t := r.tree
	if t.Kind(id) != layerindex.KindReg {
		return nil, fuse.Status(syscall.EBADF)
	}
	off := int64(in.Offset)
	size := t.Size(id)
	if off >= size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	if rem := size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	if f, base, ok, err := t.BackingFile(id, off, int64(len(dest))); err != nil {
		return nil, r.errno("read", t.Path(id), err)
	} else if ok && (base+off)%pageSize == 0 {
		// Zero-copy: the kernel splices from the backing file. Only
		// from page-aligned offsets: go-fuse (v2.12.1) sizes its pipe in
		// bytes, and data that starts mid-page needs one page slot more
		// than that; the splice then comes up short and go-fuse sends the
		// short read as if the file ended there — a silently truncated
		// file (seen on a docker-archive layer). Unaligned reads copy.
		return fuse.ReadResultFd(f.Fd(), base+off, len(dest)), fuse.OK
	}
	ra, err := t.Open(id)
	if err != nil {
		return nil, r.errno("open", t.Path(id), err)
	}
	// A read that waits (a span decode, a registry fetch) stops waiting
	// when the kernel interrupts the request: EINTR, not a reader held
	// until the wait ends.
	m, err := layerindex.ReadAtContext(cancelContext{cancel}, ra, dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && m == len(dest)) {
		return nil, r.errno("read", t.Path(id), err)
	}
	return fuse.ReadResultData(dest[:m]), fuse.OK
}

// cancelContext is the context of one FUSE request: done when go-fuse
// closes its cancel channel (the kernel sent INTERRUPT). A read that is
// served at once costs nothing for it, unlike a context.WithCancel and a
// goroutine per read; only a read that waits for a span decode pays a
// watcher goroutine (context.AfterFunc in SpanCache), small beside the
// milliseconds of the decode it waits for.
type cancelContext struct{ c <-chan struct{} }

func (cancelContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c cancelContext) Done() <-chan struct{}     { return c.c }
func (cancelContext) Value(any) any               { return nil }
func (c cancelContext) Err() error {
	select {
	case <-c.c:
		return context.Canceled
	default:
		return nil
	}
}

func (r *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if r.noXattrs {
		return 0, fuse.ENOSYS
	}
	id, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	for _, x := range r.tree.Attr(id).Xattrs {
		if x.Name == attr {
			if len(dest) == 0 {
				return uint32(len(x.Value)), fuse.OK
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), fuse.ERANGE
			}
			return uint32(copy(dest, x.Value)), fuse.OK
		}
	}
	return 0, fuse.ENOATTR
}

func (r *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	id, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	xs := r.tree.Attr(id).Xattrs
	size := 0
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), fuse.OK
	}
	if len(dest) < size {
		return uint32(size), fuse.ERANGE
	}
	p := 0
	for _, x := range xs {
		p += copy(dest[p:], x.Name)
		dest[p] = 0
		p++
	}
	return uint32(size), fuse.OK
}

func (r *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	out.Blocks = r.blocks
	out.Files = uint64(r.tree.Len())
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return fuse.OK
}
