package overlay

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/ocimount/ocimount/layerindex"
)

// Errors of the merge; each is wrapped in a *MergeError naming layer and entry.
var (
	// ErrBadWhiteout: a whiteout name that cannot be applied (".wh.",
	// ".wh..", ".wh...").
	ErrBadWhiteout = errors.New("invalid whiteout")
	// ErrNotDir: an entry's parent path runs into something that is not
	// a directory.
	ErrNotDir = errors.New("parent is not a directory")
	// ErrLinkTarget: a hardlink names a target that does not exist at
	// that point of the merge, or that is a directory.
	ErrLinkTarget = errors.New("bad hardlink target")
	// ErrSymlinkLoop: too many symlinks while resolving a parent path.
	ErrSymlinkLoop = errors.New("too many levels of symbolic links")
)

// MergeError says which layer and entry could not be applied.
type MergeError struct {
	Layer int
	Entry string
	Err   error
}

func (e *MergeError) Error() string {
	return fmt.Sprintf("layer %d: entry %q: %v", e.Layer, e.Entry, e.Err)
}
func (e *MergeError) Unwrap() error { return e.Err }

// Layer is one input of Merge: a layer's index and random access to its
// uncompressed tar stream (Content may be nil for trees that are only
// listed, never read).
type Layer struct {
	Index   *layerindex.Index
	Content io.ReaderAt
	// CheckHeaders: the index was not built from this layer here (it
	// was published in a registry), so before a file's bytes are first
	// served, the tar header in front of them is checked against the
	// entry (layerindex.CheckHeader).
	CheckHeaders bool
	// Hide are entry names of this layer that a merged view does not
	// show: a TOC format's bookkeeping entries (layerindex.TOCFormat.
	// Hidden, such as eStargz's stargz.index.json), which stargz-
	// snapshotter hides too. A raw view of the layer shows them.
	Hide []string
}

const maxHops = 40 // symlinks followed while resolving one path, as Linux's MAXSYMLINKS

// mnode is a name in the tree being merged; minode is the file it names.
// Several mnodes share one minode when they are hardlinks of each other.
// This mutable, pointer-based form lives only during Merge; Freeze turns it
// into the compact Tree.
type mnode struct {
	name     string
	parent   *mnode
	children map[string]*mnode // dirs only
	ino      *minode
}

type minode struct {
	kind               layerindex.Kind
	mode, uid, gid     uint32
	size               int64
	modSec             int64
	modNsec            uint32
	devMajor, devMinor uint32
	link               string
	xattrs             []layerindex.Xattr
	layer              int32 // layer whose entry made this inode, -1 for implicit dirs
	entry              int32 // index into that layer's Entries
	sparse             bool
	nlink              int32 // names referring to it (files only)
}

type merger struct {
	root   *mnode
	layers []Layer
	layer  int
	// hidden holds this layer's files stored under an AUFS metadata
	// directory (Docker's hardlink store .wh..wh.plnk/): never visible,
	// but hardlinks in the same layer may point at them.
	hidden map[string]*minode
	// raw applies entries as stored (MergeRaw): no whiteouts, no hidden
	// names, hardlinks to files outside the layer kept as empty files.
	raw bool
}

// Merge applies layers in order (layers[0] is the base) with the OCI
// image-spec's changeset rules (layer.md):
//
//   - A whiteout ".wh.NAME" hides NAME of lower layers only, wherever it
//     sits in its own layer; an opaque marker ".wh..wh..opq" hides all
//     lower children of its directory. Both are applied before the layer's
//     other entries, which makes the result independent of entry order and
//     never hides what the layer itself adds (image-spec: whiteouts apply
//     to lower layers only; umoci does the same via its upper-path set).
//   - Directory over directory replaces the attributes and keeps the
//     children; any other collision replaces the path entirely.
//   - Within a layer, a later duplicate wins.
//   - Missing parents appear as 0755 root:root directories.
//   - Parent components that are symlinks are followed, confined to the
//     root, as a safe extractor (umoci, containerd) would; the last
//     component is never followed.
//   - A hardlink shares the inode its target has at that point, including
//     targets in lower layers; replacing either name later breaks the link
//     (as an overlay copy-up does), not the other names.
//
// Entries are classified by name before type (ClassifyName), so a whiteout
// stored as a hardlink (seen in the wild) is still a whiteout, and a
// ".wh.X" directory entry is the whiteout of X; entries stored below it
// appear under an implied ".wh.X" directory, as umoci and containerd
// extract them. Only AUFS metadata directories (.wh..wh.*) hide what is
// below them.
func Merge(layers []Layer) (*Tree, error) {
	m := &merger{layers: layers}
	m.root = &mnode{children: map[string]*mnode{}, ino: implicitDir()}
	for li, l := range layers {
		m.layer = li
		if err := m.apply(l.Index, l.Hide); err != nil {
			return nil, err
		}
	}
	return freeze(m.root, layers), nil
}

