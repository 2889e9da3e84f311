package explore

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// MinWidth and MinHeight are the smallest terminal the layout is made
// for; a smaller one gets a message instead of a garbled screen.
const (
	MinWidth  = 80
	MinHeight = 24
)

// PeekBytes bounds the quick look: only this prefix of a file is read.
const PeekBytes = 4096

type mode uint8

const (
	modeTree mode = iota
	modeDetails
	modeWaste
	modeHelp
)

type pane uint8

const (
	paneLayers pane = iota
	paneTree
)

// Messages from the background work (merges, diffs, history, reads):
// the UI never waits on the image.
type (
	layerMsg struct {
		n   int
		v   *LayerView
		err error
	}
	historyMsg struct {
		key   string
		lines []string
		err   error
	}
	peekMsg struct {
		key   string
		lines []string
		err   error
	}
	wasteMsg struct {
		r   *forensics.WasteResult
		err error
	}
	tablesMsg struct {
		im  *forensics.Image
		err error
	}
)

// Model is the explorer's state; it implements tea.Model.
type Model struct {
	im      *Image
	steps   []forensics.HistoryStep
	rows    []forensics.InspectLayer
	entries int // the merged image's paths

	w, h  int
	st    styles
	focus pane
	mode  mode
	prev  mode // where help returns to

	sel      int // index into steps of the selected layer
	layerTop int
	cache    layerCache
	pending  int // layer being computed, -1 none
	err      string

	tree        treeState
	shown       int // layer whose view the tree shows, -1 none yet
	cur, top    int
	changesOnly bool
	filterEdit  bool
	input       string
	kindIdx     int

	det       detail
	waste     *forensics.WasteResult
	wasteErr  string
	wasteBusy bool
	wasteTop  int
	helpTop   int
	quitting  bool
	running   sync.WaitGroup

	// tables is the image with entry tables (nil until loaded): layer
	// views, history and waste are computed from it.
	tables      *forensics.Image
	loadEntries func() (*forensics.Image, error)
	tablesErr   string
	lastLayers  int // layers pane rows on screen, for paging
}

type detail struct {
	key     string // layer/path the details are for
	row     Row
	tree    *overlay.Tree
	id      overlay.NodeID
	meta    []string
	history []string
	peek    []string
	top     int
}

type styles struct {
	header, dim, sel, selBlur, title, key lipgloss.Style
	change                                [5]lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	s := styles{
		header:  r.NewStyle().Reverse(true).Bold(true),
		dim:     r.NewStyle().Faint(true),
		sel:     r.NewStyle().Reverse(true),
		selBlur: r.NewStyle().Underline(true),
		title:   r.NewStyle().Bold(true),
		key:     r.NewStyle().Bold(true),
	}
	s.change[Unchanged] = r.NewStyle().Faint(true)
	s.change[Added] = r.NewStyle().Foreground(lipgloss.Color("2"))
	s.change[Modified] = r.NewStyle().Foreground(lipgloss.Color("3"))
	s.change[Metadata] = r.NewStyle().Foreground(lipgloss.Color("6"))
	s.change[Removed] = r.NewStyle().Foreground(lipgloss.Color("1"))
	return s
}

// bg counts a command's goroutine (bubbletea runs each command in one of
// its own and does not wait for it) so that Wait can.
func (m *Model) bg(cmd tea.Cmd) tea.Cmd {
	return func() tea.Msg {
		m.running.Add(1)
		defer m.running.Done()
		return cmd()
	}
}

// Wait returns when the background work started so far has ended. The
// caller closes the image first: reads then fail at once, and a merge or
// diff left running takes at most about a second on 200,000 entries.
func (m *Model) Wait() { m.running.Wait() }

