package overlay

import (
	"strings"

	"github.com/ocimount/ocimount/layerindex"
)

// MergeRaw builds the tree of one layer alone, as its tar stores it, for
// forensic views: nothing is classified as a whiteout, so ".wh.NAME" and
// ".wh..wh..opq" appear with their stored type (empty regular files in
// practice) and entries below ".wh.*" directories (AUFS's hardlink store)
// are shown. Hardlinks inside the layer share an inode. A hardlink whose
// target is not in this layer (it names a lower layer's file) cannot be
// shown as a link: it appears as an empty regular file with the link
// entry's own metadata, which is what the layer itself holds.
func MergeRaw(l Layer) (*Tree, error) {
	m := &merger{layers: []Layer{l}, raw: true}
	m.root = &mnode{children: map[string]*mnode{}, ino: implicitDir()}
	if err := m.apply(l.Index, nil); err != nil {
		return nil, err
	}
	return freeze(m.root, m.layers), nil
}

// MergeSteps merges layers like Merge and, after each layer, calls step
// with a lookup into the tree as it stands then. Looking a path up at each
// step is how `ocimount history` tells what every layer did to it without
// re-merging every prefix. lookup follows symlinked parents (confined to
// the root, like the merge itself) but never the last component; the
// Inode it returns has no Ino, Nlink or content offset. An error from step
// stops the merge and is returned.
func MergeSteps(layers []Layer, step func(layer int, lookup func(path string) (Inode, bool)) error) error {
	m := &merger{layers: layers}
	m.root = &mnode{children: map[string]*mnode{}, ino: implicitDir()}
	look := func(p string) (Inode, bool) {
		p = strings.Trim(p, "/")
		var n *mnode
		if p == "" || p == "." {
			n = m.root
		} else {
			var err error
			if n, err = m.lookup(p); err != nil {
				return Inode{}, false
			}
		}
		if n == nil {
			return Inode{}, false
		}
		in := n.ino
		sz := in.size
		if in.kind == layerindex.KindSymlink {
			sz = int64(len(in.link))
		}
		return Inode{
			Kind: in.kind, Mode: in.mode, UID: in.uid, GID: in.gid, Size: sz,
			ModSec: in.modSec, ModNsec: in.modNsec, DevMajor: in.devMajor, DevMinor: in.devMinor,
			Link: in.link, Xattrs: in.xattrs, Layer: in.layer, Entry: in.entry, Sparse: in.sparse,
		}, true
	}
	for li, l := range layers {
		m.layer = li
		if err := m.apply(l.Index, l.Hide); err != nil {
			return err
		}
		if err := step(li, look); err != nil {
			return err
		}
	}
	return nil
}

// Source is Attr(id).Layer and .Entry without building the Inode: which
// layer entry provides id (-1, -1 for an implicit directory). Forensics
// scans every node with it to find what no path shows any more.
func (t *Tree) Source(id NodeID) (layer, entry int32) {
	st := &t.inodes[t.nodes[id].inode]
	return st.layer, st.entry
}
