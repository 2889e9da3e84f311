package overlay_test

// Union-semantics tests for Merge. Every expectation below is derived from
// the OCI image-spec layer.md ("Whiteouts", "Opaque Whiteout", "Changeset
// over existing files") and from what a safe sequential extractor (umoci
// unpack) leaves on disk, never from the implementation.
//
// A case lists its layers as tartest entries and the expected tree as dump
// lines, one per path:
//
//	path kind mode uid:gid size content-or-target ino-group nlink xattrs mtime
//
// content is the %q-quoted file content, "->target" for a symlink,
// "major,minor" for a device and "-" otherwise; ino-group is "=P" where P is
// the first path (in dump order) sharing this inode when several names share
// it, "-" otherwise; xattrs is "name=%q,..." or "-"; mtime is "D" for
// tartest.DefaultMTime, "0" for the zero time (implicit directories) and
// "sec.nsec" otherwise.

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// buildLayers indexes each tar (uncompressed) and returns Merge's input.
func buildLayers(tb testing.TB, tars ...[]byte) ([]overlay.Layer, error) {
	tb.Helper()
	var ls []overlay.Layer
	for i, b := range tars {
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(b), layerindex.None, layerindex.Options{})
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		ls = append(ls, overlay.Layer{Index: ix, Content: bytes.NewReader(b)})
	}
	return ls, nil
}

// mergeTars builds and merges the layers; a Build error is returned as is.
func mergeTars(tb testing.TB, tars ...[]byte) (*overlay.Tree, error) {
	tb.Helper()
	ls, err := buildLayers(tb, tars...)
	if err != nil {
		return nil, err
	}
	return overlay.Merge(ls)
}

func mergeEntries(tb testing.TB, layers ...[]tartest.Entry) (*overlay.Tree, error) {
	tb.Helper()
	var tars [][]byte
	for _, l := range layers {
		tars = append(tars, tartest.Tar(tb, l...))
	}
	return mergeTars(tb, tars...)
}

// readAll reads a regular file's whole content through Tree.Open.
func readAll(tr *overlay.Tree, id overlay.NodeID) ([]byte, error) {
	ra, err := tr.Open(id)
	if err != nil {
		return nil, err
	}
	size := tr.Attr(id).Size
	buf := make([]byte, size)
	n, err := ra.ReadAt(buf, 0)
	if int64(n) == size && (err == nil || err == io.EOF) {
		return buf, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return buf[:n], err
}

func fmtMTime(in *overlay.Inode) string {
	switch {
	case in.ModSec == tartest.DefaultMTime.Unix() && in.ModNsec == 0:
		return "D"
	case in.ModSec == 0 && in.ModNsec == 0:
		return "0"
	}
	return fmt.Sprintf("%d.%09d", in.ModSec, in.ModNsec)
}

// dump lists the tree depth-first in name order (root as "." when
// withRoot). File contents are read through Tree.Open.
func dump(tb testing.TB, tr *overlay.Tree, withRoot bool) []string {
	tb.Helper()
	type item struct {
		path string
		id   overlay.NodeID
	}
	var items []item
	var rec func(id overlay.NodeID, p string)
	rec = func(id overlay.NodeID, p string) {
		items = append(items, item{p, id})
		if tr.Attr(id).Kind != layerindex.KindDir {
			return
		}
		first, n := tr.Children(id)
		for i := 0; i < n; i++ {
			c := first + overlay.NodeID(i)
			cp := tr.Name(c)
			if p != "." {
				cp = p + "/" + cp
			}
			rec(c, cp)
		}
	}
	rec(tr.Root(), ".")
	byIno := map[uint64][]string{}
	for _, it := range items {
		if in := tr.Attr(it.id); in.Kind != layerindex.KindDir {
			byIno[in.Ino] = append(byIno[in.Ino], it.path)
		}
	}
	var out []string
	for _, it := range items {
		if it.path == "." && !withRoot {
			continue
		}
		in := tr.Attr(it.id)
		content := "-"
		switch in.Kind {
		case layerindex.KindReg:
			b, err := readAll(tr, it.id)
			if err != nil {
				content = "ERR(" + err.Error() + ")"
			} else {
				content = fmt.Sprintf("%q", b)
			}
		case layerindex.KindSymlink:
			content = "->" + in.Link
		case layerindex.KindChar, layerindex.KindBlock:
			content = fmt.Sprintf("%d,%d", in.DevMajor, in.DevMinor)
		}
		group := "-"
		if names := byIno[in.Ino]; in.Kind != layerindex.KindDir && len(names) > 1 {
			group = "=" + names[0]
		}
		xs := "-"
		if len(in.Xattrs) > 0 {
			var parts []string
			for _, x := range in.Xattrs {
				parts = append(parts, fmt.Sprintf("%s=%q", x.Name, x.Value))
			}
			xs = strings.Join(parts, ",")
		}
		size := in.Size
		if in.Kind == layerindex.KindDir {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %s %04o %d:%d %d %s %s %d %s %s",
			it.path, in.Kind, in.Mode, in.UID, in.GID, size, content, group, in.Nlink, xs, fmtMTime(&in)))
	}
	return out
}