// Options tune New.
type Options struct {
	// Output is where colours are detected for (os.Stdout when nil);
	// NoColor forces plain text, as NO_COLOR in the environment does.
	Output  io.Writer
	NoColor bool
	// Entries, if set, loads the image again with its layers' entry
	// tables (loader.Options.KeepEntries), in the background: the image
	// New gets is then the one `ls` loads (the cached tree, mapped), so
	// the first screen comes as fast as `ls` answers, and entry counts,
	// layer changes, history and waste follow when the tables are in.
	// nil: New's image has the tables already.
	Entries func() (*forensics.Image, error)
}

// New builds the model. im's layers must have their entry tables (the
// loader's KeepEntries), as for the forensics commands.
func New(im *Image, o Options) (*Model, error) {
	r, err := forensics.Inspect(im.Image)
	if err != nil {
		return nil, err
	}
	out := o.Output
	if out == nil {
		out = os.Stdout
	}
	rend := lipgloss.NewRenderer(out)
	if o.NoColor || os.Getenv("NO_COLOR") != "" {
		rend.SetColorProfile(termenv.Ascii)
	}
	m := &Model{im: im, rows: r.Layers, entries: r.Entries, st: newStyles(rend), pending: -1, shown: -1, focus: paneLayers,
		loadEntries: o.Entries}
	if o.Entries == nil {
		m.tables = im.Image
	}
	m.steps = forensics.HistorySteps(im.Meta.Config.History, len(im.Layers))
	m.sel = -1
	for i := len(m.steps) - 1; i >= 0; i-- {
		if m.steps[i].Layer >= 0 {
			m.sel = i
			break
		}
	}
	return m, nil
}

// SelectedLayer is the layer the layers pane points at (-1: no layer).
func (m *Model) SelectedLayer() int {
	if m.sel < 0 {
		return -1
	}
	return m.steps[m.sel].Layer
}

// Rows are the tree pane's current rows (for tests).
func (m *Model) Rows() []Row { return m.tree.rows }

// View returns the tree pane's layer view (nil until computed).
func (m *Model) LayerView() *LayerView {
	if m.shown < 0 {
		return nil
	}
	return m.tree.v
}

func (m *Model) Init() tea.Cmd {
	first := m.request()
	if m.loadEntries == nil {
		return first
	}
	load := m.loadEntries
	return tea.Batch(first, m.bg(func() tea.Msg {
		im, err := load()
		return tablesMsg{im: im, err: err}
	}))
}

// request starts computing the selected layer's view unless it is known
// or another computation runs (then the selection is looked at again
// when that one ends, so scrolling through layers queues nothing).
func (m *Model) request() tea.Cmd {
	n := m.SelectedLayer()
	if n < 0 || n == m.shown && !m.tree.v.Pending {
		return nil
	}
	if v := m.cache.get(n); v != nil {
		m.show(v)
		return nil
	}
	if m.pending >= 0 {
		return nil
	}
	layers, full := m.im.Layers, m.im.Tree
	if m.shown < 0 && n == len(layers)-1 && full != nil {
		if empty, err := PrefixTree(nil, -1); err == nil {
			m.show(&LayerView{Layer: n, After: full, Before: empty, Changes: map[string]Change{}, Dirty: map[string]bool{},
				Opaque: map[string]bool{}, Pending: true})
		}
	}
	if m.tables == nil {
		return nil // asked again when the tables are in
	}
	m.pending = n
	layers = m.tables.Layers
	return m.bg(func() tea.Msg {
		v, err := ComputeLayer(layers, full, n)
		return layerMsg{n: n, v: v, err: err}
	})
}

// show switches the tree pane to v, keeping the cursor on the same path
// when the new view has it.
func (m *Model) show(v *LayerView) {
	keep := ""
	if m.cur < len(m.tree.rows) {
		keep = m.tree.rows[m.cur].Path
	}
	open := map[string]bool{}
	for _, r := range m.tree.rows {
		if r.Open {
			open[r.Path] = true
		}
	}
	m.tree.v = v
	m.tree.changesOnly = m.changesOnly
	m.shown = v.Layer
	m.tree.reset()
	if !m.tree.filtering() {
		m.tree.reopen(open)
	}
	m.cur, m.top = 0, 0
	if keep != "" && !m.tree.filtering() {
		if i := m.tree.reveal(keep); i >= 0 {
			m.cur = i
		}
	} else if i := m.tree.find(keep); i >= 0 {
		m.cur = i
	}
}

