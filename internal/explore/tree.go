package explore

import (
	"strings"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Row is one line of the tree pane: a path of the layer's view, present
// in the tree after the layer (A != 0), before it (B != 0), or both.
// Removed paths exist only before.
type Row struct {
	Path   string // tree form, "." for the root
	Name   string
	Depth  int
	A, B   overlay.NodeID // 0: absent on that side
	Change Change
	Dir    bool
	Open   bool
}

// treeState is the tree pane's rows: only the open directories' children
// are ever listed (a collapsed 200,000-entry directory costs one row),
// and only the rows on screen are rendered.
type treeState struct {
	v           *LayerView
	changesOnly bool
	filter      string          // path substring; "" matches all
	kinds       map[Change]bool // nil: every kind
	rows        []Row
	keep        map[string]bool // with a filter: the paths shown (matches and their parents)
}

// filtering says whether a filter (path or kind) is active.
func (s *treeState) filtering() bool { return s.filter != "" || s.kinds != nil }

// children lists dir's entries in the layer's view: the union of the
// trees before and after the layer, in name order (the order diff walks
// them in), restricted by the changes-only toggle and the filter.
func (s *treeState) children(dir Row) []Row {
	var out []Row
	overlay.ZipChildren(s.v.After, dir.A, s.v.Before, dir.B, func(i, j overlay.NodeID) error {
		r := Row{Depth: dir.Depth + 1, A: i, B: j}
		if i != 0 {
			r.Name = s.v.After.Name(i)
		} else {
			r.Name = s.v.Before.Name(j)
		}
		r.Path = joinPath(dir.Path, r.Name)
		// A row opens when it is a directory on either side: a directory
		// replaced by a file still lists what was removed below it.
		r.Dir = r.A != 0 && s.v.After.Kind(r.A) == layerindex.KindDir || r.B != 0 && s.v.Before.Kind(r.B) == layerindex.KindDir
		r.Change = s.v.Changes[r.Path]
		if s.changesOnly && r.Change == Unchanged && !s.v.Dirty[r.Path] {
			return nil
		}
		if s.keep != nil && !s.keep[r.Path] {
			return nil
		}
		out = append(out, r)
		return nil
	})
	return out
}

func (s *treeState) root() Row {
	return Row{Path: ".", Name: "/", A: overlay.RootID, B: overlay.RootID, Dir: true, Change: s.v.Changes["."]}
}

// reset lists the root's children (directories closed), or with a filter
// every match with its parents open.
func (s *treeState) reset() {
	s.keep = nil
	if s.filtering() {
		s.keep = s.matches()
		s.rows = s.rows[:0]
		s.expandAll(s.root(), &s.rows)
		return
	}
	s.rows = s.children(s.root())
}

// matches walks the layer's whole view once and keeps the paths that
// match the filter, and their parents.
func (s *treeState) matches() map[string]bool {
	keep := map[string]bool{}
	saved := s.keep
	s.keep = nil
	defer func() { s.keep = saved }()
	var walk func(Row) bool
	walk = func(dir Row) bool {
		any := false
		for _, r := range s.children(dir) {
			m := (s.filter == "" || strings.Contains(r.Path, s.filter)) && (s.kinds == nil || s.kinds[kindClass(r.Change)])
			if r.Dir && walk(r) {
				m = true
			}
			if m {
				keep[r.Path] = true
				any = true
			}
		}
		return any
	}
	walk(s.root())
	return keep
}

// kindClass folds metadata-only into modified for the kind filter.
func kindClass(c Change) Change {
	if c == Metadata {
		return Modified
	}
	return c
}

func (s *treeState) expandAll(dir Row, out *[]Row) {
	for _, r := range s.children(dir) {
		if r.Dir {
			r.Open = true
			*out = append(*out, r)
			s.expandAll(r, out)
			continue
		}
		*out = append(*out, r)
	}
}

// Flatten lists every row of v's tree pane with all directories open,
// in the order the pane shows them (and `diff` prints its lines):
// depth-first, parents first, siblings by name.
func Flatten(v *LayerView, changesOnly bool) []Row {
	s := &treeState{v: v, changesOnly: changesOnly}
	var rows []Row
	s.expandAll(s.root(), &rows)
	return rows
}

// reopen opens the rows whose paths are in open (the directories that
// were open in the previous layer's view).
func (s *treeState) reopen(open map[string]bool) {
	for i := 0; i < len(s.rows); i++ {
		if r := s.rows[i]; r.Dir && !r.Open && open[r.Path] {
			s.toggle(i)
		}
	}
}

// toggle opens or closes directory row i.
func (s *treeState) toggle(i int) {
	if i < 0 || i >= len(s.rows) || !s.rows[i].Dir {
		return
	}
	if s.rows[i].Open {
		s.collapse(i)
		return
	}
	s.rows[i].Open = true
	kids := s.children(s.rows[i])
	s.rows = append(s.rows[:i+1], append(kids, s.rows[i+1:]...)...)
}

// collapse closes directory row i, dropping the rows below it.
func (s *treeState) collapse(i int) {
	d := s.rows[i].Depth
	j := i + 1
	for j < len(s.rows) && s.rows[j].Depth > d {
		j++
	}
	s.rows[i].Open = false
	s.rows = append(s.rows[:i+1], s.rows[j:]...)
}

// openAll opens every directory below row i (or, i < 0, the whole tree).
func (s *treeState) openAll(i int) {
	if i < 0 {
		s.rows = s.rows[:0]
		s.expandAll(s.root(), &s.rows)
		return
	}
	if !s.rows[i].Dir {
		return
	}
	if s.rows[i].Open {
		s.collapse(i)
	}
	s.rows[i].Open = true
	var kids []Row
	s.expandAll(s.rows[i], &kids)
	s.rows = append(s.rows[:i+1], append(kids, s.rows[i+1:]...)...)
}

// parent returns the row index of row i's parent directory, or -1.
func (s *treeState) parent(i int) int {
	d := s.rows[i].Depth
	for j := i - 1; j >= 0; j-- {
		if s.rows[j].Depth < d {
			return j
		}
	}
	return -1
}

// find returns the index of the row with path p, or -1.
func (s *treeState) find(p string) int {
	for i := range s.rows {
		if s.rows[i].Path == p {
			return i
		}
	}
	return -1
}

// reveal opens p's parents (so that moving to another layer keeps the
// cursor on the same path where it still exists) and returns its row.
func (s *treeState) reveal(p string) int {
	if p == "" || p == "." {
		return -1
	}
	parts := strings.Split(p, "/")
	i := -1
	for k := range parts {
		q := strings.Join(parts[:k+1], "/")
		j := -1
		for x := i + 1; x < len(s.rows); x++ {
			if s.rows[x].Path == q {
				j = x
				break
			}
			if i >= 0 && s.rows[x].Depth <= s.rows[i].Depth {
				break
			}
		}
		if j < 0 {
			return i
		}
		if k < len(parts)-1 && s.rows[j].Dir && !s.rows[j].Open {
			s.toggle(j)
		}
		i = j
	}
	return i
}
