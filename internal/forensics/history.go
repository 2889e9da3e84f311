package forensics

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// History events.
const (
	EvAdded     = "added"
	EvReadded   = "re-added"
	EvModified  = "modified"  // type, content, link target or device changed
	EvMetadata  = "metadata"  // only mode, owner, mtime or xattrs changed
	EvRewritten = "rewritten" // the layer stores the path again, identical
	EvDeleted   = "deleted"
)

// HistoryEvent is one thing a layer did to a path.
type HistoryEvent struct {
	Layer  int      `json:"layer"`
	Event  string   `json:"event"`
	Fields []string `json:"fields,omitempty"`
	// How the path was deleted: "whiteout NAME", "opaque DIR" or
	// "parent replaced"; empty otherwise.
	By string `json:"by,omitempty"`
	// The path's version after this layer; nil when deleted.
	Type   string            `json:"type,omitempty"`
	Mode   string            `json:"mode,omitempty"`
	UID    *uint32           `json:"uid,omitempty"`
	GID    *uint32           `json:"gid,omitempty"`
	Size   *int64            `json:"size,omitempty"`
	Mtime  string            `json:"mtime,omitempty"`
	Link   string            `json:"link,omitempty"`
	Digest string            `json:"digest,omitempty"` // sha256 of a regular file's content
	Xattrs map[string]string `json:"xattrs,omitempty"`
	// FromLayer is the layer whose entry provides this version when it
	// is not Layer itself (a hardlink to a lower file).
	FromLayer *int32 `json:"from_layer,omitempty"`
}

// HistoryResult is `ocimount history --json` (docs/json-schema.md).
type HistoryResult struct {
	Path   string         `json:"path"`
	Events []HistoryEvent `json:"events"`
}

