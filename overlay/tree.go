package overlay

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

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

type node struct {
	name   string
	parent NodeID
	inode  uint32
	first  NodeID // first child (directories)
	count  uint32 // number of children
}

// Tree is the merged, immutable view of an image. All methods are safe for
// concurrent use.
type Tree struct {
	layers []Layer
	nodes  []node // indexed by NodeID; nodes[0] unused
	inodes []Inode
}

// freeze lays the merged tree out breadth-first so that each directory's
// children are contiguous and sorted.
func freeze(root *mnode, layers []Layer) *Tree {
	t := &Tree{layers: layers, nodes: make([]node, 2, 1024)}
	inoOf := map[*minode]uint32{}
	intern := func(id NodeID, in *minode) uint32 {
		if k, ok := inoOf[in]; ok {
			return k
		}
		k := uint32(len(t.inodes))
		inoOf[in] = k
		sz := in.size
		if in.kind == layerindex.KindSymlink {
			sz = int64(len(in.link))
		}
		t.inodes = append(t.inodes, Inode{
			Ino: uint64(id), Kind: in.kind, Mode: in.mode, UID: in.uid, GID: in.gid,
			Nlink: uint32(max(in.nlink, 1)), Size: sz, ModSec: in.modSec, ModNsec: in.modNsec,
			DevMajor: in.devMajor, DevMinor: in.devMinor, Link: in.link, Xattrs: in.xattrs,
			Layer: in.layer, Entry: in.entry, Sparse: in.sparse,
		})
		if in.kind == layerindex.KindReg && in.layer >= 0 {
			e := &layers[in.layer].Index.Entries[in.entry]
			t.inodes[k].Offset, t.inodes[k].SparseMap = e.Offset, e.SparseMap
		}
		return k
	}
	t.nodes[RootID] = node{parent: RootID, inode: intern(RootID, root.ino)}
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
			t.nodes = append(t.nodes, node{name: n, parent: did, inode: intern(id, c.ino)})
			if c.ino.kind == layerindex.KindDir {
				subdirs++
				queue = append(queue, c)
				ids = append(ids, id)
			}
		}
		t.nodes[did].first, t.nodes[did].count = first, uint32(len(names))
		t.inodes[t.nodes[did].inode].Nlink = 2 + subdirs
	}
	return t
}

// Root returns RootID.
func (t *Tree) Root() NodeID { return RootID }

// Len is the number of names in the tree, the root included.
func (t *Tree) Len() int { return len(t.nodes) - 1 }

// Valid reports whether id names a node of t.
func (t *Tree) Valid(id NodeID) bool { return id >= RootID && int(id) < len(t.nodes) }

// Attr returns the file that id names. The result must not be modified.
func (t *Tree) Attr(id NodeID) *Inode { return &t.inodes[t.nodes[id].inode] }

// Name is the base name of id ("" for the root).
func (t *Tree) Name(id NodeID) string { return t.nodes[id].name }

// Parent is id's directory (the root is its own parent).
func (t *Tree) Parent(id NodeID) NodeID { return t.nodes[id].parent }

// Children returns the range [first, first+count) of a directory's
// children, sorted by name.
func (t *Tree) Children(dir NodeID) (first NodeID, count int) {
	n := &t.nodes[dir]
	return n.first, int(n.count)
}

// Lookup finds name in directory dir.
func (t *Tree) Lookup(dir NodeID, name string) (NodeID, bool) {
	n := &t.nodes[dir]
	lo, hi := int(n.first), int(n.first)+int(n.count)
	i := sort.Search(hi-lo, func(i int) bool { return t.nodes[lo+i].name >= name })
	if i < hi-lo && t.nodes[lo+i].name == name {
		return NodeID(lo + i), true
	}
	return 0, false
}

// Path returns the slash-separated path of id relative to the root.
func (t *Tree) Path(id NodeID) string {
	var parts []string
	for id != RootID {
		parts = append(parts, t.nodes[id].name)
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
		if t.inodes[t.nodes[id].inode].Kind != layerindex.KindDir {
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
	in := t.Attr(id)
	if in.Kind != layerindex.KindReg {
		return nil, fmt.Errorf("%s: not a regular file", t.Path(id))
	}
	l := t.layers[in.Layer]
	if l.Content == nil {
		return nil, fmt.Errorf("%s: layer %d has no content source", t.Path(id), in.Layer)
	}
	return layerindex.Content(l.Content, &layerindex.Entry{
		Name: t.Name(id), Kind: in.Kind, Size: in.Size, Offset: in.Offset, Sparse: in.Sparse, SparseMap: in.SparseMap,
	}), nil
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

// BackingFile says where a regular file's bytes lie in a local file, if
// they do (see FileBacked); sparse entries never qualify.
func (t *Tree) BackingFile(id NodeID) (f *os.File, off int64, ok bool) {
	in := t.Attr(id)
	if in.Kind != layerindex.KindReg || in.Sparse || in.Layer < 0 {
		return nil, 0, false
	}
	fb, ok := t.layers[in.Layer].Content.(FileBacked)
	if !ok {
		return nil, 0, false
	}
	f, base := fb.File()
	return f, base + in.Offset, true
}

// Layers returns the layers the tree was merged from.
func (t *Tree) Layers() []Layer { return t.layers }
