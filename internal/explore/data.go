// Package explore is the model and view of `ocimount explore`, an
// interactive layer explorer. It computes nothing of its own about the
// image: every answer it shows comes from internal/forensics (the layer
// rows from Inspect and HistorySteps, each layer's marks from
// DiffTreesFunc — the lines `diff --layer N` prints —, a file's history
// from History, the waste from Waste) over the trees overlay.Merge builds
// for the `..N` views. The package is a bubbletea model: cmd/ocimount
// only loads the image and runs it, and tests drive it without a terminal.
package explore

import (
	"fmt"
	"strings"
	"sync"

	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/overlay"
)

// Image is what the explorer shows: the forensics image (entry tables
// kept) and the name the user gave it.
type Image struct {
	*forensics.Image
	Source string
}

// Change is how the selected layer changed a path.
type Change uint8

const (
	Unchanged Change = iota
	Added
	Modified // type, size, content, link target or device
	Metadata // mode, owner, mtime or xattrs only
	Removed
)

// Letter is the change's one-letter mark, as `diff` prints it (U for
// unchanged), so that the tree reads without colour.
func (c Change) Letter() string { return [...]string{"U", "A", "M", "m", "D"}[c] }

func (c Change) String() string {
	return [...]string{"unchanged", "added", "modified", "metadata only", "removed"}[c]
}

func changeOf(s string) Change {
	switch s {
	case forensics.Added:
		return Added
	case forensics.Modified:
		return Modified
	case forensics.Metadata:
		return Metadata
	case forensics.Removed:
		return Removed
	}
	return Unchanged
}

// LayerView is the tree pane's data for one layer N: the image after N-1
// and after N (the `..N` views), and what N changed, as `diff --layer N`
// says it.
type LayerView struct {
	Layer         int
	Before, After *overlay.Tree
	// Changes maps a path (tree form: relative, "." for the root) to its
	// change; paths not in it are unchanged.
	Changes map[string]Change
	// Dirty holds every directory above a changed path (for the
	// changes-only tree).
	Dirty map[string]bool
	// Opaque holds the directories layer N marks opaque.
	Opaque  map[string]bool
	Summary forensics.DiffSummary
	// Pending: the marks are still being computed (Before is the empty
	// tree and Changes empty): the first screen shows the image's tree
	// at once, the marks follow.
	Pending bool
}

// PrefixTree is the image as it was after layer n (the `..n` view the
// loader builds for `ls --layers ..n` and `diff --layer`: overlay.Merge of
// layers 0..n); n < 0 is the empty image, what layer 0 is compared with.
func PrefixTree(layers []overlay.Layer, n int) (*overlay.Tree, error) {
	if n < 0 {
		return overlay.Merge(nil)
	}
	return overlay.Merge(layers[:n+1])
}

// ComputeLayer builds layer n's view. full is the merged image, reused
// for the last layer instead of merging again.
func ComputeLayer(layers []overlay.Layer, full *overlay.Tree, n int) (*LayerView, error) {
	if n < 0 || n >= len(layers) {
		return nil, fmt.Errorf("layer %d out of range (0..%d)", n, len(layers)-1)
	}
	v := &LayerView{Layer: n, Changes: map[string]Change{}, Dirty: map[string]bool{}, Opaque: map[string]bool{}}
	var err error
	if n == len(layers)-1 && full != nil {
		v.After = full
	} else if v.After, err = PrefixTree(layers, n); err != nil {
		return nil, fmt.Errorf("merging layers ..%d: %w", n, err)
	}
	if v.Before, err = PrefixTree(layers, n-1); err != nil {
		return nil, fmt.Errorf("merging layers ..%d: %w", n-1, err)
	}
	v.Summary, err = forensics.DiffTreesFunc(v.Before, v.After, forensics.DiffOptions{PathsOnly: true}, func(e forensics.DiffEntry) error {
		v.Changes[e.Path] = changeOf(e.Change)
		for p := e.Path; p != "." && p != ""; {
			p = parentPath(p)
			if v.Dirty[p] {
				break
			}
			v.Dirty[p] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer %d's changes: %w", n, err)
	}
	for i := range layers[n].Index.Entries {
		if k, target := overlay.ClassifyName(layers[n].Index.Entries[i].Name); k == overlay.Opaque {
			if target == "" {
				target = "."
			}
			v.Opaque[target] = true
		}
	}
	return v, nil
}

// parentPath is the parent of a tree-form path ("." for a top-level one).
func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

func joinPath(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// layerCache keeps the views computed last: moving back to a recent
// layer is instant. Each view holds two trees (compact flat arrays) and
// its change map; maxViews of them bound the memory on a large image.
type layerCache struct {
	mu    sync.Mutex
	views map[int]*LayerView
	order []int // least recently stored first
}

const maxViews = 6

func (c *layerCache) get(n int) *LayerView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views[n]
}

// put stores v, dropping the oldest views beyond maxViews (never keep,
// the layer on screen).
func (c *layerCache) put(v *LayerView, keep int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.views == nil {
		c.views = map[int]*LayerView{}
	}
	if _, ok := c.views[v.Layer]; !ok {
		c.order = append(c.order, v.Layer)
	}
	c.views[v.Layer] = v
	for i := 0; len(c.views) > maxViews && i < len(c.order); {
		if n := c.order[i]; n != keep && n != v.Layer {
			delete(c.views, n)
			c.order = append(c.order[:i], c.order[i+1:]...)
			continue
		}
		i++
	}
}