func implicitDir() *minode {
	return &minode{kind: layerindex.KindDir, mode: 0o755, layer: -1, entry: -1}
}

func (m *merger) fail(e *layerindex.Entry, err error) error {
	return &MergeError{Layer: m.layer, Entry: e.Name, Err: err}
}

func (m *merger) apply(ix *layerindex.Index, hide []string) error {
	// Directories this layer declares: a whiteout below such a path that
	// is not a directory in the lower layers (rm f; mkdir f, as overlayfs
	// records it with an opaque f/) has no lower children to hide, and
	// must not follow the lower symlink it replaces.
	declared := map[string]bool{}
	for i := range ix.Entries {
		if e := &ix.Entries[i]; e.Kind == layerindex.KindDir {
			declared[e.Name] = true
		}
	}
	// Pass 1: whiteouts and opaque markers, against the lower layers only.
	for i := range ix.Entries {
		if m.raw {
			break
		}
		e := &ix.Entries[i]
		switch kind, target := ClassifyName(e.Name); kind {
		case Opaque:
			if d := m.lowerDir(target, declared); d != nil {
				for _, c := range d.children {
					unlinkTree(c)
				}
				d.children = map[string]*mnode{}
			}
		case Whiteout:
			dir, base := splitPath(target)
			if d := m.lowerDir(dir, declared); d != nil {
				if c := d.children[base]; c != nil {
					unlinkTree(c)
					delete(d.children, base)
				}
			}
		case BadWhiteout:
			_, base := splitPath(e.Name)
			return m.fail(e, fmt.Errorf("%w: %q", ErrBadWhiteout, base))
		}
	}
	// Pass 2: everything else, in tar order.
	m.hidden = nil
	for i := range ix.Entries {
		e := &ix.Entries[i]
		if m.raw {
			if err := m.add(e, int32(i)); err != nil {
				return m.fail(e, err)
			}
			continue
		}
		switch kind, _ := ClassifyName(e.Name); kind {
		case NotWhiteout:
			if len(hide) > 0 && slices.Contains(hide, e.Name) {
				continue
			}
			if err := m.add(e, int32(i)); err != nil {
				return m.fail(e, err)
			}
		case AufsHidden:
			if e.Kind == layerindex.KindReg {
				if m.hidden == nil {
					m.hidden = map[string]*minode{}
				}
				m.hidden[e.Name] = newInode(e, int32(m.layer), int32(i))
			}
		}
	}
	return nil
}

// lowerDir finds the directory a whiteout in dir applies to, in the tree
// as the lower layers left it: parent symlinks are followed (the one rule
// of resolve.go) unless this layer replaces that very path with a
// directory. Anything that does not lead to an existing lower directory —
// a missing path, a file, a loop — makes the whiteout a no-op: there is
// nothing below to hide.
func (m *merger) lowerDir(dir string, declared map[string]bool) *mnode {
	cur := m.root
	hops := 0
	for i := 0; i < len(dir); {
		end := len(dir)
		if j := strings.IndexByte(dir[i:], '/'); j >= 0 {
			end = i + j
		}
		c, lit := dir[i:end], dir[:end]
		i = end + 1
		child := cur.children[c]
		if child == nil {
			return nil
		}
		if child.ino.kind == layerindex.KindSymlink && declared[lit] {
			return nil
		}
		next, err := resolvePath(m, cur, c, true, false, &hops)
		if err != nil || next.ino.kind != layerindex.KindDir {
			return nil
		}
		cur = next
	}
	return cur
}

