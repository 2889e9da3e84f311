package overlay

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ocimount/ocimount/layerindex"
)

// NodeID names one path of the merged tree. IDs are dense, starting at
// RootID; every directory's children have consecutive IDs sorted by name,
// so a directory is two integers and a lookup is a binary search.
type NodeID uint32

// RootID is the root directory (and FUSE's root inode number).
const RootID NodeID = 1

// Inode is a file of the merged tree. Hardlinked names share one Inode.
type Inode struct {
	// Ino is the stable inode number: the NodeID of the first name of
	// this file in tree order, so all hardlinks of one file report it.
	Ino                uint64
	Kind               layerindex.Kind
	Mode               uint32 // 07777 bits
	UID, GID           uint32
	Nlink              uint32 // names of a file; 2+subdirectories of a directory
	Size               int64  // regular files: content size; symlinks: target length
	ModSec             int64
	ModNsec            uint32
	DevMajor, DevMinor uint32
	Link               string // symlink target
	Xattrs             []layerindex.Xattr
	// Layer and Entry say which layer's tar entry provides this file
	// (its content, for regular files); -1 for implicit directories.
	Layer, Entry int32
	// Offset is where a regular file's content starts in its layer's
	// uncompressed stream; with SparseMap for sparse files. Copied from
	// the layer index so the tree serves reads without the entry tables.
	Offset    int64
	Sparse    bool
	SparseMap []layerindex.Fragment
}

// node and inode are the stored forms: fixed-size and pointer-free, so a
// 200,000-entry tree is a few flat arrays the garbage collector never
// scans, and loading one from the tree cache is a linear decode. Strings
// (names, link targets, xattrs) live in one deduplicated blob, t.strs.
type node struct {
	nameOff, nameLen uint32
	parent           NodeID
	inode            uint32
	first            NodeID // first child (directories)
	count            uint32 // number of children
}

type inode struct {
	ino, size, modSec, offset        int64
	mode, uid, gid, nlink, modNsec   uint32
	devMajor, devMinor               uint32
	linkOff, linkLen                 uint32
	xattrOff, xattrN, fragOff, fragN uint32
	layer, entry                     int32
	kind                             layerindex.Kind
	sparse                           bool
	// renamed: the tar entry holding the data has another base name than
	// the file's first name here (a hardlink whose target name was
	// removed), so a header check cannot compare names.
	renamed bool
}

type xattrRef struct{ nameOff, nameLen, valOff, valLen uint32 }

// Tree is the merged, immutable view of an image. All methods are safe for
// concurrent use.
type Tree struct {
	// hdrOK marks inodes whose tar header was checked (CheckHeaders).
	hdrOnce sync.Once
	hdrOK   []atomic.Uint32

	layers []Layer
	strs   string
	nodes  []node // indexed by NodeID; nodes[0] unused
	inodes []inode
	xattrs []xattrRef
	frags  []layerindex.Fragment
	mapped bool // the arrays above are a mapped tree file, not heap
}

// Mapped reports whether the tree is served from a mapped tree file
// (LoadTreeFile), whose pages the kernel can share and reclaim, rather
// than from the heap a merge built.
func (t *Tree) Mapped() bool { return t.mapped }

// blobBuilder interns strings into one blob.
type blobBuilder struct {
	b   []byte
	idx map[string][2]uint32
}

func (bb *blobBuilder) add(s string) (uint32, uint32) {
	if s == "" {
		return 0, 0
	}
	if r, ok := bb.idx[s]; ok {
		return r[0], r[1]
	}
	r := [2]uint32{uint32(len(bb.b)), uint32(len(s))}
	bb.b = append(bb.b, s...)
	bb.idx[s] = r
	return r[0], r[1]
}

