package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
)

// commandPaths lists every command and subcommand as the words that name it.
func commandPaths(prefix []string, cmds []*cli.Command) [][]string {
	var out [][]string
	for _, c := range cmds {
		p := append(append([]string(nil), prefix...), c.Name)
		out = append(out, p)
		out = append(out, commandPaths(p, c.Subcommands)...)
	}
	return out
}

func renderHelp(t *testing.T, path []string) string {
	t.Helper()
	app := newApp()
	var buf bytes.Buffer
	app.Writer, app.ErrWriter = &buf, &buf
	args := append(append([]string{"ocimount"}, path...), "--help")
	if err := app.Run(args); err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	if !strings.Contains(buf.String(), "USAGE:") {
		t.Fatalf("%s printed no help:\n%s", strings.Join(args, " "), buf.String())
	}
	return buf.String()
}

// A flag whose Usage states its default in words must not get urfave's
// "(default: false)" as well (help.go), nor any other line two defaults.
func TestHelpStatesEachDefaultOnce(t *testing.T) {
	paths := append([][]string{nil}, commandPaths(nil, newApp().Commands)...)
	if len(paths) < 15 {
		t.Fatalf("only %d commands found: %v", len(paths), paths)
	}
	for _, p := range paths {
		for _, line := range strings.Split(renderHelp(t, p), "\n") {
			if strings.Count(strings.ToLower(line), "default") > 1 {
				t.Errorf("%q: %q", strings.Join(append(append([]string{"ocimount"}, p...), "--help"), " "), strings.TrimSpace(line))
			}
		}
	}
}

// The top-level help names every form of SOURCE that ParseSource takes,
// and its registry examples parse as registry sources.
func TestHelpListsEverySourceForm(t *testing.T) {
	help := renderHelp(t, nil)
	for _, form := range []string{"oci:DIR", "oci-archive:FILE", "docker-archive:FILE", ":@N", "docker://", "DIR or FILE", "REPO[:TAG][@DIGEST]"} {
		if !strings.Contains(help, form) {
			t.Errorf("top-level help does not mention %q", form)
		}
	}
	for _, ex := range []string{"alpine:3.20", "registry.example:5000/team/app@sha256:" + strings.Repeat("ab", 32)} {
		if !strings.Contains(help, strings.TrimSuffix(ex, strings.Repeat("ab", 32))) {
			t.Errorf("top-level help lacks the example %q", ex)
		}
		src, err := blobs.ParseSource(ex)
		if err != nil || src.Transport != blobs.TransportDocker {
			t.Errorf("ParseSource(%q) = %v, %v; the help calls it a registry image", ex, src, err)
		}
	}
	if strings.Contains(strings.ToLower(help), "not supported") || strings.Contains(strings.ToLower(help), "unsupported") {
		t.Errorf("top-level help says something is unsupported:\n%s", help)
	}
}

func TestOneDefault(t *testing.T) {
	for _, tc := range []struct {
		f    cli.Flag
		want string
	}{
		{&cli.BoolFlag{Name: "suid", Usage: "honour setuid bits (default nosuid)"}, "--suid\thonour setuid bits (default nosuid)"},
		{&cli.BoolFlag{Name: "dev", Usage: "device nodes work"}, "--dev\tdevice nodes work (default: false)"},
		{&cli.Int64Flag{Name: "max", Usage: "bound in `BYTES`", DefaultText: "8 GiB"}, "--max BYTES\tbound in BYTES (default: 8 GiB)"},
		{&cli.IntFlag{Name: "limit", Usage: "count (default: all)", EnvVars: []string{"N"}}, "--limit value\tcount (default: all) [$N]"},
	} {
		if got := cli.FlagStringer(tc.f); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
