package explore

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/internal/loader"
	tt "github.com/ocimount/ocimount/internal/tartest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current screens")

// fixture is a small image with every case the tree pane marks: a
// whiteout and a re-add, an opaque directory, a hardlink to a lower
// layer, a metadata-only change, a type change, a device, a symlink, an
// empty history step. Plain tar layers keep digests stable.
func fixture(t testing.TB) (dir string, layers [][]tt.Entry) {
	layers = [][]tt.Entry{
		{tt.Dir("etc", 0o755), tt.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644), tt.File("etc/secret", "hunter2-hunter2\n", 0o600),
			tt.Dir("usr", 0o755), tt.Dir("usr/lib", 0o755), tt.Symlink("lib", "usr/lib"), tt.Dir("srv", 0o755), tt.File("srv/old.txt", "old version\n", 0o644),
			tt.Char("dev/null", 1, 3), tt.FileBytes("bin/app", []byte("\x7fELF\x02\x01\x01\x00binary\x00\x01\x02"), 0o755), tt.File("data/file2dir", "x", 0o644)},
		{tt.Whiteout("etc/secret"), tt.Hardlink("bin/app-link", "bin/app"), tt.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o600),
			tt.File("lib/libx.so", "ELF-ish", 0o755, tt.Xattr("user.origin", "layer1")), tt.Whiteout("data/file2dir"), tt.Dir("data/file2dir", 0o755),
			tt.File("data/file2dir/inner", "now a dir\n", 0o644)},
		{tt.Dir("srv", 0o750), tt.Opaque("srv"), tt.File("srv/new.txt", "new version\n", 0o644, tt.MTime(tt.DefaultMTime.Add(5))),
			tt.File("etc/secret", "rotated\n", 0o600)},
	}
	return writeImage(t, layers, []ocispec.History{
		{CreatedBy: "/bin/sh -c #(nop) ADD file:base in /"},
		{CreatedBy: "/bin/sh -c #(nop) ENV MODE=prod", EmptyLayer: true},
		{CreatedBy: "/bin/sh -c rm /etc/secret && ln /bin/app /bin/app-link"},
		{CreatedBy: "/bin/sh -c rotate-secret"},
	}), layers
}

func writeImage(t testing.TB, layers [][]tt.Entry, hist []ocispec.History) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	img := tt.Image{Ref: "v1", Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, History: hist}
	for _, l := range layers {
		img.Layers = append(img.Layers, tt.ImageLayer{Compression: tt.Uncompressed, Tar: tt.Tar(t, l...)})
	}
	tt.WriteOCILayout(t, dir, img)
	return dir
}