// freeze lays the merged tree out breadth-first so that each directory's
// children are contiguous and sorted.
func freeze(root *mnode, layers []Layer) *Tree {
	t := &Tree{layers: layers, nodes: make([]node, 2, 1024)}
	bb := &blobBuilder{idx: map[string][2]uint32{}}
	inoOf := map[*minode]uint32{}
	intern := func(id NodeID, name string, in *minode) uint32 {
		if k, ok := inoOf[in]; ok {
			return k
		}
		k := uint32(len(t.inodes))
		inoOf[in] = k
		sz := in.size
		if in.kind == layerindex.KindSymlink {
			sz = int64(len(in.link))
		}
		st := inode{
			ino: int64(id), kind: in.kind, mode: in.mode, uid: in.uid, gid: in.gid,
			nlink: uint32(max(in.nlink, 1)), size: sz, modSec: in.modSec, modNsec: in.modNsec,
			devMajor: in.devMajor, devMinor: in.devMinor, layer: in.layer, entry: in.entry, sparse: in.sparse,
		}
		st.linkOff, st.linkLen = bb.add(in.link)
		st.xattrOff, st.xattrN = uint32(len(t.xattrs)), uint32(len(in.xattrs))
		for _, x := range in.xattrs {
			var r xattrRef
			r.nameOff, r.nameLen = bb.add(x.Name)
			r.valOff, r.valLen = bb.add(x.Value)
			t.xattrs = append(t.xattrs, r)
		}
		if in.kind == layerindex.KindReg && in.layer >= 0 {
			e := &layers[in.layer].Index.Entries[in.entry]
			st.offset = e.Offset
			st.renamed = path.Base(e.Name) != name
			st.fragOff, st.fragN = uint32(len(t.frags)), uint32(len(e.SparseMap))
			t.frags = append(t.frags, e.SparseMap...)
		}
		t.inodes = append(t.inodes, st)
		return k
	}
	t.nodes[RootID] = node{parent: RootID, inode: intern(RootID, "", root.ino)}
	queue := []*mnode{root}
	ids := []NodeID{RootID}
	for qi := 0; qi < len(queue); qi++ {
		d, did := queue[qi], ids[qi]
		names := make([]string, 0, len(d.children))
		for n := range d.children {
			names = append(names, n)
		}
		sort.Strings(names)
		first := NodeID(len(t.nodes))
		subdirs := uint32(0)
		for _, n := range names {
			c := d.children[n]
			id := NodeID(len(t.nodes))
			no, nl := bb.add(n)
			t.nodes = append(t.nodes, node{nameOff: no, nameLen: nl, parent: did, inode: intern(id, n, c.ino)})
			if c.ino.kind == layerindex.KindDir {
				subdirs++
				queue = append(queue, c)
				ids = append(ids, id)
			}
		}
		t.nodes[did].first, t.nodes[did].count = first, uint32(len(names))
		t.inodes[t.nodes[did].inode].nlink = 2 + subdirs
	}
	t.strs = string(bb.b)
	return t
}

func (t *Tree) str(off, n uint32) string { return t.strs[off : off+n] }

// Root returns RootID.
func (t *Tree) Root() NodeID { return RootID }

// Len is the number of names in the tree, the root included.
func (t *Tree) Len() int { return len(t.nodes) - 1 }

// Valid reports whether id names a node of t.
func (t *Tree) Valid(id NodeID) bool { return id >= RootID && int(id) < len(t.nodes) }

// Attr returns the file that id names. Link and Xattrs share the tree's
// memory; Xattrs is allocated only for files that have some.
func (t *Tree) Attr(id NodeID) Inode {
	st := &t.inodes[t.nodes[id].inode]
	in := Inode{
		Ino: uint64(st.ino), Kind: st.kind, Mode: st.mode, UID: st.uid, GID: st.gid, Nlink: st.nlink,
		Size: st.size, ModSec: st.modSec, ModNsec: st.modNsec, DevMajor: st.devMajor, DevMinor: st.devMinor,
		Link: t.str(st.linkOff, st.linkLen), Layer: st.layer, Entry: st.entry, Offset: st.offset, Sparse: st.sparse,
	}
	if st.xattrN > 0 {
		in.Xattrs = make([]layerindex.Xattr, st.xattrN)
		for i, r := range t.xattrs[st.xattrOff : st.xattrOff+st.xattrN] {
			in.Xattrs[i] = layerindex.Xattr{Name: t.str(r.nameOff, r.nameLen), Value: t.str(r.valOff, r.valLen)}
		}
	}
	if st.fragN > 0 {
		in.SparseMap = t.frags[st.fragOff : st.fragOff+st.fragN : st.fragOff+st.fragN]
	}
	return in
}

