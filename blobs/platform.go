package blobs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform parses "os/arch[/variant]" (as in docker --platform). OS and
// architecture are lower-cased, and the common uname/Debian spellings are
// mapped to the Go/OCI names (x86_64 → amd64, aarch64 → arm64, armhf →
// arm/v7, ...), because users type what `uname -m` prints.
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]: %w", s, ErrInvalid)
	}
	for _, p := range parts {
		if p == "" || strings.TrimSpace(p) != p {
			return ocispec.Platform{}, fmt.Errorf("platform %q: empty or padded component: %w", s, ErrInvalid)
		}
	}
	p := ocispec.Platform{OS: strings.ToLower(parts[0]), Architecture: strings.ToLower(parts[1])}
	if len(parts) == 3 {
		p.Variant = strings.ToLower(parts[2])
	}
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "i386", "i486", "i586", "i686", "x86":
		p.Architecture = "386"
	case "armhf":
		p.Architecture = "arm"
		if p.Variant == "" {
			p.Variant = "v7"
		}
	case "armel":
		p.Architecture = "arm"
		if p.Variant == "" {
			p.Variant = "v6"
		}
	}
	return p, nil
}

// FormatPlatform is the inverse of ParsePlatform: "os/arch[/variant]".
func FormatPlatform(p ocispec.Platform) string {
	os, arch := p.OS, p.Architecture
	if os == "" {
		os = "?"
	}
	if arch == "" {
		arch = "?"
	}
	s := os + "/" + arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// HostPlatform is the platform used when Options.Platform is nil: the GOOS
// and GOARCH this binary was built for, plus the ARM variant, which Go does
// not expose at run time (GOARM is a build setting), so it is read from
// /proc/cpuinfo for 32-bit arm and is always v8 for arm64.
func HostPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
		if f, err := os.Open("/proc/cpuinfo"); err == nil {
			p.Variant = armVariant(f)
			f.Close()
		}
	}
	return p
}

// armVariant maps the "CPU architecture" line of /proc/cpuinfo to an OCI
// variant for 32-bit arm. An ARMv8 CPU running 32-bit code runs v7 images
// (arm/v8 images practically do not exist), so 8 and above map to v7, as
// does an unreadable file.
func armVariant(cpuinfo io.Reader) string {
	sc := bufio.NewScanner(cpuinfo)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "CPU architecture" {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(v, "5"):
			return "v5"
		case strings.HasPrefix(v, "6"):
			return "v6"
		default:
			return "v7"
		}
	}
	return "v7"
}

// platformScore says how well an image platform serves the wanted one:
// 0 no match; 3 exact; 2 equal after normalising (arm64 without a variant
// means v8, per the image-index spec's platform notes, and tools disagree
// on writing it); 1 the image names no variant but the host has one (a
// generic image is assumed to run on any variant). OS and architecture must
// be equal; os.version and os.features are ignored (Linux-only mounts).
func platformScore(want, have ocispec.Platform) int {
	if !strings.EqualFold(want.OS, have.OS) || !strings.EqualFold(want.Architecture, have.Architecture) {
		return 0
	}
	wv, hv := strings.ToLower(want.Variant), strings.ToLower(have.Variant)
	switch {
	case wv == hv:
		return 3
	case normVariant(want.Architecture, wv) == normVariant(have.Architecture, hv):
		return 2
	case hv == "":
		return 1
	}
	return 0
}

func normVariant(arch, v string) string {
	if strings.EqualFold(arch, "arm64") && v == "" {
		return "v8"
	}
	return v
}
