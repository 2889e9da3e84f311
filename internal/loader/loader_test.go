package loader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/overlay"
)

// image writes a 3-layer image (gzip, zstd, tar) and returns its source.
func image(t *testing.T) (blobs.Source, string) {
	dir := filepath.Join(t.TempDir(), "img")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: several spans at 1 MiB
	tartest.WriteOCILayout(t, dir, tartest.Image{Ref: "v1", Layers: []tartest.ImageLayer{
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.Dir("etc", 0o755), tartest.File("etc/a", "A", 0o644), tartest.FileBytes("big", big, 0o644))},
		{Compression: tartest.Zstd, Tar: tartest.Tar(t, tartest.Whiteout("etc/a"), tartest.File("etc/b", "B", 0o600, tartest.Xattr("user.x", "y")), tartest.Hardlink("big2", "big"))},
		{Compression: tartest.Uncompressed, Tar: tartest.Tar(t, tartest.File("c", "C", 0o644))},
	}})
	return blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "v1"}, dir
}

// dump lists the tree with content, through the io/fs view.
func dump(t *testing.T, tree *overlay.Tree) string {
	var b strings.Builder
	err := fs.WalkDir(tree.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		in := fi.Sys().(*overlay.Inode)
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.Itoa(int(in.Nlink)))
		if fi.Mode().IsRegular() {
			f, err := tree.FS().Open(p)
			if err != nil {
				return err
			}
			c, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return err
			}
			b.WriteString(fmt.Sprintf(" %x", sha256.Sum256(c)))
		}
		for _, x := range in.Xattrs {
			b.WriteString(" " + x.Name + "=" + x.Value)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func load(t *testing.T, src blobs.Source, o Options) *Image {
	t.Helper()
	im, err := Load(context.Background(), src, blobs.Options{}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func TestWarmMountUsesCacheOnly(t *testing.T) {
	src, imgDir := image(t)
	cacheDir := t.TempDir()
	o := Options{CacheDir: cacheDir, Span: 1 << 20}
	cold := load(t, src, o)
	for i, c := range cold.FromCache {
		if c {
			t.Errorf("cold load: layer %d claims to come from the cache", i)
		}
	}
	want := dump(t, cold.Tree)
	if !strings.Contains(want, "etc/b") || strings.Contains(want, "etc/a") {
		t.Fatalf("unexpected tree:\n%s", want)
	}

	// Replace every layer blob with garbage of the same size: a warm load
	// must not read layer bytes before it is ready (reads of file content
	// would then fail, so only list the tree here).
	var saved = map[string][]byte{}
	_ = filepath.WalkDir(filepath.Join(imgDir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if len(b) > 0 && (b[0] == 0x1f || b[0] == 0x28 || bytes.Contains(b[:min(len(b), 512)], []byte("ustar"))) {
			saved[p] = b
			os.WriteFile(p, bytes.Repeat([]byte{0xee}, len(b)), 0o644)
		}
		return nil
	})
	if len(saved) != 3 {
		t.Fatalf("replaced %d layer blobs, want 3", len(saved))
	}
	warm := load(t, src, o)
	for i, c := range warm.FromCache {
		if !c {
			t.Errorf("warm load: layer %d not from the cache", i)
		}
	}
	if got, want := warm.Tree.Len(), cold.Tree.Len(); got != want {
		t.Errorf("warm tree has %d nodes, cold %d", got, want)
	}
	for p, b := range saved {
		os.WriteFile(p, b, 0o644)
	}
	if d := cmp.Diff(want, dump(t, warm.Tree)); d != "" {
		t.Errorf("warm tree differs from cold (-cold +warm):\n%s", d)
	}

	// A damaged tree or index file is rebuilt, with a message, never used.
	var logs []string
	o.Logf = func(f string, a ...any) { logs = append(logs, f) }
	for _, kind := range []string{"tree", "index"} {
		logs = nil
		_ = filepath.WalkDir(filepath.Join(cacheDir, kind), func(p string, d fs.DirEntry, err error) error {
			if !d.IsDir() {
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 0xff
				os.WriteFile(p, b, 0o600)
			}
			return nil
		})
		again := load(t, src, o)
		if d := cmp.Diff(want, dump(t, again.Tree)); d != "" {
			t.Errorf("after damaging the %s cache: tree differs:\n%s", kind, d)
		}
		if len(logs) == 0 {
			t.Errorf("damaged %s cache was not reported", kind)
		}
	}
}

func TestLayerErrorNamesBlob(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "x", Layers: []tartest.ImageLayer{
		{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("a", strings.Repeat("x", 100000), 0o644))},
	}})
	p := tartest.BlobPath(dir, info[0].Layers[0].Digest)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o644)
	_, err := Load(context.Background(), blobs.Source{Transport: blobs.TransportOCI, Path: dir, Ref: "x"}, blobs.Options{}, Options{})
	var le *LayerError
	if !errors.As(err, &le) || le.Digest != info[0].Layers[0].Digest || !strings.Contains(err.Error(), string(info[0].Layers[0].Digest)) {
		t.Fatalf("err = %v, want a LayerError naming %s", err, info[0].Layers[0].Digest)
	}
}
