package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stampRepo != "" {
		os.RemoveAll(filepath.Dir(stampRepo))
	}
	os.Exit(code)
}

var (
	stampOnce sync.Once
	stampBin  string // the binary, named ocimount
	stampRepo string // the git repository it was built in
	stampRev  string // that repository's HEAD
	stampErr  error
)

// stampedBinary builds ocimount as the Makefile does (-tags
// urfave_cli_no_docs), from a copy of this source tree committed to a
// fresh git repository, and returns the binary, the repository and its
// commit. A copy, because go build stamps no VCS information in a linked
// git worktree (golang/go#58218), where several of us work, and the copy
// is also where the test can make the tree dirty.
func stampedBinary(t *testing.T) (bin, repo, rev string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	for _, tool := range []string{"go", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	stampOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ocimount-stamp-")
		if err != nil {
			stampErr = err
			return
		}
		stampRepo = filepath.Join(dir, "src") // TestMain removes dir
		if stampErr = copySource("../..", stampRepo); stampErr != nil {
			return
		}
		git := func(args ...string) (string, error) {
			// Named explicitly, so that nothing here can reach the
			// repository the test runs in.
			return run(stampRepo, "git", append([]string{
				"--git-dir=" + filepath.Join(stampRepo, ".git"), "--work-tree=" + stampRepo,
				"-c", "user.name=ocimount test", "-c", "user.email=test@invalid", "-c", "commit.gpgsign=false",
			}, args...)...)
		}
		for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "snapshot for the version test"}} {
			if _, stampErr = git(args...); stampErr != nil {
				return
			}
		}
		out, err := git("rev-parse", "HEAD")
		if err != nil {
			stampErr = err
			return
		}
		stampRev = strings.TrimSpace(out)
		stampBin = filepath.Join(dir, "bin", "ocimount")
		stampErr = buildStamped(stampRepo, stampBin)
	})
	if stampErr != nil {
		t.Fatal(stampErr)
	}
	return stampBin, stampRepo, stampRev
}

// buildStamped runs go build with -buildvcs=true, which overrides a
// -buildvcs=false in GOFLAGS; -trimpath keeps the build cache valid across
// the temporary directories.
func buildStamped(repo, bin string) error {
	_, err := run(repo, "go", "build", "-buildvcs=true", "-trimpath", "-tags", "urfave_cli_no_docs", "-o", bin, "./cmd/ocimount")
	return err
}

// copySource copies what building cmd/ocimount needs: the module files and
// every non-test file outside .git, tests/, testdata/ and bin/.
func copySource(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			// A directory, or in a linked worktree a file naming one:
			// either way the copy must not share it.
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			switch d.Name() {
			case "tests", "testdata", "bin":
				if rel != "." {
					return filepath.SkipDir
				}
			}
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() > 4<<20 {
			return err // a stray binary or image, not source
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
}

func run(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	// The repository is the one in dir, whatever git hook or checkout the
	// test runs under.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// The built binary names the commit it was built from, and "-dirty" once
// the tree has changes no commit holds; --version and the version command
// agree.
func TestBinaryPrintsRevision(t *testing.T) {
	bin, repo, rev := stampedBinary(t)
	out, err := run(repo, bin, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^revision ` + rev + ` \(committed `).MatchString(out) {
		t.Errorf("--version does not name commit %s (clean):\n%s", rev, out)
	}
	if !strings.HasPrefix(out, "ocimount version ") || !strings.Contains(out, "\ngo1.") {
		t.Errorf("--version:\n%s", out)
	}
	out2, err := run(repo, bin, "version")
	if err != nil || out2 != out {
		t.Errorf("version command: %v\n%s\nwant the --version text:\n%s", err, out2, out)
	}

	if err := os.WriteFile(filepath.Join(repo, "uncommitted"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirty := filepath.Join(t.TempDir(), "ocimount")
	if err := buildStamped(repo, dirty); err != nil {
		t.Fatal(err)
	}
	out, err = run(repo, dirty, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "\nrevision "+rev+"-dirty ") {
		t.Errorf("--version of a build from a modified tree does not say %s-dirty:\n%s", rev, out)
	}
}
