package tests

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
)

// TestRootFSTypeRefused: config.md says rootfs.type MUST be "layers" and an
// unknown value MUST be an error when unpacking. Every command that opens
// the image refuses it, naming the config blob and the value.
func TestRootFSTypeRefused(t *testing.T) {
	requireIntegration(t)
	dir := filepath.Join(t.TempDir(), "layout")
	info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "latest", RootFSType: "snapshot",
		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("f", "f", 0o644))}}})
	src := "oci:" + dir + ":latest"
	want := []string{info[0].Config.Digest.String(), `rootfs.type "snapshot"`}
	cache := t.TempDir()
	out := filepath.Join(t.TempDir(), "out.tar")
	for _, args := range [][]string{
		{"mount", src, newMountpoint(t)},
		{"inspect", src},
		{"ls", src},
		{"cat", src, "f"},
		{"history", src, "f"},
		{"diff", src, "--layer", "0"},
		{"diff", src, src},
		{"waste", src},
		{"export", src, out},
		{"index", src},
		{"bundle", src, filepath.Join(t.TempDir(), "bundle")},
	} {
		args = append(args[:1], append([]string{"--cache-dir", cache}, args[1:]...)...)
		r := run(t, time.Minute, args...)
		if r.code == 0 {
			t.Errorf("accepted rootfs.type snapshot: %s", r)
			continue
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr does not name %q: %s", w, r)
			}
		}
	}
}

// TestGzipTrailingJunk: a valid gzip member followed by bytes that are not
// another member (zeros, garbage) is refused, as umoci (Go's compress/gzip,
// read to the end of the blob) refuses it; the error names the layer blob
// and the offset where the junk starts.
func TestGzipTrailingJunk(t *testing.T) {
	requireIntegration(t)
	tb := tartest.Tar(t, tartest.File("f", "f", 0o644))
	gz := tartest.Compress(t, tartest.Gzip, tb)
	for name, junk := range map[string][]byte{"zeros": make([]byte, 1024), "garbage": []byte("garbage\n")} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "latest",
				Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tb, Blob: append(bytes.Clone(gz), junk...)}}})
			out, err := exec.Command("umoci", "raw", "unpack", "--image", dir+":latest", filepath.Join(t.TempDir(), "rootfs")).CombinedOutput()
			if err == nil {
				t.Fatalf("umoci accepted the layer; the reference changed:\n%s", out)
			}
			t.Logf("umoci: %s", bytes.TrimSpace(out))
			r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), "oci:"+dir+":latest", newMountpoint(t))
			if r.code == 0 {
				t.Fatalf("mounted: %s", r)
			}
			for _, w := range []string{info[0].Layers[0].Digest.String(), fmt.Sprintf("at offset %d", len(gz))} {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not name %q: %s", w, r)
				}
			}
		})
	}
}
