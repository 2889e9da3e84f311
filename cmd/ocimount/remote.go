package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/cache"
)

// remoteFlags are the registry options shared by mount and index.
func remoteFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "creds", Usage: "registry credentials `USER[:PASSWORD]` (default: ~/.docker/config.json, $DOCKER_CONFIG, podman's auth.json, credential helpers)", EnvVars: []string{"OCIMOUNT_CREDS"}},
		&cli.BoolFlag{Name: "tls-verify", Value: true, Usage: "verify registry TLS certificates (--tls-verify=false also allows plain HTTP)"},
		&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry (loopback registries may anyway)"},
		&cli.BoolFlag{Name: "no-remote-index", Usage: "do not use indexes published in the registry (ocimount index --push); stream every uncached layer"},
		&cli.BoolFlag{Name: "no-toc", Usage: "ignore eStargz and zstd:chunked tables of contents: index those layers like any other (a published index, or one full pass, which also checks the DiffID)"},
		// Unset stands for blobs.DefaultChunkCacheMax; the help shows what that is.
		&cli.StringFlag{Name: "range-cache-max", Usage: "bound of the on-disk cache of fetched registry ranges, a `SIZE` such as 500M or 20G", DefaultText: humanSize(blobs.DefaultChunkCacheMax)},
	}
}

// timingEnv tunes the registry timeouts (docs/DESIGN.md, "Registry
// reads"): for tests, which need them short, and for unusual networks.
const timingEnv = "OCIMOUNT_REGISTRY_TIMING"

// remoteOptions reads the registry flags (and $OCIMOUNT_REGISTRY_TIMING);
// a bad value is an error of one line, before anything starts.
func remoteOptions(c *cli.Context, cacheDir string) (blobs.RemoteOptions, error) {
	if c == nil {
		return blobs.RemoteOptions{}, nil
	}
	ro := blobs.RemoteOptions{
		Creds:     c.String("creds"),
		Insecure:  !c.Bool("tls-verify"),
		PlainHTTP: c.Bool("plain-http"),
	}
	noRangeCache := false
	if v := c.String("range-cache-max"); v != "" {
		n, err := parseSize(v)
		if err != nil {
			return ro, fmt.Errorf("--range-cache-max: %w", err)
		}
		// 0 keeps nothing, as a bound smaller than a chunk does (and as
		// cache prune --max-size 0 does); it is not "the default", which
		// would be the largest bound of all.
		ro.ChunkCacheMax, noRangeCache = n, n == 0
	}
	if err := parseTiming(os.Getenv(timingEnv), &ro); err != nil {
		return ro, fmt.Errorf("$%s: %w", timingEnv, err)
	}
	if cacheDir != "" && !noRangeCache {
		ro.ChunkDir = cache.Dir{Root: cacheDir}.ChunkDir()
	}
	return ro, nil
}

// parseTiming reads "idle=300ms,budget=1s,rate=1M,memory=2s" (any subset):
// RemoteOptions.RangeIdle, RangeBudget, RangeMinRate (a size per second)
// and FailureMemory.
func parseTiming(s string, ro *blobs.RemoteOptions) error {
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want KEY=VALUE (idle, budget, rate, memory)", kv)
		}
		switch k {
		case "idle", "budget", "memory", "rate":
		default:
			return fmt.Errorf("unknown key %q (idle, budget, rate, memory)", k)
		}
		if k == "rate" {
			n, err := parseSize(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("rate %q: want bytes per second, such as 128K", v)
			}
			ro.RangeMinRate = n
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s %q: want a duration, such as 300ms or 2s", k, v)
		}
		switch k {
		case "idle":
			ro.RangeIdle = d
		case "budget":
			ro.RangeBudget = d
		case "memory":
			ro.FailureMemory = d
		}
	}
	return nil
}
