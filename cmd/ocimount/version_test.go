package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionText(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	const rev = "9f18bb55be3db843da072bd2c8dc58d5d6e3ce3b"
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"dirty checkout", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/ocimount/ocimount", Version: "(devel)"},
			Settings:  settings("-tags", "urfave_cli_no_docs", "GOARCH", "amd64", "GOOS", "linux", "vcs", "git", "vcs.revision", rev, "vcs.time", "2026-01-02T03:04:05Z", "vcs.modified", "true"),
		}, true, "ocimount version (devel)\nrevision " + rev + "-dirty (committed 2026-01-02T03:04:05Z)\ngo1.26.8 linux/amd64\n"},
		{"clean checkout", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Version: "(devel)"},
			Settings:  settings("GOARCH", "arm64", "GOOS", "linux", "vcs.revision", rev, "vcs.modified", "false"),
		}, true, "ocimount version (devel)\nrevision " + rev + "\ngo1.26.8 linux/arm64\n"},
		{"go install of a release", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Version: "v1.2.3"},
			Settings:  settings("GOARCH", "amd64", "GOOS", "linux"),
		}, true, "ocimount version v1.2.3\nrevision unknown (no VCS stamp: not built by go build in a primary git checkout, or built with -buildvcs=false)\ngo1.26.8 linux/amd64\n"},
		{"test binary", &debug.BuildInfo{GoVersion: "go1.26.8"}, true,
			"ocimount version (devel)\nrevision unknown (no VCS stamp: not built by go build in a primary git checkout, or built with -buildvcs=false)\ngo1.26.8\n"},
		{"no build info", nil, false, "ocimount version unknown (no build information in the binary)\n"},
	} {
		if got := versionText(tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
