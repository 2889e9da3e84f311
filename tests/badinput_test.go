package tests

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/opencontainers/go-digest"
)

// goodLayer is an ordinary layer with enough data that a byte flipped in
// the middle of its gzip stream lands in compressed file content.
func goodLayer(t *testing.T) []byte {
	rnd := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(rnd)
	return tartest.Tar(t,
		tartest.Dir("etc", 0o755),
		tartest.File("etc/hostname", "bad-input\n", 0o644),
		tartest.FileBytes("data.bin", rnd, 0o644),
		tartest.File("tail", "tail", 0o644),
	)
}

// TestBadInput: broken images and arguments make `ocimount mount` exit
// non-zero quickly, with stderr naming the culprit (blob digest, entry), and
// leave nothing mounted.
func TestBadInput(t *testing.T) {
	requireIntegration(t)
	type setup struct {
		src  string   // image reference to mount
		mnt  string   // mountpoint; "" for a fresh empty dir
		want []string // substrings stderr must contain
	}
	layoutWith := func(t *testing.T, layers ...tartest.ImageLayer) (string, tartest.ImageInfo) {
		dir := filepath.Join(t.TempDir(), "layout")
		info := tartest.WriteOCILayoutInfo(t, dir, tartest.Image{Ref: "latest", Layers: layers})
		return dir, info[0]
	}
	base := func(t *testing.T) tartest.ImageLayer {
		return tartest.ImageLayer{Compression: tartest.Gzip, Tar: tartest.Tar(t, tartest.File("lower", "lower", 0o644))}
	}
	cases := []struct {
		name  string
		build func(t *testing.T) setup
	}{
		{"gzip-flipped-byte", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: goodLayer(t)})
			d := info.Layers[1].Digest
			p := tartest.BlobPath(dir, d)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x40
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return setup{src: "oci:" + dir + ":latest", want: []string{d.String()}}
		}},
		{"gzip-truncated-digest-matches", func(t *testing.T) setup {
			tb := goodLayer(t)
			gz := tartest.Compress(t, tartest.Gzip, tb)
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: tb, Blob: gz[:len(gz)/2]})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"zstd-truncated-digest-matches", func(t *testing.T) setup {
			tb := goodLayer(t)
			z := tartest.Compress(t, tartest.Zstd, tb)
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Zstd, Tar: tb, Blob: z[:len(z)*2/3]})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"tar-truncated-mid-entry", func(t *testing.T) setup {
			tb := goodLayer(t)
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Tar: tb, Blob: tb[:len(tb)/2]})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"entry-size-past-end", func(t *testing.T) setup {
			// A valid gzip stream whose last header declares more data
			// than the layer holds.
			tb := tartest.Tar(t, tartest.File("ok", "ok", 0o644))
			tb = append(tb[:len(tb)-1024], tartest.HeaderBlock(tartest.RawHeader{Name: "usr/bin/x", Typeflag: '0', Mode: 0o755, Size: 123456, MTime: 1000})...)
			tb = append(tb, make([]byte, 1024)...)
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: tb})
			return setup{src: "oci:" + dir + ":latest", want: []string{"layer 1 (blob " + info.Layers[1].Digest.String() + ")", `entry "usr/bin/x"`,
				fmt.Sprintf("size 123456 runs past the end of the layer at offset %d", len(tb))}}
		}},
		{"not-gzip-at-all", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: goodLayer(t), Blob: bytes.Repeat([]byte("not gzip "), 1000)})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"wrong-diff-id", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: goodLayer(t), DiffID: digest.FromString("something else")})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"unknown-media-type", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: goodLayer(t), MediaType: "application/vnd.example.layer.v1.tar+lz4"})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"missing-layer-blob", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: goodLayer(t)})
			if err := os.Remove(tartest.BlobPath(dir, info.Layers[1].Digest)); err != nil {
				t.Fatal(err)
			}
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String()}}
		}},
		{"missing-config-blob", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t))
			if err := os.Remove(tartest.BlobPath(dir, info.Config.Digest)); err != nil {
				t.Fatal(err)
			}
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Config.Digest.String()}}
		}},
		{"manifest-digest-mismatch", func(t *testing.T) setup {
			dir, info := layoutWith(t, base(t))
			p := tartest.BlobPath(dir, info.Manifest.Digest)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// Still valid JSON of the same size: only the digest check
			// can catch it.
			b = bytes.Replace(b, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Manifest.Digest.String()}}
		}},
		{"hardlink-escapes-root", func(t *testing.T) setup {
			evil := tartest.Tar(t, tartest.File("ok", "ok", 0o644), tartest.Hardlink("evil", "../../../etc/passwd"))
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: evil})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String(), "evil"}}
		}},
		{"whiteout-of-dot", func(t *testing.T) setup {
			evil := tartest.Tar(t, tartest.Dir("a", 0o755), tartest.File("a/.wh..", "", 0o644))
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: evil})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String(), ".wh.."}}
		}},
		{"whiteout-of-dotdot", func(t *testing.T) setup {
			evil := tartest.Tar(t, tartest.Dir("a", 0o755), tartest.File("a/.wh...", "", 0o644))
			dir, info := layoutWith(t, base(t), tartest.ImageLayer{Compression: tartest.Gzip, Tar: evil})
			return setup{src: "oci:" + dir + ":latest", want: []string{info.Layers[1].Digest.String(), ".wh..."}}
		}},
		{"mountpoint-missing", func(t *testing.T) setup {
			dir, _ := layoutWith(t, base(t))
			mnt := filepath.Join(t.TempDir(), "does-not-exist")
			return setup{src: "oci:" + dir + ":latest", mnt: mnt, want: []string{mnt}}
		}},
		{"mountpoint-is-a-file", func(t *testing.T) setup {
			dir, _ := layoutWith(t, base(t))
			mnt := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(mnt, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return setup{src: "oci:" + dir + ":latest", mnt: mnt, want: []string{mnt}}
		}},
		{"source-missing", func(t *testing.T) setup {
			src := filepath.Join(t.TempDir(), "no-such-layout")
			return setup{src: "oci:" + src + ":latest", want: []string{src}}
		}},
		{"tag-missing", func(t *testing.T) setup {
			dir, _ := layoutWith(t, base(t))
			return setup{src: "oci:" + dir + ":no-such-tag", want: []string{"no-such-tag"}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.build(t)
			mnt := s.mnt
			if mnt == "" {
				mnt = newMountpoint(t)
			} else {
				t.Cleanup(func() { forceUnmount(t, mnt) })
			}
			r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), s.src, mnt)
			switch {
			case r.code == -1:
				t.Errorf("did not exit within a minute: %s", r)
			case r.code == 0:
				t.Errorf("exited 0 on bad input: %s", r)
			case r.dur > 30*time.Second:
				t.Errorf("took %v to fail", r.dur)
			}
			for _, w := range s.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, r.stderr)
				}
			}
			if findMount(t, mnt) != nil {
				t.Errorf("mount left at %s after failure", mnt)
			}
		})
	}
}