// load loads the image the way the forensics commands do (loader, entry
// tables kept), with view selecting a `..N` tree.
func load(t testing.TB, dir string, view loader.View) *loader.Image {
	t.Helper()
	im, err := loader.Load(context.Background(), blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"},
		blobs.Options{}, loader.Options{CacheDir: t.TempDir(), KeepEntries: true, View: view})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func newModel(t testing.TB, dir string, w, h int) *Model {
	t.Helper()
	im := load(t, dir, loader.View{})
	m, err := New(&Image{Image: &forensics.Image{Meta: im.Image, Layers: im.Tree.Layers(), Tree: im.Tree}, Source: "oci:img:v1"},
		Options{NoColor: true, Output: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	drive(t, m, m.Init())
	drive(t, m, func() tea.Msg { return tea.WindowSizeMsg{Width: w, Height: h} })
	return m
}

// drive runs a command and feeds what it returns back to the model, as
// the bubbletea runtime does, until nothing is left.
func drive(t testing.TB, m *Model, cmd tea.Cmd) {
	t.Helper()
	queue := []tea.Cmd{cmd}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if c == nil {
			continue
		}
		msg := c()
		if b, ok := msg.(tea.BatchMsg); ok {
			queue = append(queue, b...)
			continue
		}
		if _, ok := msg.(tea.QuitMsg); ok {
			continue
		}
		_, next := m.Update(msg)
		queue = append(queue, next)
	}
}

// press sends keys: named ones ("down", "enter") or runes.
func press(t testing.TB, m *Model, keys ...string) {
	t.Helper()
	for _, k := range keys {
		var msg tea.KeyMsg
		switch k {
		case "up":
			msg = tea.KeyMsg{Type: tea.KeyUp}
		case "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		case "left":
			msg = tea.KeyMsg{Type: tea.KeyLeft}
		case "right":
			msg = tea.KeyMsg{Type: tea.KeyRight}
		case "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		case "tab":
			msg = tea.KeyMsg{Type: tea.KeyTab}
		case "pgdown":
			msg = tea.KeyMsg{Type: tea.KeyPgDown}
		case "end":
			msg = tea.KeyMsg{Type: tea.KeyEnd}
		case "home":
			msg = tea.KeyMsg{Type: tea.KeyHome}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd := m.Update(msg)
		drive(t, m, cmd)
	}
}

func screen(m *Model) string { return ansi.Strip(m.View()) }

// selectLayer moves the layers pane to layer n.
func selectLayer(t testing.TB, m *Model, n int) {
	t.Helper()
	if m.focus != paneLayers {
		press(t, m, "tab")
	}
	press(t, m, "home")
	for m.SelectedLayer() != n {
		before := m.SelectedLayer()
		press(t, m, "down")
		if m.SelectedLayer() == before {
			t.Fatalf("no layer %d", n)
		}
	}
	if m.LayerView() == nil || m.LayerView().Layer != n {
		t.Fatalf("layer %d not shown", n)
	}
}

// The tree shown for each layer is what `diff --layer N` and `ls -R
// --layers ..N` say: the same trees (the loader's ..N views, loaded
// independently here) and the same diff function. Rows other than
// removed ones are the ..N tree; marked rows, in order, are the diff's
// lines.
func TestTreeMatchesDiffAndPrefixView(t *testing.T) {
	dir, layers := fixture(t)
	m := newModel(t, dir, 120, 40)
	for n := range layers {
		selectLayer(t, m, n)
		press(t, m, "tab", "x") // the tree pane, every directory open
		var paths, marks []string
		for _, r := range m.Rows() {
			if r.Change != Removed {
				paths = append(paths, "/"+r.Path)
			}
			if r.Change != Unchanged {
				marks = append(marks, r.Change.Letter()+" /"+r.Path)
			}
		}
		wantPaths, wantMarks := prefixAnswers(t, dir, n)
		if !slices.Equal(paths, wantPaths) {
			t.Errorf("layer %d: tree\n%q\nls -R --layers ..%d\n%q", n, paths, n, wantPaths)
		}
		if !slices.Equal(marks, wantMarks) {
			t.Errorf("layer %d: marks\n%q\ndiff --layer %d\n%q", n, marks, n, wantMarks)
		}
		// Changes only: the same marks, and nothing unchanged but the
		// directories that lead to them.
		press(t, m, "c", "x")
		var only []string
		for _, r := range m.Rows() {
			if r.Change != Unchanged {
				only = append(only, r.Change.Letter()+" /"+r.Path)
			} else if !r.Dir || !m.LayerView().Dirty[r.Path] {
				t.Errorf("layer %d changes only: unchanged %s shown", n, r.Path)
			}
		}
		if !slices.Equal(only, wantMarks) {
			t.Errorf("layer %d changes only: marks\n%q\nwant\n%q", n, only, wantMarks)
		}
		press(t, m, "c")
	}
}

// prefixAnswers loads the ..n and ..n-1 views as `ls --layers` and `diff
// --layer` do and returns ls -R's paths and diff's lines (the root's own
// line left out: the pane has no row for it).
func prefixAnswers(t testing.TB, dir string, n int) (paths, marks []string) {
	after := load(t, dir, loader.View{Kind: loader.ViewPrefix, Layer: n}).Tree
	var ls bytes.Buffer
	if err := forensics.List(&ls, after, "/", forensics.ListOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(ls.String()), "\n") {
		f := strings.Fields(l)
		paths = append(paths, "/"+strings.TrimSuffix(f[1], "/"))
	}
	before, err := PrefixTree(nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		before = load(t, dir, loader.View{Kind: loader.ViewPrefix, Layer: n - 1}).Tree
	}
	var diff bytes.Buffer
	if _, err := forensics.DiffTrees(&diff, before, after, forensics.DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(diff.String()), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		l, _, _ = strings.Cut(l, "  (")
		if l[2:] != "/" {
			marks = append(marks, l)
		}
	}
	return paths, marks
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, p, got, want)
	}
}

// Golden screens of the fixture at the smallest and a larger size, with
// NO_COLOR: the layers, the tree of the layer that deletes and re-adds,
// details with history and a quick look, the waste, the help.
func TestGoldenScreens(t *testing.T) {
	dir, _ := fixture(t)
	for _, sz := range [][2]int{{80, 24}, {120, 40}} {
		name := func(s string) string { return fmt.Sprintf("%s-%dx%d", s, sz[0], sz[1]) }
		m := newModel(t, dir, sz[0], sz[1])
		check := func(s string) {
			t.Helper()
			v := m.View()
			if strings.Contains(v, "\x1b") {
				t.Errorf("%s: escape sequence with NO_COLOR:\n%q", s, v)
			}
			lines := strings.Split(v, "\n")
			if len(lines) != sz[1] {
				t.Errorf("%s: %d lines, want %d", s, len(lines), sz[1])
			}
			for i, l := range lines {
				if w := ansi.StringWidth(l); w > sz[0] {
					t.Errorf("%s: line %d is %d wide: %q", s, i, w, l)
				}
			}
			golden(t, name(s), v)
		}
		check("open")
		selectLayer(t, m, 1)
		press(t, m, "tab", "x")
		check("layer1")
		press(t, m, "/", "e", "t", "c", "enter")
		check("filter")
		press(t, m, "down", "down", "enter")
		check("details")
		press(t, m, "esc", "esc", "f", "f", "f")
		check("removed")
		press(t, m, "w")
		check("waste")
		press(t, m, "?")
		check("help")
		press(t, m, "end")
		if last := m.helpLines()[len(m.helpLines())-1]; !strings.Contains(screen(m), last) {
			t.Errorf("%dx%d: help scrolled to the end does not show its last line:\n%s", sz[0], sz[1], screen(m))
		}
	}
}

// Hostile names, link targets, xattrs and contents never reach the
// terminal raw: every screen is valid UTF-8 with no control byte but the
// line breaks, and the names show up escaped.
func TestHostileNames(t *testing.T) {
	long := strings.Repeat(strings.Repeat("d", 250)+"/", 16) + strings.Repeat("f", 4096-16*251) // a 4,096-byte path
	hostile := []string{"nl\nname", "esc\x1b[31mred\x1b[0m", "bad\xff\xfeutf8", "bidi\u202eexe.txt", "bell\a", "cr\rhide"}
	var l0 []tt.Entry
	for _, h := range hostile {
		l0 = append(l0, tt.File("h/"+h, "content of "+h+"\x1b]0;title\a\n", 0o644, tt.Xattr("user.x", "\x1b[2J")))
	}
	l0 = append(l0, tt.Symlink("h/link", "\x1b[1;1Htarget\n"), tt.File(long, "deep", 0o644))
	dir := writeImage(t, [][]tt.Entry{l0, {tt.Whiteout("h/" + hostile[0])}}, nil)
	for _, sz := range [][2]int{{80, 24}, {120, 40}} {
		m := newModel(t, dir, sz[0], sz[1])
		clean := func(what string) string {
			t.Helper()
			v := m.View()
			if !utf8.ValidString(v) {
				t.Errorf("%s: invalid UTF-8 on screen: %q", what, v)
			}
			for _, r := range v {
				if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == '\u202e' {
					t.Fatalf("%s: raw control %U on screen:\n%q", what, r, v)
				}
			}
			return v
		}
		press(t, m, "tab", "x")
		var all strings.Builder
		for range len(m.Rows()) {
			all.WriteString(clean("tree"))
			press(t, m, "down")
		}
		for _, want := range []string{`nl\nname`, `esc\x1b[31mred\x1b[0m`, `bad\xff\xfeutf8`, `bidi\u202eexe.txt`, `bell\x07`, `cr\rhide`, `link -> \x1b[1;1Htarget\n`} {
			if !strings.Contains(all.String(), want) {
				t.Errorf("%dx%d: %s not shown escaped", sz[0], sz[1], want)
			}
		}
		// Details (name, xattr, content, history) of each entry, and the
		// status line, the filter input and the layers with a hostile filter.
		press(t, m, "home")
		for i := range len(m.Rows()) {
			if !m.Rows()[i].Dir {
				press(t, m, "d")
				v := clean("details")
				for range 100 { // every page (a 4,096-byte path wraps over many)
					press(t, m, "pgdown")
					p := clean("details")
					if p == v[len(v)-len(p):] {
						break
					}
					v += p
				}
				if !strings.Contains(v, `\x1b`) && !strings.Contains(v, "deep") {
					t.Errorf("details of %q show nothing escaped:\n%s", m.Rows()[i].Path, v)
				}
				press(t, m, "esc")
			}
			press(t, m, "down")
		}
		press(t, m, "/")
		_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("\x1b[31m\n")})
		drive(t, m, cmd)
		clean("filter input")
		press(t, m, "enter", "w")
		clean("waste")
	}
}

