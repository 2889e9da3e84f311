package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/ocimount/ocimount/layerindex"
)

// Path resolution: the one rule by which a path names a node of an image,
// used by the merge (parents of entries, hardlink targets, whiteouts), by
// the io/fs view and Tree.Resolve (forensics: cat, history), so that the
// mount and the commands can never disagree on where a path leads:
//
//   - "" and "." components are skipped;
//   - ".." goes to the parent directory, and at the root stays at the root,
//     as the kernel does at a chroot's root and as umoci (securejoin) and
//     containerd do when they extract: a symlink can never lead out of the
//     image, whatever its target says;
//   - a symlink met as a non-final component (or as the final one when it
//     is followed) is replaced by its target, which starts at the root
//     when absolute and at the symlink's directory otherwise;
//   - at most maxHops symlinks are followed in one resolution (ELOOP), as
//     Linux's MAXSYMLINKS;
//   - a component below something that is not a directory is ErrNotDir;
//     a missing one is fs.ErrNotExist, or with create (the merge adding an
//     entry) a new directory 0755 root:root.
//
// umoci 0.4.7 unpack of a layer with p -> ../../../../tmp/x below a later
// p/evil creates tmp/x/evil inside the rootfs: the same place.

// pathTree is what resolution needs of a tree: the merge's tree under
// construction (nodes *mnode) and the frozen Tree (NodeID).
type pathTree[N comparable] interface {
	rootNode() N
	parentOf(n N) N // the root's parent is the root
	childOf(dir N, name string) (N, bool)
	kindOf(n N) layerindex.Kind
	linkOf(n N) string
	mkdirIn(dir N, name string) N // only called with create
}

// resolveError says where resolution stopped: at is the node that is not a
// directory (ErrNotDir) or the directory lacking the name (fs.ErrNotExist).
type resolveError[N comparable] struct {
	at  N
	err error
}

func (e *resolveError[N]) Error() string { return e.err.Error() }
func (e *resolveError[N]) Unwrap() error { return e.err }

// resolvePath resolves p from directory cur of t by the rule above;
// followLast says whether a final symlink is followed. hops counts the
// symlinks followed so far (shared by nested resolutions).
func resolvePath[N comparable, T pathTree[N]](t T, cur N, p string, followLast, create bool, hops *int) (N, error) {
	for p != "" {
		var c string
		if i := strings.IndexByte(p, '/'); i >= 0 {
			c, p = p[:i], p[i+1:]
		} else {
			c, p = p, ""
		}
		switch c {
		case "", ".":
			continue
		case "..":
			cur = t.parentOf(cur)
			continue
		}
		if t.kindOf(cur) != layerindex.KindDir {
			return cur, &resolveError[N]{at: cur, err: ErrNotDir}
		}
		next, ok := t.childOf(cur, c)
		if !ok {
			if !create {
				return cur, &resolveError[N]{at: cur, err: fs.ErrNotExist}
			}
			next = t.mkdirIn(cur, c)
		}
		if t.kindOf(next) == layerindex.KindSymlink && (p != "" || followLast) {
			*hops++
			if *hops > maxHops {
				return next, &resolveError[N]{at: next, err: ErrSymlinkLoop}
			}
			start := cur
			link := t.linkOf(next)
			if strings.HasPrefix(link, "/") {
				start = t.rootNode()
			}
			var err error
			if next, err = resolvePath(t, start, link, true, create, hops); err != nil {
				return next, err
			}
		}
		cur = next
	}
	return cur, nil
}

// resolveFailure unpacks a resolvePath error: the node it stopped at and
// the sentinel (ErrNotDir, fs.ErrNotExist, ErrSymlinkLoop).
func resolveFailure[N comparable](err error) (N, error) {
	var re *resolveError[N]
	if errors.As(err, &re) {
		return re.at, re.err
	}
	var zero N
	return zero, err
}

// The merge's tree under construction.
func (m *merger) rootNode() *mnode { return m.root }
func (m *merger) parentOf(n *mnode) *mnode {
	if n.parent == nil {
		return m.root
	}
	return n.parent
}
func (m *merger) childOf(dir *mnode, name string) (*mnode, bool) {
	c, ok := dir.children[name]
	return c, ok
}
func (m *merger) kindOf(n *mnode) layerindex.Kind { return n.ino.kind }
func (m *merger) linkOf(n *mnode) string          { return n.ino.link }
func (m *merger) mkdirIn(dir *mnode, name string) *mnode {
	c := &mnode{name: name, parent: dir, children: map[string]*mnode{}, ino: implicitDir()}
	dir.children[name] = c
	return c
}

// treePaths resolves in a frozen Tree.
type treePaths struct{ t *Tree }

func (p treePaths) rootNode() NodeID                               { return RootID }
func (p treePaths) parentOf(n NodeID) NodeID                       { return p.t.Parent(n) }
func (p treePaths) childOf(dir NodeID, name string) (NodeID, bool) { return p.t.Lookup(dir, name) }
func (p treePaths) kindOf(n NodeID) layerindex.Kind                { return p.t.Kind(n) }
func (p treePaths) linkOf(n NodeID) string {
	st := p.t.ino(n)
	return p.t.str(st.linkOff, st.linkLen)
}
func (p treePaths) mkdirIn(dir NodeID, name string) NodeID {
	panic("overlay: a frozen Tree cannot grow")
}

// ResolveError is the error of Tree.Resolve: which path failed, the
// sentinel (fs.ErrNotExist, ErrNotDir, ErrSymlinkLoop), and for ErrNotDir
// the path of the node that is not a directory.
type ResolveError struct {
	Path   string // the path asked for
	NotDir string // with ErrNotDir: the non-directory met on the way
	Err    error
}

func (e *ResolveError) Error() string {
	if e.NotDir != "" {
		return fmt.Sprintf("%s: %q is not a directory", e.Path, e.NotDir)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}
func (e *ResolveError) Unwrap() error { return e.Err }

// Resolve finds the node p (slash-separated, relative to the root; a
// leading "/" is allowed) names, following symlinks by the image's one
// rule (see the top of resolve.go); followLast says whether a final
// symlink is followed. It is how the merge itself resolved every path, so
// a file the mount shows at tmp/x/evil is found through p/evil when p
// links to ../../../../tmp/x, as on an extracted rootfs.
func (t *Tree) Resolve(p string, followLast bool) (NodeID, error) {
	hops := 0
	id, err := resolvePath(treePaths{t}, RootID, p, followLast, false, &hops)
	if err != nil {
		at, sentinel := resolveFailure[NodeID](err)
		re := &ResolveError{Path: p, Err: sentinel}
		if errors.Is(sentinel, ErrNotDir) {
			re.NotDir = t.Path(at)
		}
		return 0, re
	}
	return id, nil
}
