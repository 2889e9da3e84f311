package forensics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/overlay"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenImage is a small image with every case the human formats show:
// whiteout and re-add, an opaque dir, a hardlink to a lower layer, a
// metadata-only change, a write through a symlinked parent, a device,
// xattrs, a nanosecond mtime. Plain tar layers keep digests stable.
func goldenImage(t *testing.T) *Image {
	img := tartest.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config: ocispec.ImageConfig{
			User: "app", WorkingDir: "/srv", Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"},
			Env: []string{"PATH=/usr/bin:/bin", "MODE=prod"}, Labels: map[string]string{"org.example.team": "forensics"},
			ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
		},
	}
	for _, l := range [][]tartest.Entry{
		{Dir("etc", 0o755), File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644), File("etc/secret", "hunter2-hunter2\n", 0o600),
			Dir("usr", 0o755), Dir("usr/lib", 0o755), Symlink("lib", "usr/lib"), Dir("srv", 0o755), File("srv/old.txt", "old version\n", 0o644),
			Char("dev/null", 1, 3), File("bin/app", "#!/bin/sh\necho v1\n", 0o755)},
		{Whiteout("etc/secret"), Hardlink("bin/app-link", "bin/app"), File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o600),
			File("lib/libx.so", "ELF-ish", 0o755, Xattr("user.origin", "layer1")), File("bin/app", "#!/bin/sh\necho v2\n", 0o755)},
		{Dir("srv", 0o750), Opaque("srv"), File("srv/new.txt", "new version\n", 0o644, MTime(DefaultMTime.Add(5))),
			File("etc/secret", "rotated\n", 0o600)},
	} {
		img.Layers = append(img.Layers, tartest.ImageLayer{Compression: tartest.Uncompressed, Tar: tartest.Tar(t, l...)})
	}
	return ociImage(t, img)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, p, got, want)
	}
}

func TestGolden(t *testing.T) {
	im := goldenImage(t)
	run := func(name string, f func(*bytes.Buffer) error) {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := f(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, name, b.Bytes())
		})
	}
	run("inspect", func(b *bytes.Buffer) error {
		r, err := Inspect(im)
		if err != nil {
			return err
		}
		return WriteInspect(b, r, false)
	})
	run("ls-R", func(b *bytes.Buffer) error { return List(b, im.Tree, "/", ListOptions{Recursive: true}) })
	run("ls-lR", func(b *bytes.Buffer) error { return List(b, im.Tree, "/", ListOptions{Recursive: true, Long: true}) })
	for _, p := range []string{"etc/secret", "bin/app-link", "usr/lib/libx.so", "etc/passwd", "srv/old.txt"} {
		run("history-"+filepath.Base(p), func(b *bytes.Buffer) error {
			r, err := History(im.Layers, p)
			if err != nil {
				return err
			}
			return WriteHistory(b, r, false)
		})
	}
	for n := range im.Layers {
		run("diff-layer"+string(rune('0'+n)), func(b *bytes.Buffer) error {
			before, err := overlay.Merge(im.Layers[:n])
			if err != nil {
				return err
			}
			after, err := overlay.Merge(im.Layers[:n+1])
			if err != nil {
				return err
			}
			_, err = DiffTrees(b, before, after, DiffOptions{})
			return err
		})
	}
	run("waste", func(b *bytes.Buffer) error {
		r, err := Waste(im.Layers, im.Tree)
		if err != nil {
			return err
		}
		return WriteWaste(b, r, false, 0)
	})
}
