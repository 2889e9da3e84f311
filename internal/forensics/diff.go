package forensics

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Change classes of a diff line.
const (
	Added    = "added"
	Removed  = "removed"
	Modified = "modified" // type, content, link target or device changed (maybe metadata too)
	Metadata = "metadata" // only mode, owner, mtime or xattrs changed
)

// DiffEntry is one line of `ocimount diff --json` (docs/json-schema.md).
type DiffEntry struct {
	Path   string     `json:"path"`
	Change string     `json:"change"`
	Fields []string   `json:"fields,omitempty"` // what differs, for modified and metadata
	Old    *ListEntry `json:"old,omitempty"`
	New    *ListEntry `json:"new,omitempty"`
}

// DiffSummary counts a diff's lines by class.
type DiffSummary struct {
	Added, Removed, Modified, Metadata int
}

// DiffOptions tune a diff.
type DiffOptions struct {
	JSON bool
	// NoMetadata leaves metadata-only changes out of the listing (they
	// are still counted).
	NoMetadata bool
	// PathsOnly leaves Old and New out of added and removed entries
	// (DiffTreesFunc only; explore needs the paths and classes, and a
	// layer that adds 200,000 files then formats none of them).
	PathsOnly bool
}

// DiffTrees writes how tree b differs from tree a, path by path,
// depth-first in name order, while it walks both trees in step (memory:
// the walk's depth). Regular files differ in content when their sizes
// differ; with equal sizes they are equal without reading when both come
// from the same layer blob at the same offset, and are otherwise hashed
// (only those files' bytes are read).
func DiffTrees(w io.Writer, a, b *overlay.Tree, o DiffOptions) (DiffSummary, error) {
	bw := newBuf(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	sum, err := DiffTreesFunc(a, b, o, func(e DiffEntry) error {
		if o.JSON {
			return enc.Encode(e)
		}
		return writeDiffLine(bw, e)
	})
	if err == nil && !o.JSON {
		_, err = fmt.Fprintf(bw, "# %d added, %d removed, %d modified, %d metadata only\n",
			sum.Added, sum.Removed, sum.Modified, sum.Metadata)
	}
	if err == nil {
		err = bw.Flush()
	}
	return sum, err
}

// DiffTreesFunc is DiffTrees handing each line to emit instead of
// writing it (in the same order, with the same classes): `ocimount
// explore` marks its tree with exactly the answer `diff --layer` prints.
// With o.NoMetadata, metadata-only changes are counted but not emitted.
func DiffTreesFunc(a, b *overlay.Tree, o DiffOptions, emit func(DiffEntry) error) (DiffSummary, error) {
	d := &differ{a: a, b: b, o: o, out: emit}
	err := d.node(overlay.RootID, overlay.RootID)
	return d.sum, err
}

func writeDiffLine(w io.Writer, e DiffEntry) error {
	letter := map[string]string{Added: "A", Removed: "D", Modified: "M", Metadata: "m"}[e.Change]
	line := letter + " " + displayPath(e.Path)
	if len(e.Fields) > 0 {
		line += "  (" + describe(e) + ")"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

type differ struct {
	a, b *overlay.Tree
	o    DiffOptions
	out  func(DiffEntry) error
	sum  DiffSummary
}

func (d *differ) emit(e DiffEntry) error {
	switch e.Change {
	case Added:
		d.sum.Added++
	case Removed:
		d.sum.Removed++
	case Modified:
		d.sum.Modified++
	case Metadata:
		d.sum.Metadata++
		if d.o.NoMetadata {
			return nil
		}
	}
	return d.out(e)
}

// describe says what changed, old → new.
func describe(e DiffEntry) string {
	var parts []string
	for _, f := range e.Fields {
		var o, n string
		switch f {
		case "type":
			o, n = e.Old.Type, e.New.Type
		case "size":
			o, n = fmt.Sprint(e.Old.Size), fmt.Sprint(e.New.Size)
		case "content":
			parts = append(parts, "content")
			continue
		case "link":
			o, n = e.Old.Link, e.New.Link
		case "device":
			o, n = fmt.Sprintf("%d,%d", e.Old.DevMajor, e.Old.DevMinor), fmt.Sprintf("%d,%d", e.New.DevMajor, e.New.DevMinor)
		case "mode":
			o, n = e.Old.Mode, e.New.Mode
		case "owner":
			o, n = fmt.Sprintf("%d:%d", e.Old.UID, e.Old.GID), fmt.Sprintf("%d:%d", e.New.UID, e.New.GID)
		case "mtime":
			o, n = e.Old.Mtime, e.New.Mtime
		case "xattrs":
			parts = append(parts, "xattrs")
			continue
		}
		parts = append(parts, f+" "+o+" -> "+n)
	}
	return strings.Join(parts, ", ")
}

// node compares path ia in a with ib in b (same path) and recurses.
func (d *differ) node(ia, ib overlay.NodeID) error {
	var fields []string
	var ea, eb ListEntry
	if !sameVersion(d.a, ia, d.b, ib) {
		ea, eb = listEntry(d.a, ia), listEntry(d.b, ib)
		var err error
		if fields, err = d.compare(ia, ib, &ea, &eb); err != nil {
			return err
		}
	}
	if len(fields) > 0 {
		change := Metadata
		for _, f := range fields {
			if f == "type" || f == "size" || f == "content" || f == "link" || f == "device" {
				change = Modified
			}
		}
		if err := d.emit(DiffEntry{Path: ea.Path, Change: change, Fields: fields, Old: &ea, New: &eb}); err != nil {
			return err
		}
	}
	da, db := d.a.Kind(ia) == layerindex.KindDir, d.b.Kind(ib) == layerindex.KindDir
	switch {
	case da && db:
		return d.children(ia, ib)
	case da:
		return d.all(d.a, ia, Removed)
	case db:
		return d.all(d.b, ib, Added)
	}
	return nil
}

// sameVersion is compare's "nothing differs" without formatting either
// side: every compared attribute is equal and a regular file's content
// provably is (empty, or the same bytes of the same layer stream, as
// sameContent's first test). Most paths of two consecutive prefixes
// are such, so `diff --layer N` formats only what it may print. false
// means "compare them", not "they differ".
func sameVersion(a *overlay.Tree, ia overlay.NodeID, b *overlay.Tree, ib overlay.NodeID) bool {
	x, y := a.Attr(ia), b.Attr(ib)
	if x.Kind != y.Kind || x.Mode != y.Mode || x.UID != y.UID || x.GID != y.GID || x.ModSec != y.ModSec ||
		x.ModNsec != y.ModNsec || x.Link != y.Link || x.DevMajor != y.DevMajor || x.DevMinor != y.DevMinor ||
		!slices.Equal(x.Xattrs, y.Xattrs) {
		return false
	}
	if x.Kind != layerindex.KindReg || x.Size == 0 && y.Size == 0 {
		return true
	}
	if x.Size != y.Size || x.Layer < 0 || y.Layer < 0 {
		return false
	}
	la, lb := a.Layers()[x.Layer].Index, b.Layers()[y.Layer].Index
	return x.Offset == y.Offset && la.DiffID != "" && la.DiffID == lb.DiffID && x.Sparse == y.Sparse &&
		slices.Equal(x.SparseMap, y.SparseMap)
}

// children merges two sorted child lists (overlay.ZipChildren).
func (d *differ) children(ia, ib overlay.NodeID) error {
	return overlay.ZipChildren(d.a, ia, d.b, ib, func(i, j overlay.NodeID) error {
		switch {
		case j == 0:
			return d.one(d.a, i, Removed)
		case i == 0:
			return d.one(d.b, j, Added)
		default:
			return d.node(i, j)
		}
	})
}

// one emits a path that exists on one side only, and everything below it.
func (d *differ) one(t *overlay.Tree, id overlay.NodeID, change string) error {
	if err := d.emit(d.sided(t, id, change)); err != nil {
		return err
	}
	if t.Kind(id) == layerindex.KindDir {
		return d.all(t, id, change)
	}
	return nil
}

func (d *differ) all(t *overlay.Tree, dir overlay.NodeID, change string) error {
	return walkTree(t, dir, func(id overlay.NodeID) error {
		return d.emit(d.sided(t, id, change))
	})
}

// sided is the entry of a path only one tree has.
func (d *differ) sided(t *overlay.Tree, id overlay.NodeID, change string) DiffEntry {
	if d.o.PathsOnly {
		p := t.Path(id)
		if p == "" {
			p = "."
		}
		return DiffEntry{Path: p, Change: change}
	}
	e := listEntry(t, id)
	de := DiffEntry{Path: e.Path, Change: change}
	if change == Added {
		de.New = &e
	} else {
		de.Old = &e
	}
	return de
}

// compare lists the fields that differ between two versions of a path.
func (d *differ) compare(ia, ib overlay.NodeID, ea, eb *ListEntry) ([]string, error) {
	var f []string
	if ea.Type != eb.Type {
		return []string{"type"}, nil
	}
	switch ea.Type {
	case "file":
		if ea.Size != eb.Size {
			f = append(f, "size", "content")
		} else if ea.Size > 0 {
			same, err := sameContent(d.a, ia, d.b, ib, ea.Size)
			if err != nil {
				return nil, err
			}
			if !same {
				f = append(f, "content")
			}
		}
	case "symlink":
		if ea.Link != eb.Link {
			f = append(f, "link")
		}
	case "char", "block":
		if ea.DevMajor != eb.DevMajor || ea.DevMinor != eb.DevMinor {
			f = append(f, "device")
		}
	}
	if ea.Mode != eb.Mode {
		f = append(f, "mode")
	}
	if ea.UID != eb.UID || ea.GID != eb.GID {
		f = append(f, "owner")
	}
	if ea.Mtime != eb.Mtime {
		f = append(f, "mtime")
	}
	if !equalXattrs(ea.Xattrs, eb.Xattrs) {
		f = append(f, "xattrs")
	}
	return f, nil
}

func equalXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// sameContent compares two equal-sized regular files, reading them only
// when they do not provably come from the same bytes of the same blob.
func sameContent(a *overlay.Tree, ia overlay.NodeID, b *overlay.Tree, ib overlay.NodeID, size int64) (bool, error) {
	x, y := a.Attr(ia), b.Attr(ib)
	la, lb := a.Layers()[x.Layer].Index, b.Layers()[y.Layer].Index
	// The same stream: a verified DiffID for indexes built by a pass; for
	// ones built from a TOC (whose offsets are into the TOC's stream, and
	// whose DiffID nothing checked), the same blob.
	same := la.DiffID != "" && la.DiffID == lb.DiffID && la.TOC == nil && lb.TOC == nil ||
		la.TOC != nil && lb.TOC != nil && la.Digest != "" && la.Digest == lb.Digest
	if x.Offset == y.Offset && same && x.Sparse == y.Sparse &&
		slices.Equal(x.SparseMap, y.SparseMap) {
		return true, nil // the same uncompressed layer stream, the same place in it
	}
	ra, err := a.Open(ia)
	if err != nil {
		return false, err
	}
	rb, err := b.Open(ib)
	if err != nil {
		return false, err
	}
	ha, err := hashReader(ra, size)
	if err != nil {
		return false, fmt.Errorf("%s: %w", displayPath(a.Path(ia)), err)
	}
	hb, err := hashReader(rb, size)
	if err != nil {
		return false, fmt.Errorf("%s: %w", displayPath(b.Path(ib)), err)
	}
	return ha == hb, nil
}