func (m *merger) add(e *layerindex.Entry, idx int32) error {
	if e.Name == "" { // "./": the root's own metadata
		setDirAttrs(m.root.ino, e, int32(m.layer), idx)
		return nil
	}
	dir, base := splitPath(e.Name)
	parent, err := m.resolveDir(dir, true)
	if err != nil {
		return err
	}
	old := parent.children[base]
	if e.Kind == layerindex.KindDir && old != nil && old.ino.kind == layerindex.KindDir {
		setDirAttrs(old.ino, e, int32(m.layer), idx)
		return nil
	}
	var ino *minode
	if e.Kind == layerindex.KindHardlink && m.hidden[e.Link] != nil {
		ino = m.hidden[e.Link] // a link into the AUFS hardlink store
	} else if e.Kind == layerindex.KindHardlink {
		t, err := m.lookup(e.Link)
		switch {
		case m.raw && (err != nil || t == nil || t.ino.kind == layerindex.KindDir):
			// Raw view: the target lives in a lower layer; show what this
			// layer holds, an entry without content.
			ino = newInode(e, int32(m.layer), idx)
			ino.kind, ino.link = layerindex.KindReg, ""
		case err != nil:
			return fmt.Errorf("%w: %q: %w", ErrLinkTarget, e.Link, err)
		case t == nil:
			return fmt.Errorf("%w: %q does not exist", ErrLinkTarget, e.Link)
		case t.ino.kind == layerindex.KindDir:
			return fmt.Errorf("%w: %q is a directory", ErrLinkTarget, e.Link)
		case t == old:
			return nil // a link to itself changes nothing
		default:
			ino = t.ino
		}
	} else {
		ino = newInode(e, int32(m.layer), idx)
	}
	if old != nil {
		unlinkTree(old)
	}
	n := &mnode{name: base, parent: parent, ino: ino}
	if ino.kind == layerindex.KindDir {
		n.children = map[string]*mnode{}
	} else {
		ino.nlink++
	}
	parent.children[base] = n
	return nil
}

func newInode(e *layerindex.Entry, layer, idx int32) *minode {
	return &minode{
		kind: e.Kind, mode: e.Mode, uid: e.UID, gid: e.GID, size: e.Size,
		modSec: e.ModSec, modNsec: e.ModNsec, devMajor: e.DevMajor, devMinor: e.DevMinor,
		link: e.Link, xattrs: e.Xattrs, layer: layer, entry: idx, sparse: e.Sparse,
	}
}

func setDirAttrs(ino *minode, e *layerindex.Entry, layer, idx int32) {
	ino.mode, ino.uid, ino.gid = e.Mode, e.UID, e.GID
	ino.modSec, ino.modNsec = e.ModSec, e.ModNsec
	ino.xattrs = e.Xattrs
	ino.layer, ino.entry = layer, idx
}

// unlinkTree drops a name and, for a directory, everything below it, so
// that the link counts of hardlinked files stay right.
func unlinkTree(n *mnode) {
	if n.ino.kind != layerindex.KindDir {
		n.ino.nlink--
		return
	}
	for _, c := range n.children {
		unlinkTree(c)
	}
}

// splitPath splits a cleaned, non-root path into parent and base name.
func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// resolveDir resolves a cleaned directory path from the root by the one
// rule of resolve.go, following symlinks in every component. With create,
// missing directories are made (0755 root:root, as extractors make
// implicit parents); without it, a missing component yields (nil, nil).
func (m *merger) resolveDir(p string, create bool) (*mnode, error) {
	hops := 0
	n, err := resolvePath(m, m.root, p, true, create, &hops)
	if err == nil && n.ino.kind != layerindex.KindDir {
		err = &resolveError[*mnode]{at: n, err: ErrNotDir}
	}
	return m.resolved(n, err)
}

// resolved turns a resolution's outcome into the merge's: a missing path
// is (nil, nil), a non-directory on the way ErrNotDir naming it.
func (m *merger) resolved(n *mnode, err error) (*mnode, error) {
	if err == nil {
		return n, nil
	}
	at, sentinel := resolveFailure[*mnode](err)
	switch {
	case errors.Is(sentinel, fs.ErrNotExist):
		return nil, nil
	case errors.Is(sentinel, ErrNotDir):
		return nil, fmt.Errorf("%w: %q", ErrNotDir, at.pathName())
	}
	return nil, sentinel
}

// lookup finds a cleaned path without following its last component (a
// hardlink to a symlink links the symlink itself).
func (m *merger) lookup(p string) (*mnode, error) {
	hops := 0
	return m.resolved(resolvePath(m, m.root, p, false, false, &hops))
}

func (n *mnode) pathName() string {
	var parts []string
	for ; n != nil && n.parent != nil; n = n.parent {
		parts = append(parts, n.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return path.Join(parts...)
}