func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.w, m.h = msg.Width, msg.Height
		return m, nil
	case layerMsg:
		m.pending = -1
		if msg.err != nil {
			m.err = msg.err.Error()
		} else {
			m.cache.put(msg.v, m.SelectedLayer())
			if msg.n == m.SelectedLayer() {
				m.err = ""
				m.show(msg.v)
			}
		}
		return m, m.request()
	case historyMsg:
		if msg.key == m.det.key {
			m.det.history = msg.lines
			if msg.err != nil {
				m.det.history = []string{"error: " + msg.err.Error()}
			}
		}
		return m, nil
	case peekMsg:
		if msg.key == m.det.key {
			m.det.peek = msg.lines
			if msg.err != nil {
				m.det.peek = []string{"error: " + msg.err.Error()}
			}
		}
		return m, nil
	case wasteMsg:
		m.wasteBusy = false
		m.waste = msg.r
		if msg.err != nil {
			m.wasteErr = msg.err.Error()
		}
		return m, nil
	case tablesMsg:
		if msg.err != nil {
			m.tablesErr = msg.err.Error()
			m.err = "loading the layers' entry tables: " + m.tablesErr
			return m, nil
		}
		m.tables = msg.im
		if r, err := forensics.Inspect(msg.im); err == nil {
			m.rows = r.Layers
		}
		cmds := []tea.Cmd{m.request()}
		switch m.mode {
		case modeDetails:
			cmds = append(cmds, m.openDetails(m.det.row))
		case modeWaste:
			cmds = append(cmds, m.startWaste())
		}
		return m, tea.Batch(cmds...)
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

var kindCycle = []struct {
	name  string
	kinds map[Change]bool
}{
	{"all", nil},
	{"added", map[Change]bool{Added: true}},
	{"modified", map[Change]bool{Modified: true}},
	{"removed", map[Change]bool{Removed: true}},
	{"unchanged", map[Change]bool{Unchanged: true}},
	{"changed", map[Change]bool{Added: true, Modified: true, Removed: true}},
}

func (m *Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Alt && (k.Type == tea.KeyRunes || k.Type == tea.KeySpace) {
		// No binding uses alt: this is esc and a key typed right after
		// it, which terminals send exactly like alt+key.
		_, c1 := m.key(tea.KeyMsg{Type: tea.KeyEsc})
		k.Alt = false
		_, c2 := m.key(k)
		return m, tea.Batch(c1, c2)
	}
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 && !k.Paste {
		// Keys typed faster than they are read arrive as one message
		// ("/abc"): each is a key of its own.
		var cmds []tea.Cmd
		for _, r := range k.Runes {
			_, c := m.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: k.Alt})
			cmds = append(cmds, c)
		}
		return m, tea.Batch(cmds...)
	}
	s := k.String()
	if s == "ctrl+c" {
		m.quitting = true
		return m, tea.Quit
	}
	if m.filterEdit {
		switch k.Type {
		case tea.KeyEnter:
			m.filterEdit = false
			m.applyFilter()
		case tea.KeyEsc:
			m.filterEdit = false
			m.input = ""
			m.applyFilter()
		case tea.KeyBackspace:
			if r := []rune(m.input); len(r) > 0 {
				m.input = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			m.input += string(k.Runes)
		}
		return m, nil
	}
	switch s {
	case "q":
		m.quitting = true
		return m, tea.Quit
	case "?":
		if m.mode == modeHelp {
			m.mode = m.prev
		} else {
			m.prev, m.mode, m.helpTop = m.mode, modeHelp, 0
		}
		return m, nil
	case "w":
		if m.mode == modeWaste {
			m.mode = modeTree
			return m, nil
		}
		m.mode, m.wasteTop = modeWaste, 0
		return m, m.startWaste()
	}
	switch m.mode {
	case modeHelp:
		if s == "esc" {
			m.mode = m.prev
		}
		m.helpTop = scroll(m.helpTop, s, len(m.helpLines()), m.textRows())
		return m, nil
	case modeWaste:
		if s == "esc" {
			m.mode = modeTree
		}
		m.wasteTop = scroll(m.wasteTop, s, len(m.wasteLines()), m.textRows())
		return m, nil
	case modeDetails:
		if s == "esc" || s == "left" || s == "h" {
			m.mode = modeTree
		}
		m.det.top = scroll(m.det.top, s, len(wrapLines(m.detailLines(), m.w)), m.textRows())
		return m, nil
	}
	switch s {
	case "tab", "shift+tab":
		m.focus = 1 - m.focus
		return m, nil
	case "/":
		m.filterEdit, m.focus = true, paneTree
		return m, nil
	case "f":
		m.kindIdx = (m.kindIdx + 1) % len(kindCycle)
		m.applyFilter()
		return m, nil
	case "c":
		m.changesOnly = !m.changesOnly
		if m.shown >= 0 {
			m.tree.changesOnly = m.changesOnly
			m.show(m.tree.v)
		}
		return m, nil
	case "esc":
		if m.input != "" || m.kindIdx != 0 {
			m.input, m.kindIdx = "", 0
			m.applyFilter()
		}
		return m, nil
	}
	if m.focus == paneLayers {
		return m, m.layerKey(s)
	}
	return m, m.treeKey(s)
}