// checkInvariants verifies the structural promises of Tree that hold for
// every merge result, whatever the input (used by the fuzzer too), and runs
// fstest.TestFS when every symlink resolves (fstest opens every name, so a
// dangling link would be reported as an error of the FS).
func checkInvariants(tb testing.TB, tr *overlay.Tree) {
	tb.Helper()
	// Inode identity is the storage slot (InodeIndex): hardlinks share one.
	namesOf := map[uint32][]overlay.NodeID{}
	inoOwner := map[uint64]uint32{}
	var paths []string
	var symlinks []string
	special := false
	count := 0
	var rec func(id overlay.NodeID, p string)
	rec = func(id overlay.NodeID, p string) {
		count++
		in := tr.Attr(id)
		slot := tr.InodeIndex(id)
		namesOf[slot] = append(namesOf[slot], id)
		if o, ok := inoOwner[in.Ino]; ok && o != slot {
			tb.Errorf("%s: Ino %d shared by two different inodes", p, in.Ino)
		}
		inoOwner[in.Ino] = slot
		if w, ok := tr.Walk(p); !ok || w != id {
			tb.Errorf("%s: Walk(Path) = %d,%v, want %d", p, w, ok, id)
		}
		if want := map[bool]string{true: "", false: p}[p == "."]; tr.Path(id) != want {
			tb.Errorf("Path(%d) = %q, want %q", id, tr.Path(id), want)
		}
		if in.Mode&^0o7777 != 0 {
			tb.Errorf("%s: mode %o has bits beyond 07777", p, in.Mode)
		}
		switch in.Kind {
		case layerindex.KindSymlink:
			symlinks = append(symlinks, p)
			if in.Size != int64(len(in.Link)) {
				tb.Errorf("%s: symlink size %d, target %q", p, in.Size, in.Link)
			}
		case layerindex.KindChar, layerindex.KindBlock, layerindex.KindFIFO:
			special = true
		case layerindex.KindReg:
			if b, err := readAll(tr, id); err != nil {
				tb.Errorf("%s: read: %v", p, err)
			} else if int64(len(b)) != in.Size {
				tb.Errorf("%s: read %d bytes, size %d", p, len(b), in.Size)
			}
		}
		if in.Kind != layerindex.KindDir {
			return
		}
		first, n := tr.Children(id)
		subdirs := 0
		prev := ""
		for i := 0; i < n; i++ {
			c := first + overlay.NodeID(i)
			name := tr.Name(c)
			if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
				tb.Errorf("%s: bad child name %q", p, name)
			}
			if strings.HasPrefix(name, ".wh.") {
				// layer.md: no file or directory can have a name beginning
				// with .wh.; one appears only as the implied parent of
				// entries stored below it (as umoci and containerd make
				// it), never from an entry of that name (a whiteout), and
				// never AUFS metadata.
				if in := tr.Attr(c); in.Kind != layerindex.KindDir || in.Layer != -1 || strings.HasPrefix(name, ".wh..wh.") {
					tb.Errorf("%s: whiteout-prefixed name %q is visible as %s from layer %d (only implied directories may be)", p, name, in.Kind, in.Layer)
				}
			}
			if i > 0 && name <= prev {
				tb.Errorf("%s: children not sorted/unique: %q after %q", p, name, prev)
			}
			prev = name
			if tr.Parent(c) != id {
				tb.Errorf("%s/%s: Parent = %d, want %d", p, name, tr.Parent(c), id)
			}
			if l, ok := tr.Lookup(id, name); !ok || l != c {
				tb.Errorf("%s: Lookup(%q) = %d,%v, want %d", p, name, l, ok, c)
			}
			if tr.Attr(c).Kind == layerindex.KindDir {
				subdirs++
			}
			cp := name
			if p != "." {
				cp = p + "/" + name
			}
			paths = append(paths, cp)
			rec(c, cp)
		}
		if in.Nlink != uint32(2+subdirs) {
			tb.Errorf("%s: directory Nlink %d, want 2+%d subdirectories", p, in.Nlink, subdirs)
		}
	}
	rec(tr.Root(), ".")
	if count != tr.Len() {
		tb.Errorf("walked %d names, Len() = %d (unreachable nodes?)", count, tr.Len())
	}
	for _, ids := range namesOf {
		in := tr.Attr(ids[0])
		if in.Kind == layerindex.KindDir {
			if len(ids) != 1 {
				tb.Errorf("directory inode %d has %d names", in.Ino, len(ids))
			}
			continue
		}
		if int(in.Nlink) != len(ids) {
			tb.Errorf("%s: Nlink %d, but %d names share Ino %d", tr.Path(ids[0]), in.Nlink, len(ids), in.Ino)
		}
		minID := ids[0]
		for _, id := range ids {
			minID = min(minID, id)
		}
		if in.Ino != uint64(minID) {
			tb.Errorf("%s: Ino %d, want the NodeID of its first name %d", tr.Path(ids[0]), in.Ino, minID)
		}
	}
	fsys := tr.FS()
	for _, s := range symlinks {
		if _, err := fs.Stat(fsys, s); err != nil {
			return // dangling or looping link: fstest would (rightly) trip on it
		}
	}
	if special {
		// fstest reads every non-directory to EOF; reading a device or a
		// FIFO of the FS view fails (TestMergeFS covers that on its own),
		// so keep that one failure out of every other test.
		return
	}
	if err := fstest.TestFS(fsys, paths...); err != nil {
		tb.Errorf("fstest.TestFS: %v", err)
	}
}

var (
	t1 = time.Unix(1000, 0)
	t2 = time.Unix(2000, 500) // sub-second: written as PAX
)

func raw(name string, typ byte, link string, mode int64) tartest.Entry {
	return tartest.Raw(&tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: mode, ModTime: tartest.DefaultMTime}, nil)
}

func rawFile(name, content string) tartest.Entry {
	return tartest.Raw(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content)), ModTime: tartest.DefaultMTime}, []byte(content))
}

type L = []tartest.Entry

type mergeCase struct {
	name   string
	layers []L
	want   []string
	root   bool  // dump includes the root as "."
	err    error // Merge (or Build) must fail with an error wrapping this
	// orErr: a failure wrapping orErr is accepted instead of want (for inputs
	// the spec rules out, where rejecting and ignoring are both safe).
	orErr error
}

var (
	dir  = tartest.Dir
	file = tartest.File
	sym  = tartest.Symlink
	hard = tartest.Hardlink
	wh   = tartest.Whiteout
	opq  = tartest.Opaque
)

