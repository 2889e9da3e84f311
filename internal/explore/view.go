package explore

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Layout, top to bottom: a header line; the layers pane (a title and
// layerRows() rows); the selected layer's digest line; the tree pane (a
// title and treeHeight() rows); a status line; the key line. Details,
// waste and help replace everything between the header and the status
// line. Every line is cut to the width: nothing wraps, so a resize only
// needs a redraw.

func (m *Model) layerRows() int {
	return min(len(m.steps), max(4, (m.h-4)/4))
}

func (m *Model) treeHeight() int { return max(1, m.h-6-m.layerRows()) }

func (m *Model) bodyHeight() int { return max(1, m.h-3) }

// textRows is how many lines of text a details, waste or help pane shows
// (its title takes one).
func (m *Model) textRows() int { return max(1, m.bodyHeight()-1) }

// wrapLines breaks lines wider than w (details: a long path, a history
// row with its detail column) instead of cutting them.
func wrapLines(lines []string, w int) []string {
	var out []string
	for _, l := range lines {
		if ansi.StringWidth(l) <= w {
			out = append(out, l)
			continue
		}
		out = append(out, strings.Split(ansi.Hardwrap(l, w, true), "\n")...)
	}
	return out
}

// View renders the screen: only the rows that fit are formatted, so its
// cost does not grow with the tree.
func (m *Model) View() string {
	if m.quitting {
		return ""
	}
	if m.w == 0 {
		return "starting..."
	}
	if m.w < MinWidth || m.h < MinHeight {
		return fit(fmt.Sprintf("terminal %dx%d: ocimount explore needs at least %dx%d (q quits)", m.w, m.h, MinWidth, MinHeight), m.w)
	}
	lines := make([]string, 0, m.h)
	lines = append(lines, m.st.header.Render(fit(m.headerLine(), m.w)))
	switch m.mode {
	case modeTree:
		lines = append(lines, m.layersPane()...)
		lines = append(lines, m.treePane()...)
	case modeDetails:
		lines = append(lines, m.textPane("details", wrapLines(m.detailLines(), m.w), m.det.top)...)
	case modeWaste:
		lines = append(lines, m.textPane("waste", m.wasteLines(), m.wasteTop)...)
	case modeHelp:
		lines = append(lines, m.textPane("help", m.helpLines(), m.helpTop)...)
	}
	lines = append(lines, fit(m.statusLine(), m.w), m.keyLine())
	return strings.Join(lines, "\n")
}

func (m *Model) headerLine() string {
	s := fmt.Sprintf(" ocimount explore  %s  %d layers  %d entries", Escape(m.im.Source), len(m.im.Layers), m.entries)
	if m.waste != nil {
		s += fmt.Sprintf("  efficiency %.1f%%", efficiency(m.waste.TotalBytes, m.waste.UncompressedSize))
	}
	return s
}

func efficiency(waste, total int64) float64 {
	if total <= 0 {
		return 100
	}
	// Rounded down, so that an image with waste never shows 100.0%.
	return math.Floor(1000*(1-float64(waste)/float64(total))) / 10
}

func (m *Model) layersPane() []string {
	n := m.layerRows()
	m.lastLayers = n
	// Keep the selection visible.
	if m.sel < m.layerTop {
		m.layerTop = m.sel
	}
	if m.sel >= m.layerTop+n {
		m.layerTop = m.sel - n + 1
	}
	m.layerTop = max(0, min(m.layerTop, len(m.steps)-n))
	title := fmt.Sprintf(" LAYER  COMPRESSED  UNCOMPRESSED  ENTRIES  CREATED BY  (%d steps)", len(m.steps))
	out := []string{m.paneTitle(title, m.focus == paneLayers)}
	for i := m.layerTop; i < m.layerTop+n; i++ {
		st := m.steps[i]
		cb := ""
		if st.History != nil {
			cb = Escape(oneLine(st.History.CreatedBy))
			if cb == "" && st.History.Comment != "" {
				cb = "(" + Escape(oneLine(st.History.Comment)) + ")"
			}
		}
		mark := " "
		if i == m.sel {
			mark = ">"
		}
		var line string
		if st.Layer < 0 {
			what := "(empty layer)"
			if st.Unmatched {
				what = "(no such layer)"
			}
			line = fit(fmt.Sprintf("%s %5s  %-40s  %s", mark, "", what, cb), m.w)
			out = append(out, m.st.dim.Render(line))
			continue
		}
		r := m.rows[st.Layer]
		if cb == "" {
			cb = "(no history)"
		}
		entries := "..." // until the entry tables are in
		if m.tables != nil {
			entries = fmt.Sprint(r.Entries)
		}
		line = fit(fmt.Sprintf("%s %5d  %10s  %12s  %7s  %s", mark, st.Layer, human(r.CompressedSize), human(r.UncompressedSize), entries, cb), m.w)
		switch {
		case i == m.sel && m.focus == paneLayers:
			line = m.st.sel.Render(line)
		case i == m.sel:
			line = m.st.selBlur.Render(line)
		}
		out = append(out, line)
	}
	info := ""
	if l := m.SelectedLayer(); l >= 0 {
		r := m.rows[l]
		info = fmt.Sprintf(" %s  %s  %d whiteouts, %d opaque", r.Digest, r.MediaType, r.Whiteouts, r.OpaqueDirs)
		if m.tables == nil {
			info = fmt.Sprintf(" (entry tables loading...)  %s  %s", r.Digest, r.MediaType)
		}
	}
	out = append(out, m.st.dim.Render(fit(info, m.w)))
	return out
}

// oneLine keeps a history command on one row (Escape shows the newlines
// of a multi-line RUN as \n).
func oneLine(s string) string { return strings.TrimSpace(s) }

func (m *Model) paneTitle(s string, focused bool) string {
	if focused {
		return m.st.title.Render(fit(s, m.w))
	}
	return m.st.dim.Render(fit(s, m.w))
}

func (m *Model) treePane() []string {
	h := m.treeHeight()
	out := make([]string, 0, h+1)
	if m.shown < 0 || m.shown != m.SelectedLayer() {
		title := fmt.Sprintf(" TREE after layer %d: computing...", m.SelectedLayer())
		out = append(out, m.paneTitle(title, m.focus == paneTree))
		if m.shown < 0 {
			for range h {
				out = append(out, "")
			}
			return out
		}
	}
	v := m.tree.v
	if len(out) == 0 {
		what := "whole image"
		if m.changesOnly {
			what = "changes only"
		}
		title := fmt.Sprintf(" TREE after layer %d (%s)  %dA %dM %dm %dD",
			v.Layer, what, v.Summary.Added, v.Summary.Modified, v.Summary.Metadata, v.Summary.Removed)
		if m.input != "" {
			title += "  filter " + fmt.Sprintf("%q", Escape(m.input))
		}
		if m.kindIdx != 0 {
			title += "  kind " + kindCycle[m.kindIdx].name
		}
		if v.Pending {
			title = fmt.Sprintf(" TREE after layer %d (%s)  marking what the layer changed...", v.Layer, what)
		}
		out = append(out, m.paneTitle(title, m.focus == paneTree))
	}
	rows := m.tree.rows
	if m.cur < m.top {
		m.top = m.cur
	}
	if m.cur >= m.top+h {
		m.top = m.cur - h + 1
	}
	m.top = max(0, min(m.top, len(rows)-h))
	for i := m.top; i < m.top+h; i++ {
		if i >= len(rows) {
			if i == 0 {
				out = append(out, m.st.dim.Render(fit("   (nothing to show)", m.w)))
				continue
			}
			out = append(out, "")
			continue
		}
		out = append(out, m.treeRow(v, rows[i], i == m.cur))
	}
	return out
}

func (m *Model) treeRow(v *LayerView, r Row, cur bool) string {
	t, id := v.After, r.A
	if id == 0 {
		t, id = v.Before, r.B
	}
	in := t.Attr(id)
	size := human(in.Size)
	switch in.Kind {
	case layerindex.KindDir:
		size = "-"
	case layerindex.KindChar, layerindex.KindBlock:
		size = fmt.Sprintf("%d,%d", in.DevMajor, in.DevMinor)
	}
	fold := "  "
	if r.Dir {
		fold = "+ "
		if r.Open {
			fold = "- "
		}
	}
	name := Escape(r.Name) + suffix(t, id, in, r, v)
	mark := " "
	if cur {
		mark = ">"
	}
	letter := r.Change.Letter()
	if v.Pending {
		letter = " "
	}
	prefix := fmt.Sprintf("%s%s %s %9s %9s ", mark, letter, forensics.ModeString(in.Kind, in.Mode), fmt.Sprintf("%d:%d", in.UID, in.GID), size)
	line := fit(prefix+strings.Repeat("  ", r.Depth-1)+fold+name, m.w)
	switch {
	case cur && m.focus == paneTree:
		return m.st.sel.Render(line)
	case cur:
		return m.st.selBlur.Render(line)
	}
	return m.st.change[r.Change].Render(line)
}

func suffix(t *overlay.Tree, id overlay.NodeID, in overlay.Inode, r Row, v *LayerView) string {
	var s string
	switch in.Kind {
	case layerindex.KindDir:
		s = "/"
		if v.Opaque[r.Path] {
			s += " [opaque]"
		}
	case layerindex.KindSymlink:
		s = " -> " + Escape(in.Link)
	case layerindex.KindReg:
		if in.Nlink > 1 {
			s = fmt.Sprintf(" [%d hardlinks]", in.Nlink)
		}
	}
	return s
}

func (m *Model) textPane(name string, lines []string, top int) []string {
	out := []string{m.st.title.Render(fit(fmt.Sprintf(" %s  (%d lines, esc returns)", strings.ToUpper(name), len(lines)), m.w))}
	for i := top; i < top+m.textRows(); i++ {
		if i < len(lines) {
			out = append(out, fit(lines[i], m.w))
		} else {
			out = append(out, "")
		}
	}
	return out
}

func (m *Model) detailLines() []string {
	d := &m.det
	out := append([]string{}, d.meta...)
	out = append(out, "", "HISTORY (what every layer did to this path, as `ocimount history` says)")
	out = append(out, d.history...)
	if d.peek != nil {
		out = append(out, "", fmt.Sprintf("CONTENT (quick look: at most the first %d bytes are read)", PeekBytes))
		out = append(out, d.peek...)
	}
	return out
}

func (m *Model) wasteLines() []string {
	switch {
	case m.wasteErr != "":
		return []string{"error: " + Escape(m.wasteErr)}
	case m.waste == nil:
		return []string{"computing (reads no file content)..."}
	}
	r := m.waste
	out := []string{
		fmt.Sprintf("efficiency %.1f%%: %s in %d files shipped but not visible, of %s uncompressed layer bytes",
			efficiency(r.TotalBytes, r.UncompressedSize), human(r.TotalBytes), len(r.Entries), human(r.UncompressedSize)),
		"",
		fmt.Sprintf("%10s  %5s  %9s  %-18s  %s", "SIZE", "ADDED", "HIDDEN BY", "HOW", "PATH (as stored in the layer)"),
	}
	for _, e := range r.Entries {
		hb := "-"
		if e.HiddenBy >= 0 {
			hb = fmt.Sprint(e.HiddenBy)
		}
		out = append(out, fmt.Sprintf("%10s  %5d  %9s  %-18s  /%s", human(e.Size), e.Layer, hb, e.How, Escape(e.Path)))
	}
	if len(r.Entries) == 0 {
		out = append(out, "(nothing wasted)")
	}
	return out
}

func (m *Model) helpLines() []string {
	return []string{
		"ocimount explore: the image's layers, what each changed, and the waste.",
		"",
		"anywhere   tab switch pane  ? help  w waste  q / ctrl+c quit",
		"layers     up/down (k/j), pgup/pgdown, home/end: select the layer the tree shows",
		"           enter / right: go to the tree",
		"tree       up/down, pgup/pgdown, home/end (g/G): move",
		"           right / space: open a directory   left: close it, or go to its parent",
		"           x open all   X open all below   z close all",
		"           enter / d: details (metadata, history across layers, content)",
		"           c: only what the layer changed / the whole image after the layer",
		"           /: filter by path substring (enter applies, esc clears)",
		"           f: cycle the change-kind filter (all, added, modified, removed, unchanged, changed)",
		"           esc: clear the filters",
		"details    up/down, pgup/pgdown: scroll   esc / left: back",
		"",
		"marks      A added   M modified (type, size, content, link, device)",
		"           m metadata only (mode, owner, mtime, xattrs)   D removed   U unchanged",
		"           (as `ocimount diff --layer N` prints them; colours repeat the letters)",
		"suffixes   / directory   [opaque] made opaque by this layer   -> symlink target",
		"           [N hardlinks] a file with N names",
		"names      bytes that are not printable UTF-8 are shown escaped (\\n, \\x1b, \\u202e)",
		"",
		"The same answers without a terminal: ocimount ls -R --layers ..N, diff --layer N,",
		"history, waste, inspect (all with --json).",
	}
}

func (m *Model) statusLine() string {
	switch {
	case m.filterEdit:
		return "filter: " + Escape(m.input) + "_"
	case m.err != "":
		return "error: " + Escape(m.err)
	case m.mode == modeTree && m.shown >= 0:
		n := len(m.tree.rows)
		if n == 0 {
			return " 0/0"
		}
		r := m.tree.rows[m.cur]
		change := r.Change.String()
		if m.tree.v.Pending {
			change = "(marks pending)"
		}
		return fmt.Sprintf(" %d/%d  %s: /%s", m.cur+1, n, change, strings.TrimPrefix(Escape(r.Path), "."))
	}
	return ""
}

func (m *Model) keyLine() string {
	var keys string
	switch {
	case m.filterEdit:
		keys = "type a path substring  enter:apply  esc:clear"
	case m.mode == modeTree && m.focus == paneLayers:
		keys = "up/down:layer  tab:tree  c:changes  /:filter  f:kind  w:waste  ?:help  q:quit"
	case m.mode == modeTree:
		keys = "arrows:move/fold enter:details c:changes /:filter f:kind w:waste ?:help q:quit"
	default:
		keys = "up/down:scroll  esc:back  w:waste  ?:help  q:quit"
	}
	return m.st.key.Render(fit(" "+keys, m.w))
}

func fmtTime(in overlay.Inode) string {
	return time.Unix(in.ModSec, int64(in.ModNsec)).UTC().Format(time.RFC3339Nano)
}
