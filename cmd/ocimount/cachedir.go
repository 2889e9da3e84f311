package main

import (
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
)

// defaultCacheDir: $OCIMOUNT_CACHE, else /var/cache/ocimount for root
// (system mounts outlive user sessions), else $XDG_CACHE_HOME/ocimount.
func defaultCacheDir() string {
	if d := os.Getenv("OCIMOUNT_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/ocimount"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "ocimount")
	}
	return filepath.Join(os.TempDir(), "ocimount-cache")
}

// imageOptions reads what every command that opens an image shares: the
// platform to pick, the cache directory (defaulted) and the registry
// options (Logf left to the caller).
func imageOptions(c *cli.Context) (bo blobs.Options, cacheDir string, err error) {
	if p := c.String("platform"); p != "" {
		pl, err := blobs.ParsePlatform(p)
		if err != nil {
			return bo, "", err
		}
		bo.Platform = &pl
	}
	cacheDir = c.String("cache-dir")
	if cacheDir == "" {
		cacheDir = defaultCacheDir()
	}
	if bo.Remote, err = remoteOptions(c, cacheDir); err != nil {
		return bo, "", err
	}
	return bo, cacheDir, nil
}