func (m *Model) applyFilter() {
	m.tree.filter = m.input
	m.tree.kinds = kindCycle[m.kindIdx].kinds
	if m.shown >= 0 {
		m.show(m.tree.v)
	}
}

func (m *Model) layerKey(s string) tea.Cmd {
	move := func(dir int) {
		for i := m.sel + dir; i >= 0 && i < len(m.steps); i += dir {
			if m.steps[i].Layer >= 0 {
				m.sel = i
				return
			}
		}
	}
	page := max(1, m.lastLayers-1)
	switch s {
	case "up", "k":
		move(-1)
	case "down", "j":
		move(1)
	case "pgup":
		for range page {
			move(-1)
		}
	case "pgdown":
		for range page {
			move(1)
		}
	case "home", "g":
		m.sel = -1
		move(1)
	case "end", "G":
		m.sel = len(m.steps)
		move(-1)
	case "enter", "right", "l":
		m.focus = paneTree
	default:
		return nil
	}
	return m.request()
}

func (m *Model) treeKey(s string) tea.Cmd {
	n := len(m.tree.rows)
	h := m.treeHeight()
	switch s {
	case "up", "k":
		m.cur--
	case "down", "j":
		m.cur++
	case "pgup":
		m.cur -= h - 1
	case "pgdown":
		m.cur += h - 1
	case "home", "g":
		m.cur = 0
	case "end", "G":
		m.cur = n - 1
	case "right", "l", " ":
		if m.cur < n && m.tree.rows[m.cur].Dir && (s == " " || !m.tree.rows[m.cur].Open) {
			m.tree.toggle(m.cur)
		}
	case "left", "h":
		if m.cur < n {
			if m.tree.rows[m.cur].Dir && m.tree.rows[m.cur].Open {
				m.tree.collapse(m.cur)
			} else if p := m.tree.parent(m.cur); p >= 0 {
				m.cur = p
			} else {
				m.focus = paneLayers
			}
		}
	case "x":
		m.tree.openAll(-1)
		m.cur = 0
	case "X":
		if m.cur < n {
			m.tree.openAll(m.cur)
		}
	case "z":
		m.tree.reset()
		m.cur = 0
	case "enter", "d":
		if m.cur < n {
			r := m.tree.rows[m.cur]
			if r.Dir && s == "enter" {
				m.tree.toggle(m.cur)
				break
			}
			return m.openDetails(r)
		}
	}
	m.cur = max(0, min(m.cur, len(m.tree.rows)-1))
	return nil
}