func whiteoutCases() []mergeCase {
	base := L{dir("etc", 0o755), file("etc/a", "A", 0o644), file("etc/b", "B", 0o644)}
	return []mergeCase{
		{
			name:   "file",
			layers: []L{base, {wh("etc/a")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			name: "directory subtree",
			layers: []L{
				{dir("a", 0o755), dir("a/b", 0o755), file("a/b/c", "C", 0o644), dir("a/b/d", 0o700), file("a/b/d/e", "E", 0o644), file("a/f", "F", 0o644)},
				{wh("a/b")},
			},
			want: []string{
				`a dir 0755 0:0 0 - - 2 - D`,
				`a/f file 0644 0:0 1 "F" - 1 - D`,
			},
		},
		{
			name:   "missing target is a no-op",
			layers: []L{base, {wh("etc/nope")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/a file 0644 0:0 1 "A" - 1 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			// The whiteout's parent is not created: a whiteout adds nothing.
			name:   "missing parent is a no-op",
			layers: []L{{file("x", "X", 0o644)}, {wh("nodir/sub/x")}},
			want:   []string{`x file 0644 0:0 1 "X" - 1 - D`},
		},
		{
			// layer.md: whiteouts apply to lower layers only, whatever the
			// entry order, so a same-layer x survives .wh.x.
			name:   "same layer, whiteout first",
			layers: []L{{file("x", "old", 0o644)}, {wh("x"), file("x", "new", 0o600)}},
			want:   []string{`x file 0600 0:0 3 "new" - 1 - D`},
		},
		{
			name:   "same layer, whiteout last",
			layers: []L{{file("x", "old", 0o644)}, {file("x", "new", 0o600), wh("x")}},
			want:   []string{`x file 0600 0:0 3 "new" - 1 - D`},
		},
		{
			name:   "same layer, no lower",
			layers: []L{{file("d/x", "new", 0o600), wh("d/x")}},
			want: []string{
				`d dir 0755 0:0 0 - - 2 - 0`,
				`d/x file 0600 0:0 3 "new" - 1 - D`,
			},
		},
		{
			name: "same layer directory, whiteout last",
			layers: []L{
				{dir("d", 0o755), file("d/old", "O", 0o644)},
				{dir("d", 0o700), file("d/new", "N", 0o644), wh("d")},
			},
			// .wh.d removes the lower d (and d/old); the layer's own d stays.
			want: []string{
				`d dir 0700 0:0 0 - - 2 - D`,
				`d/new file 0644 0:0 1 "N" - 1 - D`,
			},
		},
		{
			name: "whiteout then re-add in a later layer",
			layers: []L{
				{dir("d", 0o755), file("d/x", "1", 0o644), file("d/y", "Y", 0o644)},
				{wh("d")},
				{dir("d", 0o700), file("d/x", "3", 0o644)},
			},
			want: []string{
				`d dir 0700 0:0 0 - - 2 - D`,
				`d/x file 0644 0:0 1 "3" - 1 - D`,
			},
		},
		{
			name:   "through a symlinked parent (relative)",
			layers: []L{append(L{sym("localetc", "etc")}, base...), {wh("localetc/a")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
				`localetc symlink 0777 0:0 3 ->etc - 1 - D`,
			},
		},
		{
			name:   "through a symlinked parent (absolute)",
			layers: []L{append(L{sym("localetc", "/etc")}, base...), {wh("localetc/a")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
				`localetc symlink 0777 0:0 4 ->/etc - 1 - D`,
			},
		},
		{
			name:   "through a symlinked parent (.. confined to the root)",
			layers: []L{append(L{dir("usr", 0o755), sym("usr/e", "../../../etc")}, base...), {wh("usr/e/a")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
				`usr dir 0755 0:0 0 - - 2 - D`,
				`usr/e symlink 0777 0:0 12 ->../../../etc - 1 - D`,
			},
		},
		{
			name: "of a symlink removes the link, not its target",
			layers: []L{
				append(L{sym("la", "etc/a"), sym("ld", "etc")}, base...),
				{wh("la"), wh("ld")},
			},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/a file 0644 0:0 1 "A" - 1 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			// layer.md says no file or directory can have a name beginning
			// with .wh., but says nothing of entries below one. umoci 0.4.7
			// and containerd create them, with .wh.etc as an implied parent
			// (0755 root, the extraction time as mtime): the implied
			// parent is no whiteout (etc stays), it only holds somefile.
			// tests/spec_test.go compares this with umoci unpack.
			name:   "whiteout name as a directory component",
			layers: []L{base, {file(".wh.etc/somefile", "S", 0o644)}},
			want: []string{
				`.wh.etc dir 0755 0:0 0 - - 2 - 0`,
				`.wh.etc/somefile file 0644 0:0 1 "S" - 1 - D`,
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/a file 0644 0:0 1 "A" - 1 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			// A .wh.etc directory entry is the whiteout of etc (its own
			// mode and owner are not used), and entries below it appear
			// under the implied .wh.etc: what umoci and containerd leave.
			name:   "whiteout directory with entries below",
			layers: []L{base, {dir(".wh.etc", 0o711, tartest.Owner(5, 6)), file(".wh.etc/child", "C", 0o600), dir(".wh.etc/sub", 0o750), file(".wh.etc/sub/z", "Z", 0o644)}},
			want: []string{
				`.wh.etc dir 0755 0:0 0 - - 3 - 0`,
				`.wh.etc/child file 0600 0:0 1 "C" - 1 - D`,
				`.wh.etc/sub dir 0750 0:0 0 - - 2 - D`,
				`.wh.etc/sub/z file 0644 0:0 1 "Z" - 1 - D`,
			},
		},
		{
			// A whiteout below a .wh. directory hides that path of the
			// lower layers (nothing here), and does not create its parent;
			// a hardlink may name a file below a .wh. directory.
			name: "whiteouts and hardlinks below a .wh. directory",
			layers: []L{base, {file(".wh.etc", "", 0o644), file(".wh.etc/.wh.a", "", 0o644), file(".wh.x/.wh.y", "", 0o644),
				file(".wh.etc/f", "F", 0o644), hard("hl", ".wh.etc/f")}},
			want: []string{
				`.wh.etc dir 0755 0:0 0 - - 2 - 0`,
				`.wh.etc/f file 0644 0:0 1 "F" =.wh.etc/f 2 - D`,
				`hl file 0644 0:0 1 "F" =.wh.etc/f 2 - D`,
			},
		},
		{
			// A later layer's whiteout inside a .wh. directory removes an
			// earlier layer's entry there, like anywhere else.
			name:   "lower entry below a .wh. directory whited out",
			layers: []L{{file(".wh.d/x", "X", 0o644), file(".wh.d/y", "Y", 0o644)}, {file(".wh.d/.wh.x", "", 0o644)}},
			want: []string{
				`.wh.d dir 0755 0:0 0 - - 2 - 0`,
				`.wh.d/y file 0644 0:0 1 "Y" - 1 - D`,
			},
		},
		{
			name:   "stored as a hardlink entry",
			layers: []L{base, {hard("etc/.wh.a", "etc/b")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			name:   "stored as a hardlink to a missing target",
			layers: []L{base, {hard("etc/.wh.a", "nowhere")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
			},
		},
		{
			// Whiteout of a name below a lower-layer regular file: the
			// target cannot exist, so like any whiteout of a missing path it
			// changes nothing (a safe extractor's RemoveAll of "f/x" is a
			// no-op). Failing the whole image here would be disproportionate.
			name:   "below a lower regular file is a no-op",
			layers: []L{{file("f", "F", 0o644)}, {wh("f/x")}},
			want:   []string{`f file 0644 0:0 1 "F" - 1 - D`},
		},
		{
			name: "AUFS metadata has no effect and never shows",
			layers: []L{
				{file("x", "X", 0o644)},
				{file(".wh..wh.aufs", "", 0o644), dir(".wh..wh.plnk", 0o700), dir(".wh..wh.orph", 0o700), file("d/.wh..wh.aufs", "", 0o644)},
			},
			// Like any whiteout, d/.wh..wh.aufs does not create its parent.
			want: []string{`x file 0644 0:0 1 "X" - 1 - D`},
		},
		{
			// Docker's AUFS driver keeps hardlink bookkeeping files inside
			// .wh..wh.plnk/; that directory and its content never show.
			name: "AUFS plnk directory content never shows",
			layers: []L{
				{file("x", "X", 0o644)},
				{dir(".wh..wh.plnk", 0o700), file(".wh..wh.plnk/1234.5678", "data", 0o644)},
			},
			orErr: overlay.ErrBadWhiteout,
			want:  []string{`x file 0644 0:0 1 "X" - 1 - D`},
		},
	}
}

func opaqueCases() []mergeCase {
	lower := L{dir("a", 0o755), file("a/x", "X", 0o644), dir("a/sub", 0o755), file("a/sub/z", "Z", 0o644), file("top", "T", 0o644)}
	want := []string{
		`a dir 0750 0:0 0 - - 3 - D`,
		`a/new file 0644 0:0 1 "N" - 1 - D`,
		`a/sub2 dir 0755 0:0 0 - - 2 - D`,
		`top file 0644 0:0 1 "T" - 1 - D`,
	}
	return []mergeCase{
		{
			name:   "marker first",
			layers: []L{lower, {dir("a", 0o750), opq("a"), file("a/new", "N", 0o644), dir("a/sub2", 0o755)}},
			want:   want,
		},
		{
			name:   "marker last",
			layers: []L{lower, {dir("a", 0o750), file("a/new", "N", 0o644), dir("a/sub2", 0o755), opq("a")}},
			want:   want,
		},
		{
			name:   "marker between siblings",
			layers: []L{lower, {dir("a", 0o750), file("a/new", "N", 0o644), opq("a"), dir("a/sub2", 0o755)}},
			want:   want,
		},
		{
			name:   "missing directory is a no-op",
			layers: []L{{file("top", "T", 0o644)}, {opq("nodir")}},
			want:   []string{`top file 0644 0:0 1 "T" - 1 - D`},
		},
		{
			name:   "missing directory with same-layer content",
			layers: []L{{file("top", "T", 0o644)}, {opq("nodir"), file("nodir/f", "F", 0o644)}},
			want: []string{
				`nodir dir 0755 0:0 0 - - 2 - 0`,
				`nodir/f file 0644 0:0 1 "F" - 1 - D`,
				`top file 0644 0:0 1 "T" - 1 - D`,
			},
		},
		{
			name:   "at the root",
			layers: []L{lower, {file("z", "Z", 0o600), opq("")}},
			root:   true,
			want: []string{
				`. dir 0755 0:0 0 - - 2 - 0`,
				`z file 0600 0:0 1 "Z" - 1 - D`,
			},
		},
		{
			name: "own entry changes attributes",
			layers: []L{
				{dir("a", 0o755, tartest.Owner(1, 1), tartest.Xattr("user.k", "v")), file("a/x", "X", 0o644)},
				{opq("a"), dir("a", 0o700, tartest.Owner(1000, 1000), tartest.MTime(t2))},
			},
			want: []string{`a dir 0700 1000:1000 0 - - 2 - 2000.000000500`},
		},
		{
			// `rm f; mkdir f` in a container on overlayfs: the new directory
			// is created over a whiteout and so marked opaque, and the
			// layer diff holds f/ and f/.wh..wh..opq while f is a regular
			// file below. The opaque marker hides lower children of the new
			// directory (there are none): it must not fail the merge.
			name: "directory over a lower file (rm f; mkdir f)",
			layers: []L{
				{file("f", "F", 0o644)},
				{dir("f", 0o755), opq("f"), file("f/new", "N", 0o644)},
			},
			want: []string{
				`f dir 0755 0:0 0 - - 2 - D`,
				`f/new file 0644 0:0 1 "N" - 1 - D`,
			},
		},
		{
			// Same with a lower symlink to a directory: the layer replaces
			// the link itself by an opaque directory (last components are
			// never followed). The marker is about the new directory f; it
			// must not reach through the old link and empty etc.
			name: "directory over a lower symlink (rm f; mkdir f)",
			layers: []L{
				{dir("etc", 0o755), file("etc/passwd", "P", 0o644), sym("f", "etc")},
				{dir("f", 0o755), opq("f"), file("f/new", "N", 0o644)},
			},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/passwd file 0644 0:0 1 "P" - 1 - D`,
				`f dir 0755 0:0 0 - - 2 - D`,
				`f/new file 0644 0:0 1 "N" - 1 - D`,
			},
		},
		{
			// .wh.D plus same-layer D/x: only the lower D goes; D comes back
			// as the layer's implicit parent of D/x (0755 root:root).
			name: "whiteout of dir plus same-layer child",
			layers: []L{
				{dir("D", 0o700, tartest.Owner(5, 5)), file("D/old", "O", 0o644), dir("D/sub", 0o755)},
				{wh("D"), file("D/x", "x", 0o644)},
			},
			want: []string{
				`D dir 0755 0:0 0 - - 2 - 0`,
				`D/x file 0644 0:0 1 "x" - 1 - D`,
			},
		},
		{
			name: "whiteout of dir plus same-layer child, child first",
			layers: []L{
				{dir("D", 0o700, tartest.Owner(5, 5)), file("D/old", "O", 0o644), dir("D/sub", 0o755)},
				{file("D/x", "x", 0o644), wh("D")},
			},
			want: []string{
				`D dir 0755 0:0 0 - - 2 - 0`,
				`D/x file 0644 0:0 1 "x" - 1 - D`,
			},
		},
		{
			name: "whiteout of dir plus same-layer dir entry",
			layers: []L{
				{dir("D", 0o700, tartest.Owner(5, 5)), file("D/old", "O", 0o644)},
				{file("D/x", "x", 0o644), wh("D"), dir("D", 0o711, tartest.Owner(6, 7))},
			},
			want: []string{
				`D dir 0711 6:7 0 - - 2 - D`,
				`D/x file 0644 0:0 1 "x" - 1 - D`,
			},
		},
	}
}

func collisionCases() []mergeCase {
	return []mergeCase{
		{
			name:   "file to dir",
			layers: []L{{file("p", "P", 0o644)}, {dir("p", 0o700), file("p/c", "C", 0o644)}},
			want: []string{
				`p dir 0700 0:0 0 - - 2 - D`,
				`p/c file 0644 0:0 1 "C" - 1 - D`,
			},
		},
		{
			name:   "dir to file",
			layers: []L{{dir("p", 0o755), file("p/c", "C", 0o644), dir("p/s", 0o755)}, {file("p", "F", 0o600)}},
			want:   []string{`p file 0600 0:0 1 "F" - 1 - D`},
		},
		{
			name: "symlink to dir",
			layers: []L{
				{dir("target", 0o755), file("target/t", "T", 0o644), sym("p", "target")},
				{dir("p", 0o700), file("p/c", "C", 0o644)},
			},
			want: []string{
				`p dir 0700 0:0 0 - - 2 - D`,
				`p/c file 0644 0:0 1 "C" - 1 - D`,
				`target dir 0755 0:0 0 - - 2 - D`,
				`target/t file 0644 0:0 1 "T" - 1 - D`,
			},
		},
		{
			name: "dir to symlink",
			layers: []L{
				{dir("p", 0o755), file("p/c", "C", 0o644), dir("elsewhere", 0o755)},
				{sym("p", "elsewhere")},
			},
			want: []string{
				`elsewhere dir 0755 0:0 0 - - 2 - D`,
				`p symlink 0777 0:0 9 ->elsewhere - 1 - D`,
			},
		},
		{
			name: "dir over dir replaces attributes, keeps children",
			layers: []L{
				{dir("d", 0o755, tartest.Owner(1, 1), tartest.Xattr("user.a", "1"), tartest.MTime(t1)), file("d/c", "C", 0o644)},
				{dir("d", 0o700, tartest.Owner(2, 3), tartest.MTime(t2))},
			},
			want: []string{
				`d dir 0700 2:3 0 - - 2 - 2000.000000500`,
				`d/c file 0644 0:0 1 "C" - 1 - D`,
			},
		},
		{
			name: "dir over dir replaces xattrs",
			layers: []L{
				{dir("d", 0o755, tartest.Xattr("user.a", "1")), file("d/c", "C", 0o644)},
				{dir("d", 0o755, tartest.Xattr("user.b", "2"))},
			},
			want: []string{
				`d dir 0755 0:0 0 - - 2 user.b="2" D`,
				`d/c file 0644 0:0 1 "C" - 1 - D`,
			},
		},
		{
			name: "dir over implicit dir",
			layers: []L{
				{file("d/c", "C", 0o644)},
				{dir("d", 0o750, tartest.Owner(4, 4))},
			},
			want: []string{
				`d dir 0750 4:4 0 - - 2 - D`,
				`d/c file 0644 0:0 1 "C" - 1 - D`,
			},
		},
		{
			name:   "duplicate file in one layer: last wins",
			layers: []L{{file("x", "1", 0o644), file("x", "22", 0o600, tartest.Owner(3, 3))}},
			want:   []string{`x file 0600 3:3 2 "22" - 1 - D`},
		},
		{
			name:   "duplicate: dir then file",
			layers: []L{{dir("y", 0o755), file("y/z", "Z", 0o644), file("y", "f", 0o644)}},
			want:   []string{`y file 0644 0:0 1 "f" - 1 - D`},
		},
		{
			name:   "duplicate: file then dir",
			layers: []L{{file("w", "w", 0o644), dir("w", 0o700)}},
			want:   []string{`w dir 0700 0:0 0 - - 2 - D`},
		},
		{
			name:   "duplicate: dir twice keeps children",
			layers: []L{{dir("d", 0o700, tartest.Owner(1, 1)), file("d/c", "C", 0o644), dir("d", 0o751)}},
			want: []string{
				`d dir 0751 0:0 0 - - 2 - D`,
				`d/c file 0644 0:0 1 "C" - 1 - D`,
			},
		},
		{
			name: "./ root entry sets root attributes",
			layers: []L{
				{dir("./", 0o700, tartest.Owner(1, 2), tartest.Xattr("user.r", "1")), file("f", "F", 0o644)},
			},
			root: true,
			want: []string{
				`. dir 0700 1:2 0 - - 2 user.r="1" D`,
				`f file 0644 0:0 1 "F" - 1 - D`,
			},
		},
		{
			name: "root entry in a later layer, as . and as /",
			layers: []L{
				{dir("./", 0o700, tartest.Owner(1, 2)), dir("sub", 0o755)},
				{dir(".", 0o750, tartest.MTime(t2))},
				{raw("/", tar.TypeDir, "", 0o751)},
			},
			root: true,
			want: []string{
				`. dir 0751 0:0 0 - - 3 - D`,
				`sub dir 0755 0:0 0 - - 2 - D`,
			},
		},
		{
			name:   "implicit parents are 0755 root:root",
			layers: []L{{file("a/b/c", "C", 0o600, tartest.Owner(7, 8))}},
			want: []string{
				`a dir 0755 0:0 0 - - 3 - 0`,
				`a/b dir 0755 0:0 0 - - 2 - 0`,
				`a/b/c file 0600 7:8 1 "C" - 1 - D`,
			},
		},
	}
}

func symlinkParentCases() []mergeCase {
	usrlib := func(target string) []L {
		return []L{
			{dir("usr", 0o755), dir("usr/lib", 0o755), sym("lib", target)},
			{file("lib/x", "X", 0o644)},
		}
	}
	wantUsrLib := func(target string) []string {
		return []string{
			fmt.Sprintf(`lib symlink 0777 0:0 %d ->%s - 1 - D`, len(target), target),
			`usr dir 0755 0:0 0 - - 3 - D`,
			`usr/lib dir 0755 0:0 0 - - 2 - D`,
			`usr/lib/x file 0644 0:0 1 "X" - 1 - D`,
		}
	}
	var cs []mergeCase
	for _, target := range []string{"usr/lib", "/usr/lib", "../../../../usr/lib", "/../usr/./lib/", "./usr//lib"} {
		cs = append(cs, mergeCase{name: "lower symlink parent " + target, layers: usrlib(target), want: wantUsrLib(target)})
	}
	cs = append(cs,
		mergeCase{
			name:   "symlink parent to a missing dir creates it",
			layers: []L{{sym("lib", "usr/lib")}, {file("lib/x", "X", 0o644)}},
			want: []string{
				`lib symlink 0777 0:0 7 ->usr/lib - 1 - D`,
				`usr dir 0755 0:0 0 - - 3 - 0`,
				`usr/lib dir 0755 0:0 0 - - 2 - 0`,
				`usr/lib/x file 0644 0:0 1 "X" - 1 - D`,
			},
		},
		mergeCase{
			name:   "symlink chain",
			layers: []L{{dir("real", 0o755), sym("a", "b"), sym("b", "real")}, {file("a/x", "X", 0o644)}},
			want: []string{
				`a symlink 0777 0:0 1 ->b - 1 - D`,
				`b symlink 0777 0:0 4 ->real - 1 - D`,
				`real dir 0755 0:0 0 - - 2 - D`,
				`real/x file 0644 0:0 1 "X" - 1 - D`,
			},
		},
		mergeCase{
			name:   "relative symlink in a subdirectory",
			layers: []L{{dir("usr", 0o755), dir("usr/lib64", 0o755), sym("usr/lib", "lib64")}, {file("usr/lib/x", "X", 0o644)}},
			want: []string{
				`usr dir 0755 0:0 0 - - 3 - D`,
				`usr/lib symlink 0777 0:0 5 ->lib64 - 1 - D`,
				`usr/lib64 dir 0755 0:0 0 - - 2 - D`,
				`usr/lib64/x file 0644 0:0 1 "X" - 1 - D`,
			},
		},
		mergeCase{
			name:   "same-layer symlink parent",
			layers: []L{{dir("usr", 0o755), dir("usr/lib", 0o755), sym("lib", "usr/lib"), file("lib/x", "X", 0o644)}},
			want:   wantUsrLib("usr/lib"),
		},
		mergeCase{
			name:   "hostile symlink target stays inside the root",
			layers: []L{{sym("evil", "../../etc")}, {file("evil/passwd", "pwned", 0o644)}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - 0`,
				`etc/passwd file 0644 0:0 5 "pwned" - 1 - D`,
				`evil symlink 0777 0:0 9 ->../../etc - 1 - D`,
			},
		},
		mergeCase{
			name:   "parent is a regular file",
			layers: []L{{file("f", "F", 0o644)}, {file("f/x", "X", 0o644)}},
			err:    overlay.ErrNotDir,
		},
		mergeCase{
			name:   "parent is a regular file, same layer",
			layers: []L{{file("f", "F", 0o644), dir("f/d", 0o755)}},
			err:    overlay.ErrNotDir,
		},
		mergeCase{
			name:   "parent is a symlink to a regular file",
			layers: []L{{file("f", "F", 0o644), sym("l", "f")}, {file("l/x", "X", 0o644)}},
			err:    overlay.ErrNotDir,
		},
		mergeCase{
			name:   "symlink loop",
			layers: []L{{sym("a", "b"), sym("b", "a")}, {file("a/x", "X", 0o644)}},
			err:    overlay.ErrSymlinkLoop,
		},
		mergeCase{
			name:   "self symlink loop",
			layers: []L{{sym("s", "s"), file("s/x", "X", 0o644)}},
			err:    overlay.ErrSymlinkLoop,
		},
	)
	return cs
}

func hardlinkCases() []mergeCase {
	return []mergeCase{
		{
			name:   "within a layer",
			layers: []L{{file("a", "A", 0o640, tartest.Owner(1, 1)), hard("b", "a"), dir("d", 0o755), hard("d/c", "a")}},
			want: []string{
				`a file 0640 1:1 1 "A" =a 3 - D`,
				`b file 0640 1:1 1 "A" =a 3 - D`,
				`d dir 0755 0:0 0 - - 2 - D`,
				`d/c file 0640 1:1 1 "A" =a 3 - D`,
			},
		},
		{
			name:   "chain of links",
			layers: []L{{file("a", "A", 0o644), hard("b", "a"), hard("c", "b")}},
			want: []string{
				`a file 0644 0:0 1 "A" =a 3 - D`,
				`b file 0644 0:0 1 "A" =a 3 - D`,
				`c file 0644 0:0 1 "A" =a 3 - D`,
			},
		},
		{
			name:   "to a file of a lower layer",
			layers: []L{{file("a", "A", 0o644)}, {hard("b", "a")}},
			want: []string{
				`a file 0644 0:0 1 "A" =a 2 - D`,
				`b file 0644 0:0 1 "A" =a 2 - D`,
			},
		},
		{
			name:   "through a symlinked directory",
			layers: []L{{dir("usr", 0o755), dir("usr/lib", 0o755), file("usr/lib/a", "A", 0o644), sym("lib", "usr/lib")}, {hard("b", "lib/a")}},
			want: []string{
				`b file 0644 0:0 1 "A" =b 2 - D`,
				`lib symlink 0777 0:0 7 ->usr/lib - 1 - D`,
				`usr dir 0755 0:0 0 - - 3 - D`,
				`usr/lib dir 0755 0:0 0 - - 2 - D`,
				`usr/lib/a file 0644 0:0 1 "A" =b 2 - D`,
			},
		},
		{
			name:   "absolute target",
			layers: []L{{dir("etc", 0o755), file("etc/a", "A", 0o644), hard("b", "/etc/a")}},
			want: []string{
				`b file 0644 0:0 1 "A" =b 2 - D`,
				`etc dir 0755 0:0 0 - - 2 - D`,
				`etc/a file 0644 0:0 1 "A" =b 2 - D`,
			},
		},
		{
			name: "later layer replaces one name",
			layers: []L{
				{file("a", "A", 0o644), hard("b", "a"), hard("c", "a")},
				{file("b", "B", 0o600)},
			},
			want: []string{
				`a file 0644 0:0 1 "A" =a 2 - D`,
				`b file 0600 0:0 1 "B" - 1 - D`,
				`c file 0644 0:0 1 "A" =a 2 - D`,
			},
		},
		{
			name:   "relinked to another file in the same layer",
			layers: []L{{file("a", "A", 0o644), file("x", "X", 0o600), hard("b", "a"), hard("b", "x")}},
			want: []string{
				`a file 0644 0:0 1 "A" - 1 - D`,
				`b file 0600 0:0 1 "X" =b 2 - D`,
				`x file 0600 0:0 1 "X" =b 2 - D`,
			},
		},
		{
			name:   "target whited out in a later layer",
			layers: []L{{file("a", "A", 0o644), hard("b", "a")}, {wh("a")}},
			want:   []string{`b file 0644 0:0 1 "A" - 1 - D`},
		},
		{
			name:   "directory holding a link whited out",
			layers: []L{{file("a", "A", 0o644), dir("d", 0o755), hard("d/b", "a")}, {wh("d")}},
			want:   []string{`a file 0644 0:0 1 "A" - 1 - D`},
		},
		{
			name:   "to a symlink",
			layers: []L{{dir("d", 0o755), sym("s", "d"), hard("h", "s")}},
			want: []string{
				`d dir 0755 0:0 0 - - 2 - D`,
				`h symlink 0777 0:0 1 ->d =h 2 - D`,
				`s symlink 0777 0:0 1 ->d =h 2 - D`,
			},
		},
		{
			name: "to devices and a fifo",
			layers: []L{{
				tartest.Char("c", 1, 3), hard("c2", "c"),
				tartest.Block("b", 8, 1), hard("b2", "b"),
				tartest.FIFO("f"), hard("f2", "f"),
			}},
			want: []string{
				`b block 0660 0:0 0 8,1 =b 2 - D`,
				`b2 block 0660 0:0 0 8,1 =b 2 - D`,
				`c char 0666 0:0 0 1,3 =c 2 - D`,
				`c2 char 0666 0:0 0 1,3 =c 2 - D`,
				`f fifo 0644 0:0 0 - =f 2 - D`,
				`f2 fifo 0644 0:0 0 - =f 2 - D`,
			},
		},
		{
			name:   "to a directory",
			layers: []L{{dir("d", 0o755), hard("h", "d")}},
			err:    overlay.ErrLinkTarget,
		},
		{
			name:   "to the root directory",
			layers: []L{{hard("h", "./")}},
			err:    layerindex.ErrFormat,
		},
		{
			name:   "to a missing target",
			layers: []L{{file("a", "A", 0o644), hard("h", "nope")}},
			err:    overlay.ErrLinkTarget,
		},
		{
			name:   "before its target in tar order",
			layers: []L{{hard("h", "a"), file("a", "A", 0o644)}},
			err:    overlay.ErrLinkTarget,
		},
		{
			name:   "to a target whited out below",
			layers: []L{{file("a", "A", 0o644)}, {wh("a")}, {hard("h", "a")}},
			err:    overlay.ErrLinkTarget,
		},
	}
}

func hostileCases() []mergeCase {
	return []mergeCase{
		{name: "../x", layers: []L{{rawFile("../x", "X")}}, err: layerindex.ErrUnsafePath},
		{name: "a/../../x", layers: []L{{rawFile("a/../../x", "X")}}, err: layerindex.ErrUnsafePath},
		{name: "/../x", layers: []L{{rawFile("/../x", "X")}}, err: layerindex.ErrUnsafePath},
		{name: "dir ../", layers: []L{{raw("../", tar.TypeDir, "", 0o755)}}, err: layerindex.ErrUnsafePath},
		{name: "hardlink target ../../etc/passwd", layers: []L{{rawFile("a", "A"), raw("b", tar.TypeLink, "../../etc/passwd", 0o644)}}, err: layerindex.ErrUnsafePath},
		{name: "hardlink target a/../../x", layers: []L{{rawFile("a", "A"), raw("b", tar.TypeLink, "a/../../x", 0o644)}}, err: layerindex.ErrUnsafePath},
		{name: "whiteout ../.wh.x", layers: []L{{rawFile("../.wh.x", "")}}, err: layerindex.ErrUnsafePath},
		{
			name:   "absolute names are confined",
			layers: []L{{rawFile("/etc/x", "X"), raw("/etc/y", tar.TypeLink, "/etc/x", 0o644), rawFile("/etc/a/../b", "B")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - 0`,
				`etc/b file 0644 0:0 1 "B" - 1 - D`,
				`etc/x file 0644 0:0 1 "X" =etc/x 2 - D`,
				`etc/y file 0644 0:0 1 "X" =etc/x 2 - D`,
			},
		},
		{
			name:   "absolute whiteout",
			layers: []L{{rawFile("/etc/x", "X"), rawFile("/etc/y", "Y")}, {rawFile("/etc/.wh.x", "")}},
			want: []string{
				`etc dir 0755 0:0 0 - - 2 - 0`,
				`etc/y file 0644 0:0 1 "Y" - 1 - D`,
			},
		},
		{name: ".wh.", layers: []L{{file("x", "X", 0o644)}, {file(".wh.", "", 0o644)}}, err: overlay.ErrBadWhiteout},
		{name: ".wh..", layers: []L{{file("x", "X", 0o644)}, {file("d/.wh..", "", 0o644)}}, err: overlay.ErrBadWhiteout},
		{name: ".wh...", layers: []L{{file("x", "X", 0o644)}, {file(".wh...", "", 0o644)}}, err: overlay.ErrBadWhiteout},
		{
			name: "names are normalised",
			layers: []L{{
				raw("./a//b/", tar.TypeDir, "", 0o700),
				rawFile("./a//b//c", "C"),
				rawFile("a/./d", "D"),
				rawFile("a/b/../e", "E"),
				raw(".//a/l", tar.TypeLink, "./a//d", 0o644),
			}},
			want: []string{
				`a dir 0755 0:0 0 - - 3 - 0`,
				`a/b dir 0700 0:0 0 - - 2 - D`,
				`a/b/c file 0644 0:0 1 "C" - 1 - D`,
				`a/d file 0644 0:0 1 "D" =a/d 2 - D`,
				`a/e file 0644 0:0 1 "E" - 1 - D`,
				`a/l file 0644 0:0 1 "D" =a/d 2 - D`,
			},
		},
	}
}

func runMergeCases(t *testing.T, cases []mergeCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tr, err := mergeEntries(t, c.layers...)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want one wrapping %v", err, c.err)
				}
				return
			}
			if err != nil {
				if c.orErr != nil && errors.Is(err, c.orErr) {
					return
				}
				t.Fatalf("Merge: %v", err)
			}
			got := dump(t, tr, c.root)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("tree mismatch (-want +got):\n%s", diff)
			}
			checkInvariants(t, tr)
		})
	}
}

func TestMergeWhiteout(t *testing.T)      { runMergeCases(t, whiteoutCases()) }
func TestMergeOpaque(t *testing.T)        { runMergeCases(t, opaqueCases()) }
func TestMergeCollision(t *testing.T)     { runMergeCases(t, collisionCases()) }
func TestMergeSymlinkParent(t *testing.T) { runMergeCases(t, symlinkParentCases()) }
func TestMergeHardlink(t *testing.T)      { runMergeCases(t, hardlinkCases()) }
func TestMergeHostile(t *testing.T)       { runMergeCases(t, hostileCases()) }

// TestMergeErrorsNameEntry checks that merge failures say which layer and
// entry are at fault.
func TestMergeErrorsNameEntry(t *testing.T) {
	_, err := mergeEntries(t, L{file("f", "F", 0o644)}, L{file("x", "X", 0o644), file("f/x", "X", 0o644)})
	var me *overlay.MergeError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a *MergeError", err)
	}
	if me.Layer != 1 || me.Entry != "f/x" || !errors.Is(err, overlay.ErrNotDir) {
		t.Errorf("MergeError = {Layer:%d Entry:%q Err:%v}, want layer 1, entry f/x, ErrNotDir", me.Layer, me.Entry, me.Err)
	}
}

// TestMergeProvenance checks Inode.Layer/Entry: which layer's entry a file
// comes from (-1 for implicit directories), since content reads use it.
func TestMergeProvenance(t *testing.T) {
	tr, err := mergeEntries(t,
		L{dir("d", 0o755), file("d/a", "A", 0o644), file("b", "B", 0o644)},
		L{file("d/a", "A2", 0o644), hard("c", "b"), file("e/f", "F", 0o644)},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path         string
		layer, entry int32
	}{
		{"d", 0, 0}, {"d/a", 1, 0}, {"b", 0, 2}, {"c", 0, 2}, {"e", -1, -1}, {"e/f", 1, 2},
	} {
		id, ok := tr.Walk(c.path)
		if !ok {
			t.Errorf("%s: missing", c.path)
			continue
		}
		in := tr.Attr(id)
		if in.Layer != c.layer || in.Entry != c.entry {
			t.Errorf("%s: Layer,Entry = %d,%d, want %d,%d", c.path, in.Layer, in.Entry, c.layer, c.entry)
		}
	}
	if r := tr.Attr(tr.Root()); r.Layer != -1 || r.Entry != -1 {
		t.Errorf("implicit root: Layer,Entry = %d,%d, want -1,-1", r.Layer, r.Entry)
	}
}

// TestMergeFS checks the io/fs view on a tree with every kind of file:
// symlinks are followed by Open/Stat (confined to the root) and not by
// Lstat/ReadLink; Sys() is the *Inode.
func TestMergeFS(t *testing.T) {
	tr, err := mergeEntries(t,
		L{
			dir("etc", 0o755), file("etc/passwd", "root", 0o644, tartest.Xattr("user.x", "\x00y")),
			sym("abs", "/etc/passwd"), sym("up", "../../etc"), sym("loop", "loop"), sym("dangling", "nope"),
			tartest.Char("null", 1, 3), tartest.FIFO("fifo"),
			file("suid", "S", 0o4755), dir("tmp", 0o1777), file("sgid", "G", 0o2711),
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	fsys := tr.FS()
	if b, err := fs.ReadFile(fsys, "abs"); err != nil || string(b) != "root" {
		t.Errorf("ReadFile(abs) = %q, %v", b, err)
	}
	if b, err := fs.ReadFile(fsys, "up/passwd"); err != nil || string(b) != "root" {
		t.Errorf("ReadFile(up/passwd) = %q, %v", b, err)
	}
	if _, err := fs.Stat(fsys, "loop"); err == nil {
		t.Errorf("Stat(loop) succeeded")
	}
	if _, err := fs.Stat(fsys, "dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(dangling) = %v, want ErrNotExist", err)
	}
	rl := fsys.(fs.ReadLinkFS)
	if l, err := rl.ReadLink("up"); err != nil || l != "../../etc" {
		t.Errorf("ReadLink(up) = %q, %v", l, err)
	}
	if fi, err := rl.Lstat("up"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(up) = %v, %v", fi, err)
	}
	for _, c := range []struct {
		name string
		mode fs.FileMode
	}{
		{"null", fs.ModeDevice | fs.ModeCharDevice | 0o666},
		{"fifo", fs.ModeNamedPipe | 0o644},
		{"suid", fs.ModeSetuid | 0o755},
		{"sgid", fs.ModeSetgid | 0o711},
		{"tmp", fs.ModeDir | fs.ModeSticky | 0o777},
	} {
		fi, err := rl.Lstat(c.name)
		if err != nil || fi.Mode() != c.mode {
			t.Errorf("Lstat(%s).Mode() = %v, %v; want %v", c.name, fi.Mode(), err, c.mode)
		}
	}
	fi, err := fs.Stat(fsys, "etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	in, ok := fi.Sys().(*overlay.Inode)
	if !ok || len(in.Xattrs) != 1 || in.Xattrs[0] != (layerindex.Xattr{Name: "user.x", Value: "\x00y"}) {
		t.Errorf("Sys() = %#v", fi.Sys())
	}
	// fstest without the bad links. fstest.TestFS reads every
	// non-directory, non-symlink file to EOF (as io/fs.ReadFile would):
	// a device or FIFO of size 0 must read as empty (0, io.EOF), the way
	// Size() says, not fail with "not a regular file".
	tr2, err := mergeEntries(t, L{
		dir("etc", 0o755), file("etc/passwd", "root", 0o644), sym("abs", "/etc/passwd"), sym("up", "../../etc"),
		tartest.Char("null", 1, 3), tartest.FIFO("fifo"), file("suid", "S", 0o4755), dir("tmp", 0o1777),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(tr2.FS(), "etc/passwd", "abs", "up", "null", "fifo", "suid", "tmp"); err != nil {
		t.Error(err)
	}
}

// TestMergeOrderIndependence: whiteouts and opaque markers act on lower
// layers only, so shuffling a layer's whiteouts among its other entries
// (keeping parents before children and links after targets) cannot change
// the result.
func TestMergeOrderIndependence(t *testing.T) {
	lower := L{dir("a", 0o755), file("a/x", "X", 0o644), file("a/y", "Y", 0o644), dir("b", 0o755), file("b/z", "Z", 0o644), file("c", "C", 0o644)}
	upper := L{dir("a", 0o700), file("a/x", "X2", 0o644), dir("b", 0o755), file("b/n", "N", 0o644), file("c", "C2", 0o644)}
	whs := L{wh("a/x"), wh("a/y"), opq("b"), wh("c")}
	var ref []string
	for pos := 0; pos <= len(upper); pos++ {
		l := append(append(append(L{}, upper[:pos]...), whs...), upper[pos:]...)
		tr, err := mergeEntries(t, lower, l)
		if err != nil {
			t.Fatal(err)
		}
		got := dump(t, tr, true)
		if ref == nil {
			ref = got
			continue
		}
		if diff := cmp.Diff(ref, got); diff != "" {
			t.Errorf("whiteouts at position %d change the tree (-pos0 +got):\n%s", pos, diff)
		}
	}
	want := []string{
		`. dir 0755 0:0 0 - - 4 - 0`,
		`a dir 0700 0:0 0 - - 2 - D`,
		`a/x file 0644 0:0 2 "X2" - 1 - D`,
		`b dir 0755 0:0 0 - - 2 - D`,
		`b/n file 0644 0:0 1 "N" - 1 - D`,
		`c file 0644 0:0 2 "C2" - 1 - D`,
	}
	if diff := cmp.Diff(want, ref); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestMergeEmpty: no layers, and empty layers, give an empty root.
func TestMergeEmpty(t *testing.T) {
	tr, err := overlay.Merge(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`. dir 0755 0:0 0 - - 2 - 0`}, dump(t, tr, true)); diff != "" {
		t.Error(diff)
	}
	checkInvariants(t, tr)
	tr, err = mergeEntries(t, L{}, L{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 1 {
		t.Errorf("Len() = %d, want 1", tr.Len())
	}
	if err := fstest.TestFS(tr.FS()); err != nil {
		t.Error(err)
	}
}

// TestMergeConcurrentReads: a Tree is immutable and safe for concurrent
// use (run with -race).
func TestMergeConcurrentReads(t *testing.T) {
	tr, err := mergeEntries(t,
		L{dir("d", 0o755), file("d/a", strings.Repeat("a", 5000), 0o644), hard("b", "d/a"), sym("l", "d")},
		L{file("d/c", "C", 0o644), wh("b")},
	)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 20 {
				var b []byte
				if b, err = fs.ReadFile(tr.FS(), "l/a"); err == nil && len(b) != 5000 {
					err = fmt.Errorf("read %d bytes", len(b))
				}
				if err != nil {
					break
				}
				if _, err = fs.ReadDir(tr.FS(), "d"); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
