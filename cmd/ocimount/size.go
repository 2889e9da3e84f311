package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ocimount/ocimount/internal/forensics"
)

// parseSize reads a size as the user writes it: "123", "10K", "500M",
// "2G", "1.5T" (powers of 1024; "MiB", "MB" and "m" mean the same). It is
// the one parser of sizes on the command line (cache prune --max-size,
// --range-cache-max), so they all take the same forms.
func parseSize(arg string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(arg))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := float64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMGT", s[n-1]); i >= 0 {
			mult = float64(int64(1) << (10 * (i + 1)))
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with K, M, G or T: 500M, 20G, 1.5T)", arg)
	}
	return int64(v * mult), nil
}

// humanSize is forensics.HumanSize.
func humanSize(n int64) string { return forensics.HumanSize(n) }