// scroll moves a text view's first line.
func scroll(top int, key string, lines, h int) int {
	switch key {
	case "up", "k":
		top--
	case "down", "j":
		top++
	case "pgup":
		top -= h - 1
	case "pgdown", " ":
		top += h - 1
	case "home", "g":
		top = 0
	case "end", "G":
		top = lines
	}
	return max(0, min(top, lines-h))
}

func (m *Model) startWaste() tea.Cmd {
	if m.waste != nil || m.wasteBusy || m.wasteErr != "" || m.tables == nil {
		return nil
	}
	m.wasteBusy = true
	layers, t := m.tables.Layers, m.im.Tree
	return m.bg(func() tea.Msg {
		r, err := forensics.Waste(layers, t)
		return wasteMsg{r: r, err: err}
	})
}

// openDetails shows a row's metadata at once and starts its history and
// quick look in the background.
func (m *Model) openDetails(r Row) tea.Cmd {
	v := m.tree.v
	t, id := v.After, r.A
	if id == 0 {
		t, id = v.Before, r.B
	}
	m.det = detail{key: fmt.Sprintf("%d\x00%s", v.Layer, r.Path), row: r, tree: t, id: id}
	m.det.meta = metaLines(t, id, r, v)
	if v.Pending {
		m.det.meta[1] = fmt.Sprintf("change   (layer %d's changes are still being computed)", v.Layer)
	}
	m.det.history = []string{"computing (reads each version of the file once)..."}
	m.mode = modeDetails
	if m.tables == nil {
		m.det.history = []string{"waiting for the layers' entry tables..."}
	}
	key, p := m.det.key, r.Path
	var hist tea.Cmd
	if m.tables != nil {
		layers := m.tables.Layers
		hist = m.bg(func() tea.Msg {
			res, err := forensics.History(layers, p)
			if err != nil {
				return historyMsg{key: key, err: err}
			}
			var b bytes.Buffer
			if err := forensics.WriteHistory(&b, res, false); err != nil {
				return historyMsg{key: key, err: err}
			}
			return historyMsg{key: key, lines: textLines(b.String())}
		})
	}
	if t.Kind(id) != layerindex.KindReg {
		return hist
	}
	m.det.peek = []string{"reading..."}
	size := t.Size(id)
	peek := func() tea.Msg {
		lines, err := Peek(t, id, size)
		return peekMsg{key: key, lines: lines, err: err}
	}
	return tea.Batch(hist, m.bg(peek))
}

// Peek reads at most PeekBytes of a regular file, lazily like a mount
// read, and renders them as escaped text lines or, for binary content, a
// hex dump.
func Peek(t *overlay.Tree, id overlay.NodeID, size int64) ([]string, error) {
	n := min(size, PeekBytes)
	if n == 0 {
		return []string{"(empty file)"}, nil
	}
	r, err := t.Open(id)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	got, err := r.ReadAt(buf, 0)
	if err != nil && !(err == io.EOF && int64(got) == n) {
		return nil, fmt.Errorf("reading %s: %w", Escape(t.Path(id)), err)
	}
	buf = buf[:got]
	var out []string
	if isText(buf) {
		out = textLines(string(buf))
	} else {
		// hex.Dump prints only printable ASCII: nothing to escape.
		out = strings.Split(strings.TrimSuffix(hex.Dump(buf), "\n"), "\n")
	}
	if size > n {
		out = append(out, fmt.Sprintf("... (first %d of %d bytes shown)", n, size))
	}
	return out, nil
}

// isText: valid UTF-8 (a rune cut at the end of the prefix allowed), no
// NUL, few control characters.
func isText(b []byte) bool {
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	trim := b
	for i := 0; i < 3 && len(trim) > 0 && !utf8.Valid(trim); i++ {
		trim = trim[:len(trim)-1]
	}
	if !utf8.Valid(trim) {
		return false
	}
	ctl := 0
	for _, c := range trim {
		if c < 0x20 && c != '\n' && c != '\t' && c != '\r' && c != '\f' {
			ctl++
		}
	}
	return ctl*20 <= len(trim)
}

