package overlay

import (
	"path"
	"sort"
	"strings"

	"github.com/ocimount/ocimount/layerindex"
)

// synthDir is a directory WithDirs adds: its name and the synthetic
// directories below it.
type synthDir struct {
	name string
	kids []*synthDir
}

func (d *synthDir) child(name string) (c *synthDir, created bool) {
	for _, k := range d.kids {
		if k.name == name {
			return k, false
		}
	}
	c = &synthDir{name: name}
	d.kids = append(d.kids, c)
	return c, true
}

// WithDirs returns t with an empty directory at each of paths that t
// lacks, parents included, and the absolute paths it added. A runtime
// bundle needs them: a container runtime mounts /proc, /dev, /sys on
// directories of the rootfs and creates the missing ones, which a
// read-only rootfs cannot let it do, yet images built FROM scratch have
// none. Added directories are root-owned 0755 with mtime 0, like the
// parents a merge creates, and belong to no layer (Inode.Layer -1).
//
// Only missing names are added: an existing directory is kept as it is,
// and a path whose component exists as anything but a directory (a file,
// a symlink — not followed) gets nothing at or below it; the caller
// decides what to do about it.
//
// If nothing is missing, t itself is returned. Otherwise the result is a
// new tree, laid out breadth-first like every Tree (each directory's
// children consecutive and sorted), so all of its methods, FS and the
// FUSE server work on it unchanged: nodes and inodes are copied (about
// 120 bytes per name, in memory rather than mapped from the tree file),
// the names blob is copied with the new names appended, xattrs, sparse
// maps and layers are shared. Node IDs and inode numbers are renumbered
// in the same order (so a file's inode number is still the node ID of its
// first name); an added directory's inode number is its own node ID,
// distinct from every other, and the same on every mount of the same
// image with the same paths. t is not changed.
func (t *Tree) WithDirs(paths []string) (*Tree, []string) {
	extra := map[NodeID]*synthDir{}
	var added []string
next:
	for _, p := range paths {
		comps := strings.FieldsFunc(path.Clean("/"+p), func(r rune) bool { return r == '/' })
		cur := RootID
		i := 0
		for ; i < len(comps); i++ {
			c, ok := t.Lookup(cur, comps[i])
			if !ok {
				break
			}
			if t.Kind(c) != layerindex.KindDir {
				continue next
			}
			cur = c
		}
		if i == len(comps) {
			continue
		}
		d := extra[cur]
		if d == nil {
			d = &synthDir{}
			extra[cur] = d
		}
		for j := i; j < len(comps); j++ {
			var created bool
			if d, created = d.child(comps[j]); created {
				added = append(added, "/"+strings.Join(comps[:j+1], "/"))
			}
		}
	}
	if len(added) == 0 {
		return t, nil
	}
	return t.relayout(extra, len(added)), added
}

// relayout lays t out again breadth-first with the synthetic directories
// of extra (keyed by the real directory they go in) merged into the
// child lists by name. Real nodes keep their relative order, so the
// mapping of old to new IDs is increasing and the first name of a
// hardlinked file stays its first name.
func (t *Tree) relayout(extra map[NodeID]*synthDir, n int) *Tree {
	var sb strings.Builder
	sb.Grow(len(t.strs) + 16*n)
	sb.WriteString(t.strs)
	nameAt := map[string][2]uint32{}
	intern := func(s string) (uint32, uint32) {
		if r, ok := nameAt[s]; ok {
			return r[0], r[1]
		}
		r := [2]uint32{uint32(sb.Len()), uint32(len(s))}
		sb.WriteString(s)
		nameAt[s] = r
		return r[0], r[1]
	}

	nodes := make([]node, 2, len(t.nodes)+n)
	inodes := make([]inode, len(t.inodes), len(t.inodes)+n)
	copy(inodes, t.inodes)
	newID := make([]NodeID, len(t.nodes))
	nodes[RootID] = t.nodes[RootID]
	newID[RootID] = RootID

	type item struct {
		old NodeID // 0 for a synthetic directory
		syn *synthDir
		id  NodeID
	}
	queue := []item{{old: RootID, syn: extra[RootID], id: RootID}}
	for qi := 0; qi < len(queue); qi++ {
		it := queue[qi]
		var realFirst NodeID
		var realN int
		if it.old != 0 {
			realFirst, realN = t.Children(it.old)
		}
		var syn []*synthDir
		if it.syn != nil {
			syn = it.syn.kids
			sort.Slice(syn, func(i, j int) bool { return syn[i].name < syn[j].name })
		}
		first := NodeID(len(nodes))
		subdirs := uint32(0)
		for ri, si := 0, 0; ri < realN || si < len(syn); {
			id := NodeID(len(nodes))
			if si == len(syn) || (ri < realN && t.Name(realFirst+NodeID(ri)) < syn[si].name) {
				c := realFirst + NodeID(ri)
				ri++
				nd := t.nodes[c]
				nd.parent, nd.first, nd.count = it.id, 0, 0
				nodes = append(nodes, nd)
				newID[c] = id
				if t.Kind(c) == layerindex.KindDir {
					subdirs++
					queue = append(queue, item{old: c, syn: extra[c], id: id})
				}
				continue
			}
			s := syn[si]
			si++
			off, ln := intern(s.name)
			k := uint32(len(inodes))
			inodes = append(inodes, inode{ino: int64(id), kind: layerindex.KindDir, mode: 0o755, layer: -1, entry: -1})
			nodes = append(nodes, node{nameOff: off, nameLen: ln, parent: it.id, inode: k})
			subdirs++
			queue = append(queue, item{syn: s, id: id})
		}
		nodes[it.id].first, nodes[it.id].count = first, uint32(NodeID(len(nodes))-first)
		inodes[nodes[it.id].inode].nlink = 2 + subdirs
	}
	for k := range t.inodes {
		inodes[k].ino = int64(newID[inodes[k].ino])
	}
	return &Tree{layers: t.layers, strs: sb.String(), nodes: nodes, inodes: inodes, xattrs: t.xattrs, frags: t.frags}
}
