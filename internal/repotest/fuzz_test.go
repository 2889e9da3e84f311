package repotest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

// fuzzTargets finds every fuzz target the Go way: a top-level func named
// Fuzz* taking one *testing.F, in a _test.go file of a directory go test
// would build (not testdata, not one starting with "." or "_").
func fuzzTargets(t *testing.T) []string {
	t.Helper()
	var found []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Fuzz") || !takesTestingF(fn) {
				continue
			}
			found = append(found, filepath.ToSlash(dir)+" "+fn.Name.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(found)
	return found
}

func takesTestingF(fn *ast.FuncDecl) bool {
	ps := fn.Type.Params.List
	if len(ps) != 1 || len(ps[0].Names) > 1 {
		return false
	}
	star, ok := ps[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "testing" && sel.Sel.Name == "F"
}

// `make fuzz` runs every fuzz target in the tree: the Makefile hands the
// job to scripts/fuzz.sh, and the script's discovery (a grep) finds the
// same targets as the Go parser.
func TestMakeFuzzRunsEveryTarget(t *testing.T) {
	want := fuzzTargets(t)
	if len(want) < 13 {
		t.Fatalf("found only %d fuzz targets; is the walk broken? %q", len(want), want)
	}

	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`(?m)^fuzz:.*\n((?:\t.*\n)+)`).FindSubmatch(mk)
	if rule == nil {
		t.Fatal("the Makefile has no fuzz rule")
	}
	if !strings.Contains(string(rule[1]), "scripts/fuzz.sh") {
		t.Fatalf("the Makefile's fuzz rule does not run scripts/fuzz.sh:\n%s", rule[0])
	}
	if strings.Contains(string(rule[1]), "-fuzz ") {
		t.Errorf("the Makefile's fuzz rule names targets itself; scripts/fuzz.sh finds them:\n%s", rule[1])
	}

	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash to run scripts/fuzz.sh")
	}
	cmd := exec.Command("bash", "scripts/fuzz.sh", "-l")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/fuzz.sh -l: %v", err)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(got)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("scripts/fuzz.sh does not run %s (DIR NAME); it lists:\n%s", w, out)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("scripts/fuzz.sh would run %q, which is no fuzz target", g)
		}
	}
}
