package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "123": 123, "20M": 20 << 20, "20m": 20 << 20, "20MiB": 20 << 20, "20MB": 20 << 20,
		"10K": 10 << 10, "2G": 2 << 30, "1.5G": 3 << 29, "1T": 1 << 40, " 7 ": 7, "512KiB": 512 << 10,
	}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "20X", "1e400", "NaN", "Inf", "9999999T", "20 M B"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		} else if !strings.Contains(err.Error(), "bad size") {
			t.Errorf("parseSize(%q): %v", in, err)
		}
	}
}

// --range-cache-max takes the sizes `cache prune --max-size` takes; a bad
// one (or any bad flag) is one line, not the whole help text.
func TestRangeCacheMaxFlag(t *testing.T) {
	var got blobs.RemoteOptions
	app := &cli.App{Flags: remoteFlags(), Action: func(c *cli.Context) (err error) {
		got, err = remoteOptions(c, t.TempDir())
		return err
	}}
	for in, want := range map[string]int64{"20M": 20 << 20, "20971520": 20971520, "1.5G": 3 << 29} {
		if err := app.Run([]string{"x", "--range-cache-max", in}); err != nil || got.ChunkCacheMax != want {
			t.Errorf("--range-cache-max %s: %d, %v; want %d", in, got.ChunkCacheMax, err, want)
		}
	}
	// 0 is no range cache at all, not the (8 GiB) default.
	if err := app.Run([]string{"x", "--range-cache-max", "20M"}); err != nil || got.ChunkDir == "" {
		t.Errorf("--range-cache-max 20M: no range cache (%v)", err)
	}
	for _, zero := range []string{"0", "0M", " 0 "} {
		if err := app.Run([]string{"x", "--range-cache-max", zero}); err != nil || got.ChunkDir != "" {
			t.Errorf("--range-cache-max %q: range cache %q, max %d (%v); want none", zero, got.ChunkDir, got.ChunkCacheMax, err)
		}
	}
	t.Setenv(timingEnv, "idle=300ms,budget=1s,rate=1M,memory=2s")
	if err := app.Run([]string{"x"}); err != nil || got.RangeIdle.String() != "300ms" || got.RangeMinRate != 1<<20 || got.FailureMemory.String() != "2s" || got.RangeBudget.String() != "1s" {
		t.Errorf("%s: %+v, %v", timingEnv, got, err)
	}
	t.Setenv(timingEnv, "")

	for _, args := range [][]string{
		{"ocimount", "mount", "--range-cache-max", "20X", "oci:/nonexistent", "/nonexistent"},
		{"ocimount", "mount", "--no-such-flag", "oci:/nonexistent", "/nonexistent"},
		{"ocimount", "index", "--range-cache-max", "-5", "oci:/nonexistent"},
	} {
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, &out
		err := app.Run(args)
		if err == nil {
			t.Errorf("%q: no error", args)
			continue
		}
		if strings.Contains(err.Error(), "\n") || out.Len() > 0 {
			t.Errorf("%q: error %q, and printed:\n%s", args, err, out.String())
		}
	}
}
