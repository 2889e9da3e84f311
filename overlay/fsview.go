package overlay

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"syscall"
	"time"

	"github.com/ocimount/ocimount/layerindex"
)

// FS returns an io/fs view of the tree, so that testing/fstest, `ocimount
// ls`-style listings and ordinary Go code can walk an image without FUSE.
// Open follows symlinks (confined to the root); Lstat and ReadLink do not
// follow the last component. FileInfo.Sys() returns the *Inode.
func (t *Tree) FS() fs.FS { return treeFS{t} }

type treeFS struct{ t *Tree }

var (
	_ fs.ReadDirFS   = treeFS{}
	_ fs.StatFS      = treeFS{}
	_ fs.ReadLinkFS  = treeFS{}
	_ fs.ReadFileFS  = treeFS{}
	_ fs.ReadDirFile = (*dirFile)(nil)
)

// resolve walks name by the image's one path rule (resolve.go); follow
// says whether a final symlink is followed.
func (f treeFS) resolve(op, name string, follow bool) (NodeID, error) {
	if !fs.ValidPath(name) {
		return 0, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	hops := 0
	id, err := resolvePath(treePaths{f.t}, RootID, name, follow, false, &hops)
	if err != nil {
		_, sentinel := resolveFailure[NodeID](err)
		switch {
		case errors.Is(sentinel, ErrNotDir):
			sentinel = syscall.ENOTDIR
		case errors.Is(sentinel, ErrSymlinkLoop):
			sentinel = syscall.ELOOP
		}
		return 0, &fs.PathError{Op: op, Path: name, Err: sentinel}
	}
	return id, nil
}

func (f treeFS) Open(name string) (fs.File, error) {
	id, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	fi := f.info(id, path.Base(name))
	switch f.t.Kind(id) {
	case layerindex.KindDir:
		return &dirFile{fsys: f, id: id, fi: fi}, nil
	case layerindex.KindReg:
		ra, err := f.t.Open(id)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &regFile{fi: fi, r: io.NewSectionReader(ra, 0, fi.Size())}, nil
	}
	return &otherFile{fi: fi}, nil
}

func (f treeFS) Stat(name string) (fs.FileInfo, error) {
	id, err := f.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info(id, path.Base(name)), nil
}

func (f treeFS) Lstat(name string) (fs.FileInfo, error) {
	id, err := f.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info(id, path.Base(name)), nil
}

func (f treeFS) ReadLink(name string) (string, error) {
	id, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	in := f.t.Attr(id)
	if in.Kind != layerindex.KindSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return in.Link, nil
}

func (f treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	id, err := f.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if f.t.Kind(id) != layerindex.KindDir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	first, n := f.t.Children(id)
	out := make([]fs.DirEntry, n)
	for i := range n {
		c := first + NodeID(i)
		out[i] = fs.FileInfoToDirEntry(f.info(c, f.t.Name(c)))
	}
	return out, nil
}

func (f treeFS) ReadFile(name string) ([]byte, error) {
	file, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return io.ReadAll(file)
}

func (f treeFS) info(id NodeID, name string) fs.FileInfo {
	if id == RootID {
		name = "."
	}
	in := f.t.Attr(id)
	return &fileInfo{name: name, in: &in}
}

type fileInfo struct {
	name string
	in   *Inode
}

func (i *fileInfo) Name() string { return i.name }
func (i *fileInfo) Size() int64 {
	if i.in.Kind == layerindex.KindDir {
		return 0
	}
	return i.in.Size
}
func (i *fileInfo) Mode() fs.FileMode  { return FileMode(i.in) }
func (i *fileInfo) ModTime() time.Time { return time.Unix(i.in.ModSec, int64(i.in.ModNsec)) }
func (i *fileInfo) IsDir() bool        { return i.in.Kind == layerindex.KindDir }
func (i *fileInfo) Sys() any           { return i.in }

// FileMode converts an inode's kind and permission bits to an fs.FileMode.
func FileMode(in *Inode) fs.FileMode {
	m := fs.FileMode(in.Mode & 0o777)
	if in.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.Kind {
	case layerindex.KindDir:
		m |= fs.ModeDir
	case layerindex.KindSymlink:
		m |= fs.ModeSymlink
	case layerindex.KindChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case layerindex.KindBlock:
		m |= fs.ModeDevice
	case layerindex.KindFIFO:
		m |= fs.ModeNamedPipe
	}
	return m
}

type regFile struct {
	fi fs.FileInfo
	r  *io.SectionReader
}

func (f *regFile) Stat() (fs.FileInfo, error)                { return f.fi, nil }
func (f *regFile) Read(p []byte) (int, error)                { return f.r.Read(p) }
func (f *regFile) ReadAt(p []byte, off int64) (int, error)   { return f.r.ReadAt(p, off) }
func (f *regFile) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }
func (f *regFile) Close() error                              { return nil }

type otherFile struct{ fi fs.FileInfo }

func (f *otherFile) Stat() (fs.FileInfo, error) { return f.fi, nil }

// Read of a device, FIFO or symlink yields no bytes: they have size 0 in
// the image and nothing to serve.
func (f *otherFile) Read([]byte) (int, error) { return 0, io.EOF }
func (f *otherFile) Close() error             { return nil }

type dirFile struct {
	fsys treeFS
	id   NodeID
	fi   fs.FileInfo
	pos  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.fi, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.fi.Name(), Err: syscall.EISDIR}
}
func (d *dirFile) Close() error { return nil }
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	first, count := d.fsys.t.Children(d.id)
	rest := count - d.pos
	if n > 0 && rest == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < rest {
		rest = n
	}
	out := make([]fs.DirEntry, rest)
	for i := range rest {
		c := first + NodeID(d.pos+i)
		out[i] = fs.FileInfoToDirEntry(d.fsys.info(c, d.fsys.t.Name(c)))
	}
	d.pos += rest
	return out, nil
}
