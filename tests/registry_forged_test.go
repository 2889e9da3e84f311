package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/cache"
)

// TestRegistryForgedIndex publishes a layer index whose head is genuine
// (digest, sizes, DiffID, chunk digests) but whose entry table is not:
// etc/hostname is made to point at the bytes of etc/passwd in the same
// layer. Anyone who can push to the repository can publish such an
// artifact, and the referrers tag it is found through is mutable. A mount
// of the image, even by digest, must not show etc/passwd's bytes as
// etc/hostname: it has to reject the index (and stream the layer) or fail
// the read.
func TestRegistryForgedIndex(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	f := images(t)
	reg.push(t, "oci:"+f.Dir+"/gzip:latest", "forged/gzip:latest")
	ref := reg.Host + "/forged/gzip:latest"
	dir := t.TempDir()
	if r := run(t, 2*time.Minute, "index", "--quiet", "--cache-dir", dir, ref); r.code != 0 {
		t.Fatalf("index: %s", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := blobs.ParseSource(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := blobs.OpenImage(ctx, src, blobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	order := make([]digest.Digest, len(im.Layers))
	data := map[digest.Digest][]byte{}
	forged := false
	for i, l := range im.Layers {
		order[i] = l.Descriptor.Digest
		ix, err := cache.Dir{Root: dir}.LoadIndex(l.Descriptor.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			host, passwd := -1, -1
			for j, e := range ix.Entries {
				switch e.Name {
				case "etc/hostname":
					host = j
				case "etc/passwd":
					passwd = j
				}
			}
			if host < 0 || passwd < 0 {
				t.Fatalf("layer 0 lacks etc/hostname or etc/passwd")
			}
			ix.Entries[host].Offset = ix.Entries[passwd].Offset
			ix.Entries[host].Size = ix.Entries[passwd].Size
			forged = true
		}
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		data[order[i]] = b
	}
	if !forged {
		t.Fatal("nothing forged")
	}
	art, err := im.Remote.PushIndexes(ctx, order, data)
	if err != nil {
		t.Fatalf("publishing the forged index: %v", err)
	}
	t.Logf("published forged index artifact %s", art)

	mnt, cache := remoteMount(t, nil, reg.Host+"/forged/gzip@"+string(im.ManifestDigest))
	b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname"))
	passwd, _ := os.ReadFile(filepath.Join(f.Ref, "etc/passwd"))
	switch {
	case err == nil && string(b) == "ocimount-test\n":
		// Rejected the forged index (or verified the entry).
	case err != nil:
		// The tar header in front of the data names another file: EIO,
		// and the log says why.
		if lg := readLog(cache); !strings.Contains(lg, "tar header does not match") {
			t.Errorf("read failed (%v) but the log does not say why:\n%s", err, lg)
		}
	case string(b) == string(passwd):
		t.Errorf("a forged published index made a mount of %s (by digest) serve etc/passwd's bytes as etc/hostname.\nlog:\n%s",
			im.ManifestDigest, readLog(cache))
	default:
		t.Errorf("etc/hostname reads %q", b)
	}
}

// TestRegistryBadPublishedIndex: published indexes that are garbage or
// describe another layer are not used: the mount streams the layers as
// if there were none and shows the right tree.
func TestRegistryBadPublishedIndex(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	f := images(t)
	ref := refTree(t)
	// The log must say what was used, after checking, and why the rest
	// was not: the lines it must have, and a line it must not.
	const used = "using published layer indexes"
	cases := []struct {
		name      string
		alter     func(order []digest.Digest, data map[digest.Digest][]byte, sizes []int64)
		says, not []string
	}{
		{"garbage", func(order []digest.Digest, data map[digest.Digest][]byte, _ []int64) {
			for _, d := range order {
				data[d] = []byte("OCIMIDX\x00 this is not an index " + string(d))
			}
		}, []string{"unusable", "published layer indexes not used"}, []string{used}},
		{"swapped-layers", func(order []digest.Digest, data map[digest.Digest][]byte, _ []int64) {
			data[order[0]], data[order[1]] = data[order[1]], data[order[0]]
		}, []string{"describes another layer", used, "layers=4 unusable=2"}, nil},
		{"truncated", func(order []digest.Digest, data map[digest.Digest][]byte, _ []int64) {
			for _, d := range order {
				data[d] = data[d][:len(data[d])/2]
			}
		}, []string{"unusable", "published layer indexes not used"}, []string{used}},
		{"other-layers", func(order []digest.Digest, data map[digest.Digest][]byte, _ []int64) {
			// An artifact of this manifest whose annotations name
			// another image's layers.
			for i, d := range order {
				o := digest.FromString("another image's layer " + string(d))
				data[o] = data[d]
				delete(data, d)
				order[i] = o
			}
		}, []string{"it has indexes of other layers"}, []string{used}},
		{"oversized", func(order []digest.Digest, data map[digest.Digest][]byte, sizes []int64) {
			// Bigger than any index of its layer can be (16 MiB + twice
			// the layer): refused before it is fetched.
			data[order[0]] = make([]byte, 16<<20+2*sizes[0]+1)
		}, []string{"not fetched: its descriptor says"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := "badindex/" + c.name
			reg.push(t, "oci:"+f.Dir+"/gzip:latest", repo+":latest")
			src := reg.Host + "/" + repo + ":latest"
			dir := t.TempDir()
			if r := run(t, 2*time.Minute, "index", "--quiet", "--cache-dir", dir, src); r.code != 0 {
				t.Fatalf("index: %s", r)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := blobs.ParseSource(src)
			if err != nil {
				t.Fatal(err)
			}
			im, err := blobs.OpenImage(ctx, s, blobs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			order := make([]digest.Digest, len(im.Layers))
			sizes := make([]int64, len(im.Layers))
			data := map[digest.Digest][]byte{}
			for i, l := range im.Layers {
				order[i] = l.Descriptor.Digest
				sizes[i] = l.Descriptor.Size
				p, err := cache.Dir{Root: dir}.IndexPath(l.Descriptor.Digest)
				if err != nil {
					t.Fatal(err)
				}
				if data[order[i]], err = os.ReadFile(p); err != nil {
					t.Fatal(err)
				}
			}
			c.alter(order, data, sizes)
			if _, err := im.Remote.PushIndexes(ctx, order, data); err != nil {
				t.Fatalf("publishing: %v", err)
			}
			mnt, cacheDir := remoteMount(t, nil, src)
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTree(t, ref, got)
			log := readLog(cacheDir)
			for _, s := range c.says {
				if !strings.Contains(log, s) {
					t.Errorf("the log does not say %q", s)
				}
			}
			for _, s := range c.not {
				if strings.Contains(log, s) {
					t.Errorf("the log says %q", s)
				}
			}
			if t.Failed() {
				t.Logf("log:\n%s", log)
			}
		})
	}
}
