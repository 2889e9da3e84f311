package forensics

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// ListOptions select what List prints.
type ListOptions struct {
	Long      bool // mode, owner, size, mtime (ls -l)
	Recursive bool // the whole subtree, depth-first (ls -R, find order)
	JSON      bool // JSON Lines, one ListEntry per line
}

// ListEntry is one line of `ocimount ls --json` (docs/json-schema.md).
type ListEntry struct {
	Path     string            `json:"path"`
	Type     string            `json:"type"`
	Mode     string            `json:"mode"`
	UID      uint32            `json:"uid"`
	GID      uint32            `json:"gid"`
	Size     int64             `json:"size"`
	Mtime    string            `json:"mtime"`
	Nlink    uint32            `json:"nlink"`
	Ino      uint64            `json:"ino"`
	Layer    int32             `json:"layer"`
	Link     string            `json:"link,omitempty"`
	DevMajor uint32            `json:"dev_major,omitempty"`
	DevMinor uint32            `json:"dev_minor,omitempty"`
	Xattrs   map[string]string `json:"xattrs,omitempty"`
}

func listEntry(t *overlay.Tree, id overlay.NodeID) ListEntry {
	in := t.Attr(id)
	p := t.Path(id)
	if p == "" {
		p = "."
	}
	return ListEntry{
		Path: p, Type: kindName(in.Kind), Mode: fmt.Sprintf("%04o", in.Mode), UID: in.UID, GID: in.GID,
		Size: in.Size, Mtime: fmtTime(in.ModSec, in.ModNsec), Nlink: in.Nlink, Ino: in.Ino, Layer: in.Layer,
		Link: in.Link, DevMajor: in.DevMajor, DevMinor: in.DevMinor, Xattrs: xattrMap(in.Xattrs),
	}
}

// List prints path (a directory's children, or the entry itself) with the
// layer that provides each entry ("-" for a directory no layer declares).
// It writes while it walks: memory is bounded by the tree's depth.
func List(w io.Writer, t *overlay.Tree, path string, o ListOptions) error {
	id, _, err := lookup(t, path)
	if err != nil {
		return err
	}
	bw := newBuf(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	emit := func(id overlay.NodeID) error {
		if o.JSON {
			return enc.Encode(listEntry(t, id))
		}
		return writeListLine(bw, t, id, o.Long)
	}
	if t.Kind(id) != layerindex.KindDir {
		if err := emit(id); err != nil {
			return err
		}
		return bw.Flush()
	}
	if !o.Recursive {
		first, n := t.Children(id)
		for c := first; c < first+overlay.NodeID(n); c++ {
			if err := emit(c); err != nil {
				return err
			}
		}
		return bw.Flush()
	}
	if err := walkTree(t, id, emit); err != nil {
		return err
	}
	return bw.Flush()
}

// walkTree visits the subtree below dir depth-first, parents before
// children, siblings by name (find order). Its state is one (next, end)
// pair per open directory.
func walkTree(t *overlay.Tree, dir overlay.NodeID, visit func(overlay.NodeID) error) error {
	type frame struct{ next, end overlay.NodeID }
	first, n := t.Children(dir)
	stack := []frame{{first, first + overlay.NodeID(n)}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next >= top.end {
			stack = stack[:len(stack)-1]
			continue
		}
		id := top.next
		top.next++
		if err := visit(id); err != nil {
			return err
		}
		if t.Kind(id) == layerindex.KindDir {
			f, c := t.Children(id)
			if c > 0 {
				stack = append(stack, frame{f, f + overlay.NodeID(c)})
			}
		}
	}
	return nil
}

func writeListLine(w io.Writer, t *overlay.Tree, id overlay.NodeID, long bool) error {
	p := t.Path(id)
	if p == "" {
		p = "."
	}
	if !long {
		in := t.Attr(id)
		suffix := ""
		switch in.Kind {
		case layerindex.KindDir:
			suffix = "/"
		case layerindex.KindSymlink:
			suffix = " -> " + in.Link
		}
		_, err := fmt.Fprintf(w, "%-3s %s%s\n", layerCol(in.Layer), p, suffix)
		return err
	}
	in := t.Attr(id)
	size := fmt.Sprint(in.Size)
	if in.Kind == layerindex.KindChar || in.Kind == layerindex.KindBlock {
		size = fmt.Sprintf("%d,%d", in.DevMajor, in.DevMinor)
	}
	x := ""
	if len(in.Xattrs) > 0 {
		x = "+"
	}
	link := ""
	if in.Kind == layerindex.KindSymlink {
		link = " -> " + in.Link
	}
	_, err := fmt.Fprintf(w, "%s%-1s %3d %5d %5d %10s %s %3s %s%s\n", ModeString(in.Kind, in.Mode), x, in.Nlink,
		in.UID, in.GID, size, fmtTime(in.ModSec, in.ModNsec), layerCol(in.Layer), p, link)
	return err
}

// Cat writes a regular file's bytes, following symlinks inside the image
// (see Resolve).
func Cat(w io.Writer, t *overlay.Tree, path string) error {
	id, err := Resolve(t, path)
	if err != nil {
		return err
	}
	in := t.Attr(id)
	switch in.Kind {
	case layerindex.KindReg:
	case layerindex.KindDir:
		return &PathError{Path: t.Path(id), Err: ErrIsDir}
	default:
		return &PathError{Path: t.Path(id), Err: fmt.Errorf("%w (%s)", ErrNotFile, kindName(in.Kind))}
	}
	r, err := t.Open(id)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, io.NewSectionReader(r, 0, in.Size))
	return err
}
