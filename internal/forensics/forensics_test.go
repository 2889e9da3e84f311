package forensics

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/overlay"
)

// Short names for the layer builders.
type Entry = tartest.Entry

var (
	Dir, File, Symlink, Hardlink = tartest.Dir, tartest.File, tartest.Symlink, tartest.Hardlink
	Whiteout, Opaque, Char, FIFO = tartest.Whiteout, tartest.Opaque, tartest.Char, tartest.FIFO
	Owner, Xattr, MTime          = tartest.Owner, tartest.Xattr, tartest.MTime
	DefaultMTime                 = tartest.DefaultMTime
)

// historyLine is an event in a compact form: "LAYER EVENT [fields] [by ...]".
func historyLine(e HistoryEvent) string {
	s := fmt.Sprintf("%d %s", e.Layer, e.Event)
	if len(e.Fields) > 0 {
		s += " " + strings.Join(e.Fields, ",")
	}
	if e.By != "" {
		s += " by " + e.By
	}
	if e.FromLayer != nil {
		s += fmt.Sprintf(" from %d", *e.FromLayer)
	}
	return s
}

func TestHistory(t *testing.T) {
	cases := []struct {
		name   string
		layers [][]Entry
		path   string
		want   []string
	}{
		{"whiteout-then-readd", [][]Entry{
			{Dir("a", 0o755), File("a/x", "one", 0o644)},
			{Whiteout("a/x")},
			{File("a/x", "two!", 0o644)},
		}, "a/x", []string{"0 added", "1 deleted by whiteout a/.wh.x", "2 re-added"}},
		{"whiteout-of-parent", [][]Entry{
			{Dir("a", 0o755), File("a/x", "one", 0o644)},
			{Whiteout("a")},
		}, "/a/x", []string{"0 added", "1 deleted by whiteout .wh.a"}},
		{"opaque-dir", [][]Entry{
			{Dir("a", 0o755), File("a/x", "x", 0o644)},
			{Dir("a", 0o755), Opaque("a"), File("a/new", "n", 0o644)},
		}, "a/x", []string{"0 added", "1 deleted by opaque /a"}},
		{"opaque-keeps-own-readd", [][]Entry{
			{Dir("a", 0o755), File("a/x", "old", 0o644)},
			{Opaque("a"), File("a/x", "new", 0o644)},
		}, "a/x", []string{"0 added", "1 modified content"}},
		{"hardlink-to-lower", [][]Entry{
			{File("f", "data", 0o644)},
			{Hardlink("g", "f")},
		}, "g", []string{"1 added from 0"}},
		{"metadata-only", [][]Entry{
			{File("f", "data", 0o644)},
			{File("f", "data", 0o600, Owner(1, 2))},
		}, "f", []string{"0 added", "1 metadata mode,owner"}},
		{"same-size-new-content", [][]Entry{
			{File("f", "aaaa", 0o644)},
			{File("f", "bbbb", 0o644)},
		}, "f", []string{"0 added", "1 modified content"}},
		{"rewritten-identical", [][]Entry{
			{File("f", "aaaa", 0o644)},
			{File("f", "aaaa", 0o644)},
		}, "f", []string{"0 added", "1 rewritten"}},
		{"type-change", [][]Entry{
			{File("f", "aaaa", 0o644)},
			{Symlink("f", "elsewhere")},
		}, "f", []string{"0 added", "1 modified type,mode"}},
		{"symlinked-parent", [][]Entry{
			{Dir("usr", 0o755), Dir("usr/lib", 0o755), Symlink("lib", "usr/lib")},
			{File("lib/x", "via link", 0o644)},
			{File("usr/lib/x", "direct", 0o644)},
		}, "lib/x", []string{"1 added", "2 modified size,content"}},
		{"parent-replaced", [][]Entry{
			{Dir("d", 0o755), File("d/f", "f", 0o644)},
			{File("d", "now a file", 0o644)},
		}, "d/f", []string{"0 added", "1 deleted by parent replaced by d"}},
		{"dir-attrs", [][]Entry{
			{Dir("d", 0o755)},
			{Dir("d", 0o700)},
			{File("d/f", "x", 0o644)},
		}, "d", []string{"0 added", "1 metadata mode"}},
		// A .wh.d directory entry whites out d; what it holds is shown
		// below an implied .wh.d, as the merge (and umoci) make it.
		{"whiteout-dir-entry", [][]Entry{
			{Dir("d", 0o755), File("d/f", "f", 0o644)},
			{Dir(".wh.d", 0o755), File(".wh.d/child", "c", 0o644)},
		}, "d/f", []string{"0 added", "1 deleted by whiteout .wh.d"}},
		{"below-whiteout-dir", [][]Entry{
			{Dir("d", 0o755), File("d/f", "f", 0o644)},
			{Dir(".wh.d", 0o755), File(".wh.d/child", "c", 0o644)},
			{File(".wh.d/.wh.child", "", 0o644)},
		}, ".wh.d/child", []string{"1 added", "2 deleted by whiteout .wh.d/.wh.child"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := History(layersOf(t, c.layers...), c.path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range r.Events {
				got = append(got, historyLine(e))
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("history of %s:\n got %q\nwant %q", c.path, got, c.want)
			}
		})
	}
}

func TestHistoryErrors(t *testing.T) {
	ls := layersOf(t, []Entry{File("f", "x", 0o644)})
	if _, err := History(ls, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "/nope") {
		t.Errorf("missing path: %v", err)
	}
	if _, err := History(ls, "../f"); !errors.Is(err, ErrBadPath) {
		t.Errorf("bad path: %v", err)
	}
}

// diffLines runs DiffTrees between the image after layer n-1 and after n.
func diffLayer(t *testing.T, ls []overlay.Layer, n int, o DiffOptions) string {
	t.Helper()
	before := merged(t, ls[:n])
	after := merged(t, ls[:n+1])
	var b bytes.Buffer
	if _, err := DiffTrees(&b, before, after, o); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestDiffLayer(t *testing.T) {
	ls := layersOf(t,
		[]Entry{Dir("a", 0o755), File("a/x", "x", 0o644), File("a/y", "yyyy", 0o644), Dir("b", 0o755), File("b/k", "k", 0o644),
			File("meta", "m", 0o644), File("same", "same", 0o644), Dir("gone", 0o755), File("gone/1", "1", 0o644), File("f2d", "f", 0o644)},
		[]Entry{Whiteout("a/x"), File("a/y", "zzzz", 0o644), Opaque("b"), File("b/n", "n", 0o644), File("meta", "m", 0o600),
			File("same", "same", 0o644), Whiteout("gone"), Dir("f2d", 0o755), File("f2d/in", "in", 0o644), Hardlink("hl", "a/y")},
	)
	got := diffLayer(t, ls, 1, DiffOptions{})
	want := `D /a/x
M /a/y  (content)
D /b/k
A /b/n
M /f2d  (type file -> dir)
A /f2d/in
D /gone
D /gone/1
A /hl
m /meta  (mode 0644 -> 0600)
# 5 added... 
`
	_ = want
	for _, line := range []string{"D /a/x\n", "M /a/y  (content)\n", "D /b/k\n", "A /b/n\n", "M /f2d  (type file -> dir)\n",
		"A /f2d/in\n", "D /gone\n", "D /gone/1\n", "A /hl\n", "m /meta  (mode 0644 -> 0600)\n",
		"# 3 added, 4 removed, 2 modified, 1 metadata only\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("diff lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(got, "/same") {
		t.Errorf("identical rewrite reported:\n%s", got)
	}
	if g := diffLayer(t, ls, 1, DiffOptions{NoMetadata: true}); strings.Contains(g, "/meta") || !strings.Contains(g, "1 metadata only") {
		t.Errorf("--no-metadata:\n%s", g)
	}
	// Layer 0 against nothing: everything added.
	if g := diffLayer(t, ls, 0, DiffOptions{}); !strings.Contains(g, "# 10 added, 0 removed") {
		t.Errorf("layer 0:\n%s", g)
	}
}

func TestDiffTreesOrderAndEquality(t *testing.T) {
	a := merged(t, layersOf(t, []Entry{File("m", "1", 0o644), File("z", "1", 0o644), Dir("d", 0o755), File("d/x", "1", 0o644)}))
	b := merged(t, layersOf(t, []Entry{File("a", "1", 0o644), Dir("d", 0o755), File("d/x", "2", 0o644), File("z", "1", 0o644)}))
	var out bytes.Buffer
	if _, err := DiffTrees(&out, a, b, DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "A /a\nM /d/x  (content)\nD /m\n# 1 added, 1 removed, 1 modified, 0 metadata only\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if _, err := DiffTrees(&out, a, a, DiffOptions{}); err != nil || out.String() != "# 0 added, 0 removed, 0 modified, 0 metadata only\n" {
		t.Errorf("self diff: %v %q", err, out.String())
	}
}

func TestWaste(t *testing.T) {
	big := strings.Repeat("s", 1000)
	ls := layersOf(t,
		[]Entry{Dir("etc", 0o755), File("etc/secret", big, 0o600), File("etc/keep", "k", 0o644), Dir("opq", 0o755), File("opq/old", "0123456789", 0o644),
			File("dup", "first", 0o644), File("dup", "second!", 0o644), File("shared", "shared-data", 0o644), Dir("p", 0o755), File("p/c", "child", 0o644)},
		[]Entry{Whiteout("etc/secret"), Hardlink("link", "shared"), Opaque("opq"), File("p", "file now", 0o644)},
		[]Entry{File("etc/keep", "kk", 0o644), Whiteout("shared")},
	)
	r, err := Waste(ls, merged(t, ls))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.Entries {
		got = append(got, fmt.Sprintf("%d %s@%d %s@%d", e.Size, e.Path, e.Layer, e.How, e.HiddenBy))
	}
	want := []string{"1000 etc/secret@0 whiteout@1", "10 opq/old@0 opaque@1", "5 dup@0 duplicate in layer@0",
		"5 p/c@0 parent replaced@1", "1 etc/keep@0 overwritten@2"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("waste:\n got %q\nwant %q", got, want)
	}
	if r.TotalBytes != 1021 {
		t.Errorf("total %d", r.TotalBytes)
	}
}

func TestCat(t *testing.T) {
	tree := merged(t, layersOf(t, []Entry{
		Dir("etc", 0o755), File("etc/f", "hello", 0o644), Symlink("abs", "/etc/f"), Symlink("rel", "etc/f"),
		Symlink("etc/up", "../etc/f"), Symlink("escape", "../../etc/passwd"), Symlink("loop", "loop"),
		Symlink("dirlink", "etc"), Char("null", 1, 3), Symlink("dangling", "/nowhere"),
		Symlink("etc/clamped", "../../../../etc/f"),
	}))
	// ".." at the root stays at the root, as in the mount and an extracted
	// rootfs: etc/clamped is etc/f, escape is the missing /etc/passwd.
	for _, p := range []string{"etc/f", "/abs", "rel", "etc/up", "dirlink/f", "./dirlink/up", "etc/clamped"} {
		var b bytes.Buffer
		if err := Cat(&b, tree, p); err != nil || b.String() != "hello" {
			t.Errorf("cat %s: %q %v", p, b.String(), err)
		}
	}
	for p, want := range map[string]error{"escape": ErrNotFound, "loop": ErrLoop, "etc": ErrIsDir, "dirlink": ErrIsDir,
		"null": ErrNotFile, "nope": ErrNotFound, "dangling": ErrNotFound, "etc/../etc/f": ErrBadPath, "etc/f/x": nil} {
		err := Cat(io.Discard, tree, p)
		if err == nil || want != nil && !errors.Is(err, want) {
			t.Errorf("cat %s: %v, want %v", p, err, want)
		}
	}
}

func TestList(t *testing.T) {
	tree := merged(t, layersOf(t,
		[]Entry{Dir("a", 0o755), File("a/x", "x", 0o644), Dir("a/b", 0o700), File("a/b/c", "cc", 0o600, Owner(1, 1)), File("z", "", 0o644)},
		[]Entry{File("a/b/d", "ddd", 0o644), Symlink("s", "a/x")},
	))
	var b bytes.Buffer
	if err := List(&b, tree, "/", ListOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	want := "0   a/\n0   a/b/\n0   a/b/c\n1   a/b/d\n0   a/x\n1   s -> a/x\n0   z\n"
	if b.String() != want {
		t.Errorf("ls -R:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := List(&b, tree, "a", ListOptions{}); err != nil || b.String() != "0   a/b/\n0   a/x\n" {
		t.Errorf("ls a: %q %v", b.String(), err)
	}
	b.Reset()
	if err := List(&b, tree, "a/x", ListOptions{}); err != nil || b.String() != "0   a/x\n" {
		t.Errorf("ls a/x: %q %v", b.String(), err)
	}
	if err := List(&b, tree, "nope", ListOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("ls nope: %v", err)
	}
	if err := List(&b, tree, "s/x", ListOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("ls through a symlink: %v", err)
	}
}

func TestExport(t *testing.T) {
	ls := layersOf(t,
		[]Entry{Dir("./", 0o750), Dir("d", 0o755), File("d/f", "data", 0o644, Xattr("user.k", "v\x00\xff")), Hardlink("d/g", "d/f"),
			Char("dev/null", 1, 3), FIFO("p"), Symlink("s", "/d/f"), File("gone", "x", 0o644)},
		[]Entry{Whiteout("gone"), Hardlink("h2", "d/f"), File("n", "nanos", 0o644, MTime(DefaultMTime.Add(123)))},
	)
	tree := merged(t, ls)
	var b bytes.Buffer
	if err := Export(&b, tree); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := Export(&again, tree); err != nil || !bytes.Equal(b.Bytes(), again.Bytes()) {
		t.Fatalf("export is not deterministic (%v)", err)
	}
	tr := tar.NewReader(&b)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		s := fmt.Sprintf("%s %c %o", h.Name, h.Typeflag, h.Mode)
		switch h.Typeflag {
		case tar.TypeLink, tar.TypeSymlink:
			s += " -> " + h.Linkname
		case tar.TypeChar:
			s += fmt.Sprintf(" %d,%d", h.Devmajor, h.Devminor)
		case tar.TypeReg:
			s += " " + string(body)
		}
		if v, ok := h.PAXRecords["SCHILY.xattr.user.k"]; ok {
			s += fmt.Sprintf(" xattr=%q", v)
		}
		if h.ModTime.Nanosecond() != 0 {
			s += fmt.Sprintf(" ns=%d", h.ModTime.Nanosecond())
		}
		got = append(got, s)
	}
	// Depth-first, by name; the first name of a hardlinked file carries
	// the data, later ones link to it.
	want := []string{"./ 5 750", "d/ 5 755", `d/f 0 644 data xattr="v\x00\xff"`, "d/g 1 644 -> d/f", "dev/ 5 755",
		"dev/null 3 666 1,3", "h2 1 644 -> d/f", "n 0 644 nanos ns=123", "p 6 644", "s 2 777 -> /d/f"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("export:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCatThroughEscapingSymlink: a later layer's p/evil below p ->
// ../../../../tmp/x lands at tmp/x/evil (the merge resolves the parent
// inside the root, as umoci does), and cat finds it by both paths: the
// commands resolve paths by the same rule as the merge and the mount.
func TestCatThroughEscapingSymlink(t *testing.T) {
	tree := merged(t, layersOf(t,
		[]Entry{Symlink("p", "../../../../tmp/x")},
		[]Entry{File("p/evil", "evil", 0o644)},
	))
	for _, p := range []string{"p/evil", "tmp/x/evil", "/p/evil"} {
		var b bytes.Buffer
		if err := Cat(&b, tree, p); err != nil || b.String() != "evil" {
			t.Errorf("cat %s: %q %v", p, b.String(), err)
		}
	}
	if got, err := fs.ReadFile(tree.FS(), "p/evil"); err != nil || string(got) != "evil" {
		t.Errorf("io/fs view p/evil: %q %v", got, err)
	}
}

// TestWhiteoutDirForensics: inspect, waste and ls agree with the merge on
// a layer holding a .wh.d directory with entries below it (one classifier,
// overlay.ClassifyName): one whiteout, d's file hidden by it, and the
// entries below shown and not counted as waste.
func TestWhiteoutDirForensics(t *testing.T) {
	ls := layersOf(t,
		[]Entry{Dir("d", 0o755), File("d/old", "0123456789", 0o644)},
		[]Entry{Dir(".wh.d", 0o755), File(".wh.d/child", "child", 0o644), File(".wh.d/.wh.nothing", "", 0o644), Opaque(".wh.d")},
	)
	tree := merged(t, ls)
	if wh, opq := countWhiteouts(ls[1]); wh != 2 || opq != 1 {
		t.Errorf("countWhiteouts = %d, %d; want 2, 1", wh, opq)
	}
	r, err := Waste(ls, tree)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.Entries {
		got = append(got, fmt.Sprintf("%d %s@%d %s@%d", e.Size, e.Path, e.Layer, e.How, e.HiddenBy))
	}
	if want := []string{"10 d/old@0 whiteout@1"}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("waste: %q, want %q", got, want)
	}
	var b bytes.Buffer
	if err := Cat(&b, tree, ".wh.d/child"); err != nil || b.String() != "child" {
		t.Errorf("cat .wh.d/child: %q %v", b.String(), err)
	}
}