// HasXattrs reports whether any file has extended attributes (if none,
// FUSE can tell the kernel not to ask).
func (t *Tree) HasXattrs() bool { return len(t.xattrs) > 0 }

// UsedBlocks counts 4 KiB blocks of regular file content, each file once
// however many names it has (for statfs).
func (t *Tree) UsedBlocks() uint64 {
	var n uint64
	for i := range t.inodes {
		if in := &t.inodes[i]; in.kind == layerindex.KindReg {
			n += uint64(in.size+4095) / 4096
		}
	}
	return n
}

// InodeIndex identifies the file id names: hardlinks of one file have the
// same InodeIndex (and Ino); other names never do.
func (t *Tree) InodeIndex(id NodeID) uint32 { return t.nodes[id].inode }

// Ino is Attr(id).Ino without building the whole Inode.
func (t *Tree) Ino(id NodeID) uint64 { return uint64(t.inodes[t.nodes[id].inode].ino) }

// Kind is Attr(id).Kind without building the whole Inode.
func (t *Tree) Kind(id NodeID) layerindex.Kind { return t.inodes[t.nodes[id].inode].kind }

// Name is the base name of id ("" for the root).
func (t *Tree) Name(id NodeID) string { n := &t.nodes[id]; return t.str(n.nameOff, n.nameLen) }

// Parent is id's directory (the root is its own parent).
func (t *Tree) Parent(id NodeID) NodeID { return t.nodes[id].parent }

// Children returns the range [first, first+count) of a directory's
// children, sorted by name.
func (t *Tree) Children(dir NodeID) (first NodeID, count int) {
	n := &t.nodes[dir]
	return n.first, int(n.count)
}

