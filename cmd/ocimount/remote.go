package main

import (
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
		// 0 stands for blobs.DefaultChunkCacheMax; the help shows what that is.
		&cli.Int64Flag{Name: "range-cache-max", Usage: "bound of the on-disk cache of fetched registry ranges, in `BYTES`", DefaultText: humanSize(blobs.DefaultChunkCacheMax)},
	}
}

func remoteOptions(c *cli.Context, cacheDir string, logf func(string, ...any)) blobs.RemoteOptions {
	if c == nil {
		return blobs.RemoteOptions{Logf: logf}
	}
	ro := blobs.RemoteOptions{
		Creds:         c.String("creds"),
		Insecure:      !c.Bool("tls-verify"),
		PlainHTTP:     c.Bool("plain-http"),
		ChunkCacheMax: c.Int64("range-cache-max"),
		Logf:          logf,
	}
	if cacheDir != "" {
		ro.ChunkDir = cache.Dir{Root: cacheDir}.ChunkDir()
	}
	return ro
}