// History says what every layer did to path: added, modified (content or
// metadata), rewritten unchanged, deleted (by a whiteout, an opaque
// directory or a replaced parent), re-added. It merges the layers once,
// looking the path up after each one (parent symlinks followed inside the
// image, as the merge does), and hashes each regular-file version's
// content — only that file's bytes are read.
func History(layers []overlay.Layer, path string) (*HistoryResult, error) {
	cp, err := CleanPath(path)
	if err != nil {
		return nil, err
	}
	res := &HistoryResult{Path: cp, Events: []HistoryEvent{}}
	if cp == "" {
		res.Path = "."
	}
	type state struct {
		in     overlay.Inode
		ok     bool
		digest string
	}
	var prev state
	seen := false
	digests := map[[2]int32]string{}
	err = overlay.MergeSteps(layers, func(li int, look func(string) (overlay.Inode, bool)) error {
		in, ok := look(cp)
		cur := state{in: in, ok: ok}
		if ok && in.Kind == layerindex.KindReg && in.Layer >= 0 {
			k := [2]int32{in.Layer, in.Entry}
			d, done := digests[k]
			if !done {
				var err error
				if d, err = hashContent(layers, in.Layer, in.Entry); err != nil {
					return err
				}
				digests[k] = d
			}
			cur.digest = d
		}
		var ev *HistoryEvent
		switch {
		case !prev.ok && ok:
			ev = &HistoryEvent{Event: EvAdded}
			if seen {
				ev.Event = EvReadded
			}
			seen = true
		case prev.ok && !ok:
			ev = &HistoryEvent{Event: EvDeleted, By: deletedBy(layers[li].Index, cp)}
		case ok && (in.Layer != prev.in.Layer || in.Entry != prev.in.Entry):
			fields := versionDiff(prev.in, in, prev.digest, cur.digest)
			ev = &HistoryEvent{Event: EvRewritten, Fields: fields}
			for _, f := range fields {
				ev.Event = EvMetadata
				if f == "type" || f == "content" || f == "size" || f == "link" || f == "device" {
					ev.Event = EvModified
					break
				}
			}
		}
		if ev != nil {
			ev.Layer = li
			if ok {
				fillVersion(ev, in, cur.digest, li)
			}
			res.Events = append(res.Events, *ev)
		}
		prev = cur
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !seen {
		return nil, &PathError{Path: cp, Err: fmt.Errorf("%w (in no layer)", ErrNotFound)}
	}
	return res, nil
}

func fillVersion(ev *HistoryEvent, in overlay.Inode, digest string, li int) {
	uid, gid, size := in.UID, in.GID, in.Size
	ev.Type, ev.Mode, ev.UID, ev.GID, ev.Size = kindName(in.Kind), fmt.Sprintf("%04o", in.Mode), &uid, &gid, &size
	ev.Mtime, ev.Link, ev.Digest, ev.Xattrs = fmtTime(in.ModSec, in.ModNsec), in.Link, digest, xattrMap(in.Xattrs)
	if in.Layer != int32(li) {
		l := in.Layer
		ev.FromLayer = &l
	}
}

func versionDiff(a, b overlay.Inode, da, db string) []string {
	var f []string
	if a.Kind != b.Kind {
		f = append(f, "type")
	} else {
		switch a.Kind {
		case layerindex.KindReg:
			if a.Size != b.Size {
				f = append(f, "size")
			}
			if da != db {
				f = append(f, "content")
			}
		case layerindex.KindSymlink:
			if a.Link != b.Link {
				f = append(f, "link")
			}
		case layerindex.KindChar, layerindex.KindBlock:
			if a.DevMajor != b.DevMajor || a.DevMinor != b.DevMinor {
				f = append(f, "device")
			}
		}
	}
	if a.Mode != b.Mode {
		f = append(f, "mode")
	}
	if a.UID != b.UID || a.GID != b.GID {
		f = append(f, "owner")
	}
	if a.ModSec != b.ModSec || a.ModNsec != b.ModNsec {
		f = append(f, "mtime")
	}
	if !equalXattrs(xattrMap(a.Xattrs), xattrMap(b.Xattrs)) {
		f = append(f, "xattrs")
	}
	return f
}

// deletedBy names the entry of ix that removed p: a whiteout of p or of
// a parent, an opaque marker in a parent, or an entry that replaced a
// parent with a non-directory. Entries are classified as the merge does
// (overlay.ClassifyName) and compared by name as stored, so a removal
// through a symlinked parent is reported without its cause.
func deletedBy(ix *layerindex.Index, p string) string {
	whiteouts := map[string]string{} // hidden path → the whiteout's name
	opaque := map[string]bool{}
	stored := map[string]layerindex.Kind{}
	for i := range ix.Entries {
		e := &ix.Entries[i]
		switch k, target := overlay.ClassifyName(e.Name); k {
		case overlay.Whiteout:
			whiteouts[target] = e.Name
		case overlay.Opaque:
			opaque[target] = true
		case overlay.NotWhiteout:
			stored[e.Name] = e.Kind
		}
	}
	for q := p; ; {
		dir, _ := splitDir(q)
		if wh, ok := whiteouts[q]; ok {
			return "whiteout " + wh
		}
		if q != p {
			if k, ok := stored[q]; ok && k != layerindex.KindDir {
				return "parent replaced by " + q
			}
		}
		if opaque[dir] {
			return "opaque " + displayPath(orDot(dir))
		}
		if dir == "" {
			break
		}
		q = dir
	}
	return ""
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

func splitDir(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func joinPath(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// WriteHistory prints a HistoryResult as a table or as JSON.
func WriteHistory(w io.Writer, r *HistoryResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "history of %s\n", displayPath(r.Path))
	fmt.Fprintln(tw, "LAYER\tEVENT\tTYPE\tMODE\tOWNER\tSIZE\tMTIME\tCONTENT\tDETAIL")
	for _, e := range r.Events {
		if e.Type == "" {
			fmt.Fprintf(tw, "%d\t%s\t-\t-\t-\t-\t-\t-\t%s\n", e.Layer, e.Event, e.By)
			continue
		}
		content := "-"
		if e.Digest != "" {
			content = e.Digest[:7+12]
		}
		var detail []string
		if len(e.Fields) > 0 {
			detail = append(detail, strings.Join(e.Fields, ","))
		}
		if e.Link != "" {
			detail = append(detail, "-> "+e.Link)
		}
		if e.FromLayer != nil {
			detail = append(detail, fmt.Sprintf("hardlink to layer %d's file", *e.FromLayer))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d:%d\t%d\t%s\t%s\t%s\n", e.Layer, e.Event, e.Type, e.Mode, *e.UID, *e.GID,
			*e.Size, e.Mtime, content, strings.Join(detail, " "))
	}
	return tw.Flush()
}
