package main

import (
	"os"
	"path/filepath"
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
