package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// completionCases: a command line up to the cursor, and the candidates the
// shell must offer (sorted as ocimount lists them; nil: none, so the shell
// completes file names). The binary is built with urfave_cli_no_docs, as
// the Makefile builds it.
var completionCases = []struct {
	line string
	bash []string // after bash's prefix filter
}{
	{"ocimount ca", []string{"cache", "cat"}},
	{"ocimount cache ", []string{"ls", "prune"}},
	{"ocimount completion ", []string{"bash", "zsh"}},
	{"ocimount mount --pl", []string{"--platform", "--plain-http"}},
	{"ocimount diff --la", []string{"--layer"}},
	{"ocimount --ver", []string{"--version"}},
	{"ocimount inspect oci:dir:1.0 --j", []string{"--json"}},
	{"ocimount ./image ", nil}, // the shorthand's MOUNTPOINT
	{"ocimount mount ", nil},   // SOURCE, not urfave's "help"
	{"ocimount cache ls -", []string{"--cache-dir", "--help", "-h"}},
	{"ocimount mount --platform ", nil},         // a flag's value
	{"ocimount bundle img /run/b -- ", nil},     // after "--" ocimount is not asked: it would run the command
	{"ocimount bundle img /run/b -- --", nil},   // nor is "--" sent
	{"ocimount export img --output /tmp/", nil}, // paths
}

func completionEnv(t *testing.T) []string {
	bin, _, _ := stampedBinary(t)
	return append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
}

func TestBashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	env := completionEnv(t)
	for _, tc := range completionCases {
		script := `source <(ocimount completion bash) || exit 1
COMP_LINE=$1 COMP_POINT=${#1}
_ocimount
printf '%s\n' "${COMPREPLY[@]}"
complete -p ocimount >&2`
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script, "bash", tc.line)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, stderr.String())
		}
		if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(tc.bash, " ") {
			t.Errorf("bash, %q: got %q, want %q", tc.line, got, tc.bash)
		}
		if !strings.Contains(stderr.String(), "-o default") {
			t.Errorf("bash, %q: completion not registered with file fallback: %s", tc.line, stderr.String())
		}
	}
}

// zsh's completion system needs a terminal; compadd, _files and compdef are
// stubbed to print what they were given.
func TestZshCompletion(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("no zsh")
	}
	env := completionEnv(t)
	for _, tc := range completionCases {
		script := `compdef() { print -u2 "compdef $*" }
compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }
_files() { print FILES }
source <(ocimount completion zsh) || exit 1
words=("${(@z)1}")
[[ $1 == *' ' ]] && words+=('')
CURRENT=${#words}
_ocimount
true`
		cmd := exec.Command("zsh", "-f", "-c", script, "zsh", tc.line)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, stderr.String())
		}
		// zsh filters by prefix itself, so the stub sees every candidate:
		// compare those that fit.
		cur := tc.line[strings.LastIndex(tc.line, " ")+1:]
		var got []string
		files := false
		for _, w := range strings.Fields(string(out)) {
			switch {
			case w == "FILES":
				files = true
			case strings.HasPrefix(w, cur):
				got = append(got, w)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.bash, " ") {
			t.Errorf("zsh, %q: got %q, want %q", tc.line, got, tc.bash)
		}
		// File names too where ocimount has no candidates, and for the
		// first argument, which may be the shorthand's SOURCE.
		first := strings.Count(tc.line, " ") == 1 && !strings.HasPrefix(cur, "-")
		if wantFiles := tc.bash == nil || first; files != wantFiles {
			t.Errorf("zsh, %q: file names offered: %v, want %v", tc.line, files, wantFiles)
		}
		if !strings.Contains(stderr.String(), "compdef _ocimount ocimount") {
			t.Errorf("zsh: not registered with compdef: %s", stderr.String())
		}
	}
}