// The first screen shows the image's tree before the last layer's marks
// are computed (no merge or diff stands between the indexes and it), and
// the marks replace the blanks when they come; a resize redraws at the
// new size.
func TestFirstScreenBeforeMarks(t *testing.T) {
	dir, _ := fixture(t)
	im := load(t, dir, loader.View{})
	m, err := New(&Image{Image: &forensics.Image{Meta: im.Image, Layers: im.Tree.Layers(), Tree: im.Tree}, Source: "img"},
		Options{NoColor: true, Output: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := m.Init()
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	scr := screen(m)
	if !strings.Contains(scr, "marking what the layer changed") || !strings.Contains(scr, "srv/") || strings.Contains(scr, " U d") {
		t.Fatalf("first screen:\n%s", scr)
	}
	drive(t, m, cmd)
	if scr = screen(m); !strings.Contains(scr, "m drwxr-x---") || strings.Contains(scr, "marking") {
		t.Fatalf("after the marks:\n%s", scr)
	}
	for _, sz := range [][2]int{{120, 40}, {81, 30}, {80, 24}} {
		m.Update(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		lines := strings.Split(screen(m), "\n")
		if len(lines) != sz[1] || ansi.StringWidth(lines[0]) != sz[0] {
			t.Errorf("%dx%d: %d lines, %d wide", sz[0], sz[1], len(lines), ansi.StringWidth(lines[0]))
		}
	}
	m.Update(tea.WindowSizeMsg{Width: 60, Height: 20})
	if scr = screen(m); !strings.Contains(scr, "needs at least 80x24") {
		t.Errorf("too small:\n%s", scr)
	}
}

// With Options.Entries the model starts from the image `ls` loads (no
// entry tables: the cached tree) and fills in the rest when the tables
// come; the screen then is the one of a model that had them at once.
func TestOpensBeforeEntryTables(t *testing.T) {
	dir, _ := fixture(t)
	cache := t.TempDir()
	src := blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"}
	var light *loader.Image
	for range 2 { // the second load maps the tree the first one cached
		var err error
		if light, err = loader.Load(context.Background(), src, blobs.Options{}, loader.Options{CacheDir: cache}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { light.Close() })
	}
	if !light.Tree.Mapped() {
		t.Fatal("the light load did not map the cached tree")
	}
	loaded := false
	m, err := New(&Image{Image: &forensics.Image{Meta: light.Image, Layers: light.Tree.Layers(), Tree: light.Tree}, Source: "oci:img:v1"},
		Options{NoColor: true, Output: &bytes.Buffer{}, Entries: func() (*forensics.Image, error) {
			loaded = true
			im := load(t, dir, loader.View{})
			return &forensics.Image{Meta: im.Image, Layers: im.Tree.Layers(), Tree: im.Tree}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := m.Init()
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	scr := screen(m)
	if loaded || !strings.Contains(scr, "(entry tables loading...)") || !strings.Contains(scr, "srv/") ||
		!strings.Contains(scr, "...  /bin/sh -c rotate-secret") {
		t.Fatalf("before the tables (loaded %v):\n%s", loaded, scr)
	}
	// Details and waste asked for before the tables wait for them.
	press(t, m, "tab", "end", "d")
	if scr = screen(m); !strings.Contains(scr, "waiting for the layers' entry tables") {
		t.Fatalf("details before the tables:\n%s", scr)
	}
	drive(t, m, cmd)
	if scr = screen(m); !strings.Contains(scr, "history of /usr") || !strings.Contains(scr, "added") {
		t.Fatalf("details after the tables:\n%s", scr)
	}
	press(t, m, "esc", "home", "tab")
	want := newModel(t, dir, 120, 40)
	if got, w := screen(m), screen(want); got != w {
		t.Errorf("screen after the tables:\n%s\nwant:\n%s", got, w)
	}
}