// ZipChildren walks the children of directory da of a and directory db
// of b together, in name order, pairing equal names: fn gets (i, 0) for a
// name only a has, (0, j) for one only b has, (i, j) for both (NodeID 0 is
// never a node). A side given as 0, or as a node that is not a directory,
// has no children. It is the one merge of two sorted child lists (diff,
// explore's tree); it stops at fn's first error.
func ZipChildren(a *Tree, da NodeID, b *Tree, db NodeID, fn func(i, j NodeID) error) error {
	var fa, fb NodeID
	var na, nb int
	if da != 0 && a.Kind(da) == layerindex.KindDir {
		fa, na = a.Children(da)
	}
	if db != 0 && b.Kind(db) == layerindex.KindDir {
		fb, nb = b.Children(db)
	}
	i, j := fa, fb
	ea, eb := fa+NodeID(na), fb+NodeID(nb)
	for i < ea || j < eb {
		var c int
		switch {
		case i >= ea:
			c = 1
		case j >= eb:
			c = -1
		default:
			c = strings.Compare(a.Name(i), b.Name(j))
		}
		var err error
		switch {
		case c < 0:
			err = fn(i, 0)
			i++
		case c > 0:
			err = fn(0, j)
			j++
		default:
			err = fn(i, j)
			i, j = i+1, j+1
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Lookup finds name in directory dir.
func (t *Tree) Lookup(dir NodeID, name string) (NodeID, bool) {
	n := &t.nodes[dir]
	lo, hi := int(n.first), int(n.first)+int(n.count)
	i := sort.Search(hi-lo, func(i int) bool { return t.Name(NodeID(lo+i)) >= name })
	if i < hi-lo && t.Name(NodeID(lo+i)) == name {
		return NodeID(lo + i), true
	}
	return 0, false
}

// Path returns the slash-separated path of id relative to the root.
func (t *Tree) Path(id NodeID) string {
	var parts []string
	for id != RootID {
		parts = append(parts, t.Name(id))
		id = t.nodes[id].parent
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// Walk resolves a slash-separated path without following symlinks.
func (t *Tree) Walk(p string) (NodeID, bool) {
	id := RootID
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if t.Kind(id) != layerindex.KindDir {
			return 0, false
		}
		var ok bool
		if id, ok = t.Lookup(id, c); !ok {
			return 0, false
		}
	}
	return id, true
}

// Open returns random access to a regular file's content. It reads
// nothing until asked; reads decompress only the spans they touch.
func (t *Tree) Open(id NodeID) (io.ReaderAt, error) {
	// The stored inode, not Attr: this runs for every FUSE READ, and Attr
	// builds the xattr list.
	st := t.ino(id)
	if st.kind != layerindex.KindReg {
		return nil, fmt.Errorf("%s: not a regular file", t.Path(id))
	}
	l := t.layers[st.layer]
	if l.Content == nil {
		return nil, fmt.Errorf("%s: layer %d has no content source", t.Path(id), st.layer)
	}
	e := &layerindex.Entry{Name: t.Name(id), Kind: st.kind, Size: st.size, Offset: st.offset, Sparse: st.sparse}
	if st.fragN > 0 {
		e.SparseMap = t.frags[st.fragOff : st.fragOff+st.fragN : st.fragOff+st.fragN]
	}
	if l.CheckHeaders {
		if err := t.checkHeader(id, st, l, e); err != nil {
			return nil, err
		}
	}
	return layerindex.Content(l.Content, e), nil
}

// ino is the stored inode of node id.
func (t *Tree) ino(id NodeID) *inode { return &t.inodes[t.nodes[id].inode] }

// Size is a regular file's content size (a symlink's target length): the
// one attribute every read needs, without building the whole Inode.
func (t *Tree) Size(id NodeID) int64 { return t.ino(id).size }

// checkHeader runs layerindex.CheckHeader once per inode (the result is
// remembered: reads come one FUSE request at a time).
func (t *Tree) checkHeader(id NodeID, st *inode, l Layer, e *layerindex.Entry) error {
	t.hdrOnce.Do(func() { t.hdrOK = make([]atomic.Uint32, (len(t.inodes)+31)/32) })
	k := t.nodes[id].inode
	w, bit := &t.hdrOK[k/32], uint32(1)<<(k%32)
	if w.Load()&bit != 0 {
		return nil
	}
	name := t.Name(id)
	if st.nlink > 1 || st.renamed {
		name = "" // the data sits (or may sit) under another name
	}
	if err := layerindex.CheckHeader(l.Content, e, name); err != nil {
		return fmt.Errorf("%s (layer %d, published index): %w", t.Path(id), st.layer, err)
	}
	w.Or(bit)
	return nil
}

// FileBacked is implemented by layer content that is an uncompressed tar
// stream stored in a local file (a plain tar layer on disk, a decoded zstd
// cache), so that FUSE can splice file data straight from the page cache
// instead of copying it through the server.
type FileBacked interface {
	// File returns the file and the offset in it where the tar stream
	// starts.
	File() (f *os.File, base int64)
}

// VerifiedFile is FileBacked content whose file is not trusted as it
// stands (a decoded copy in the cache): a range may be served from the
// file only after Verify passed for it.
type VerifiedFile interface {
	FileBacked
	// Verify checks stream bytes [off, off+n).
	Verify(off, n int64) error
}

// BackingFile says where a regular file's bytes lie in a local file, if
// they do (see FileBacked); sparse entries never qualify. The caller
// means to serve n bytes from the file's offset off straight from the
// file: err says they must not be served at all (a damaged cache file).
func (t *Tree) BackingFile(id NodeID, off, n int64) (f *os.File, pos int64, ok bool, err error) {
	st := t.ino(id)
	if st.kind != layerindex.KindReg || st.sparse || st.layer < 0 {
		return nil, 0, false, nil
	}
	if t.layers[st.layer].CheckHeaders {
		return nil, 0, false, nil // reads must go through Open, which checks
	}
	fb, ok := t.layers[st.layer].Content.(FileBacked)
	if !ok {
		return nil, 0, false, nil
	}
	if v, ok := fb.(VerifiedFile); ok {
		if err := v.Verify(st.offset+off, n); err != nil {
			return nil, 0, false, fmt.Errorf("%s (layer %d): %w", t.Path(id), st.layer, err)
		}
	}
	f, base := fb.File()
	return f, base + st.offset, true, nil
}

// Layers returns the layers the tree was merged from.
func (t *Tree) Layers() []Layer { return t.layers }
