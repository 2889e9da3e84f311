package forensics

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// WasteEntry is a regular file a layer ships that the merged tree does
// not show.
type WasteEntry struct {
	Path  string `json:"path"`  // as stored in its layer
	Layer int    `json:"layer"` // the layer that ships the bytes
	Size  int64  `json:"size"`  // bytes stored (a sparse file's data fragments)
	// HiddenBy is the first layer that hides it (Layer itself when the
	// layer stores the path twice); -1 if the cause was not found by name
	// (a path reached through a symlinked parent).
	HiddenBy int    `json:"hidden_by"`
	How      string `json:"how"` // "overwritten", "whiteout", "opaque", "parent replaced", "duplicate in layer", "bookkeeping", "unknown"
}

// WasteResult is `ocimount waste --json` (docs/json-schema.md).
type WasteResult struct {
	TotalBytes       int64        `json:"total_bytes"`
	UncompressedSize int64        `json:"uncompressed_size"` // all layers' tar streams
	Entries          []WasteEntry `json:"entries"`
}

// Waste finds the bytes the image ships but its merged tree does not
// show — files overwritten or deleted by later layers, where "deleted"
// secrets still live — largest first. It reads no file contents: a file
// is visible if some path of t is provided by its layer entry.
func Waste(layers []overlay.Layer, t *overlay.Tree) (*WasteResult, error) {
	visible := visibleEntries(layers, t)
	fx := &layerEffects{layers: layers, of: make([]*effects, len(layers))}
	res := &WasteResult{Entries: []WasteEntry{}}
	for li, l := range layers {
		res.UncompressedSize += l.Index.UncompressedSize
		for ei := range l.Index.Entries {
			e := &l.Index.Entries[ei]
			if e.Kind != layerindex.KindReg || visible[li][ei] {
				continue
			}
			size := storedSize(e)
			if size == 0 {
				continue // whiteout markers, empty files: no bytes hidden
			}
			w := WasteEntry{Path: e.Name, Layer: li, Size: size, HiddenBy: -1, How: "unknown"}
			if slices.Contains(l.Hide, e.Name) {
				// A TOC format's own entry (eStargz's stargz.index.json),
				// hidden by the layer's format, not by what came later.
				w.HiddenBy, w.How = li, "bookkeeping"
			} else {
				w.HiddenBy, w.How = fx.hiddenBy(li, ei, e.Name)
			}
			res.TotalBytes += size
			res.Entries = append(res.Entries, w)
		}
	}
	sort.SliceStable(res.Entries, func(i, j int) bool {
		a, b := res.Entries[i], res.Entries[j]
		if a.Size != b.Size {
			return a.Size > b.Size
		}
		if a.Layer != b.Layer {
			return a.Layer < b.Layer
		}
		return a.Path < b.Path
	})
	return res, nil
}

// visibleEntries marks, per layer, the entries the merged tree shows.
func visibleEntries(layers []overlay.Layer, t *overlay.Tree) [][]bool {
	visible := make([][]bool, len(layers))
	for i, l := range layers {
		visible[i] = make([]bool, len(l.Index.Entries))
	}
	for id := overlay.RootID; t.Valid(id); id++ {
		if l, e := t.Source(id); l >= 0 && int(l) < len(visible) && int(e) < len(visible[l]) {
			visible[l][e] = true
		}
	}
	return visible
}

// storedSize is the bytes a regular file takes in its layer (a sparse
// file's data fragments only).
func storedSize(e *layerindex.Entry) int64 {
	if !e.Sparse {
		return e.Size
	}
	var size int64
	for _, f := range e.SparseMap {
		size += f.Len
	}
	return size
}

// effects is what one layer does to names: the names it stores, whites
// out and makes opaque.
type effects struct {
	stored  map[string]layerindex.Kind
	whited  map[string]bool
	opaque  map[string]bool
	lastIdx map[string]int
}

// layerEffects builds each layer's effects once, on first need.
type layerEffects struct {
	layers []overlay.Layer
	of     []*effects
}

func (x *layerEffects) get(li int) *effects {
	if f := x.of[li]; f != nil {
		return f
	}
	f := &effects{stored: map[string]layerindex.Kind{}, whited: map[string]bool{}, opaque: map[string]bool{}, lastIdx: map[string]int{}}
	for i, e := range x.layers[li].Index.Entries {
		switch k, target := overlay.ClassifyName(e.Name); k {
		case overlay.Opaque:
			f.opaque[target] = true
		case overlay.Whiteout:
			f.whited[target] = true
		case overlay.NotWhiteout, overlay.AufsHidden:
			f.stored[e.Name] = e.Kind
			f.lastIdx[e.Name] = i
		}
	}
	x.of[li] = f
	return f
}

// hiddenBy says which layer hides entry ei (named name) of layer li, and
// how: a later entry of the same name in its own layer, or the first
// later layer that whites it (or a parent) out, overwrites it, replaces a
// parent with a non-directory, or makes a parent opaque. -1, "unknown" if
// none does (the tree shows something else there for another reason).
func (x *layerEffects) hiddenBy(li, ei int, name string) (int, string) {
	if x.get(li).lastIdx[name] > ei {
		return li, "duplicate in layer"
	}
	for lj := li + 1; lj < len(x.layers); lj++ {
		if how := x.get(lj).hides(name); how != "" {
			return lj, how
		}
	}
	return -1, "unknown"
}

// hides says how the layer with effects f hides name, or "".
func (f *effects) hides(name string) string {
	if f.whited[name] {
		return "whiteout"
	}
	if _, ok := f.stored[name]; ok {
		return "overwritten"
	}
	for q := name; ; {
		dir, _ := splitDir(q)
		if q != name {
			if f.whited[q] {
				return "whiteout"
			}
			if k, ok := f.stored[q]; ok && k != layerindex.KindDir {
				return "parent replaced"
			}
		}
		if f.opaque[dir] {
			return "opaque"
		}
		if dir == "" {
			return ""
		}
		q = dir
	}
}

// WriteWaste prints a WasteResult; limit > 0 shows only the largest.
func WriteWaste(w io.Writer, r *WasteResult, asJSON bool, limit int) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	pct := 0.0
	if r.UncompressedSize > 0 {
		pct = 100 * float64(r.TotalBytes) / float64(r.UncompressedSize)
	}
	fmt.Fprintf(tw, "%d bytes in %d files shipped but not visible (%.1f%% of %d uncompressed layer bytes)\n",
		r.TotalBytes, len(r.Entries), pct, r.UncompressedSize)
	fmt.Fprintln(tw, "SIZE\tLAYER\tHIDDEN BY\tHOW\tPATH")
	for i, e := range r.Entries {
		if limit > 0 && i >= limit {
			fmt.Fprintf(tw, "... %d more\n", len(r.Entries)-limit)
			break
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", e.Size, e.Layer, layerCol(int32(e.HiddenBy)), e.How, displayPath(e.Path))
	}
	return tw.Flush()
}