// textLines splits text into escaped lines (tabs expanded first, so that
// tables keep their columns).
func textLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, Escape(expandTabs(l)))
	}
	return out
}

func expandTabs(s string) string {
	if !strings.Contains(s, "\t") {
		return s
	}
	var b strings.Builder
	col := 0
	for _, r := range s {
		if r == '\t' {
			n := 8 - col%8
			b.WriteString(strings.Repeat(" ", n))
			col += n
			continue
		}
		b.WriteRune(r)
		col++
	}
	return b.String()
}

func metaLines(t *overlay.Tree, id overlay.NodeID, r Row, v *LayerView) []string {
	in := t.Attr(id)
	l := []string{
		"path     /" + strings.TrimPrefix(Escape(r.Path), "."),
		fmt.Sprintf("change   %s in layer %d", r.Change, v.Layer),
		fmt.Sprintf("type     %s", kindName(in.Kind)),
		fmt.Sprintf("mode     %s (%04o)", forensics.ModeString(in.Kind, in.Mode), in.Mode),
		fmt.Sprintf("owner    %d:%d", in.UID, in.GID),
		fmt.Sprintf("size     %d (%s)", in.Size, human(in.Size)),
		"mtime    " + fmtTime(in),
		fmt.Sprintf("links    %d   inode %d", in.Nlink, in.Ino),
	}
	if in.Layer >= 0 {
		l = append(l, fmt.Sprintf("from     layer %d, entry %d", in.Layer, in.Entry))
	} else {
		l = append(l, "from     no layer (implicit directory)")
	}
	switch in.Kind {
	case layerindex.KindSymlink:
		l = append(l, "target   "+Escape(in.Link))
	case layerindex.KindChar, layerindex.KindBlock:
		l = append(l, fmt.Sprintf("device   %d,%d", in.DevMajor, in.DevMinor))
	}
	if in.Sparse {
		l = append(l, fmt.Sprintf("sparse   %d data fragments", len(in.SparseMap)))
	}
	if v.Opaque[r.Path] {
		l = append(l, fmt.Sprintf("opaque   layer %d hides everything lower layers had here", v.Layer))
	}
	for _, x := range in.Xattrs {
		l = append(l, "xattr    "+Escape(x.Name)+"="+Escape(x.Value))
	}
	if in.Kind != layerindex.KindDir && in.Nlink > 1 {
		names := hardlinkNames(t, id, 10)
		l = append(l, fmt.Sprintf("hardlinks (%d names):", in.Nlink))
		for _, n := range names {
			l = append(l, "  /"+Escape(n))
		}
		if int(in.Nlink) > len(names) {
			l = append(l, "  ...")
		}
	}
	return l
}

// hardlinkNames lists up to limit paths of the file id is a name of.
func hardlinkNames(t *overlay.Tree, id overlay.NodeID, limit int) []string {
	var names []string
	want := t.InodeIndex(id)
	for n := overlay.RootID; t.Valid(n) && len(names) < limit; n++ {
		if t.InodeIndex(n) == want {
			names = append(names, t.Path(n))
		}
	}
	return names
}

func kindName(k layerindex.Kind) string {
	switch k {
	case layerindex.KindReg:
		return "file"
	case layerindex.KindDir:
		return "dir"
	case layerindex.KindSymlink:
		return "symlink"
	case layerindex.KindHardlink:
		return "hardlink"
	case layerindex.KindChar:
		return "char device"
	case layerindex.KindBlock:
		return "block device"
	case layerindex.KindFIFO:
		return "fifo"
	}
	return "unknown"
}

// human is forensics.HumanSize.
func human(n int64) string { return forensics.HumanSize(n) }

// fit truncates s (plain text, escaped) to w cells, padding to exactly w.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > w {
		s = ansi.Truncate(s, w, "…")
	}
	if pad := w - ansi.StringWidth(s); pad > 0 {
		s += strings.Repeat(" ", pad)
	}
	return s
}
