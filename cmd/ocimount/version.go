package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

func init() {
	// --version (urfave/cli's flag, there because App.Version is set)
	// and the version command print the same text.
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprint(c.App.Writer, versionText(debug.ReadBuildInfo())) }
}

// versionLine is App.Version, shown in the top-level help.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return moduleVersion(bi)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, VCS revision and Go version (for bug reports)",
		Action: func(c *cli.Context) error {
			cli.VersionPrinter(c)
			return nil
		},
	}
}

func moduleVersion(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" {
		return v
	}
	return "(devel)"
}

// versionText renders what a bug report needs to name the code that ran:
//
//	ocimount version (devel)
//	revision 9f18bb55be3d…-dirty (committed 2026-01-02T03:04:05Z)
//	go1.26.8 linux/amd64
//
// A build from a checkout has module version "(devel)", so the commit is
// what identifies it, and "-dirty" says the tree had changes that no
// commit holds. go build records both (vcs.revision, vcs.modified) in a
// git checkout; test binaries, builds with -buildvcs=false and builds in a
// linked git worktree (golang/go#58218) have no such record, and the
// output says so rather than leaving the line out.
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "ocimount version unknown (no build information in the binary)\n"
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ocimount version %s\n", moduleVersion(bi))
	if rev := set["vcs.revision"]; rev != "" {
		if set["vcs.modified"] == "true" {
			rev += "-dirty"
		}
		if t := set["vcs.time"]; t != "" {
			rev += " (committed " + t + ")"
		}
		fmt.Fprintf(&b, "revision %s\n", rev)
	} else {
		b.WriteString("revision unknown (no VCS stamp: not built by go build in a primary git checkout, or built with -buildvcs=false)\n")
	}
	goVersion := bi.GoVersion
	if goVersion == "" {
		goVersion = "go version unknown"
	}
	if goos, goarch := set["GOOS"], set["GOARCH"]; goos != "" && goarch != "" {
		goVersion += " " + goos + "/" + goarch
	}
	fmt.Fprintf(&b, "%s\n", goVersion)
	return b.String()
}
