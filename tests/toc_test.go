package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ocimount/ocimount/internal/tartest"
)

// tocLayers are the layer stacks of the TOC tests: whiteouts, an opaque
// directory, hardlinks (also to a lower layer's file), xattrs, devices, and
// files of several chunks.
func tocLayers(t *testing.T) [][]byte {
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	rnd := pseudoRandomBytes(1<<20+333, 5)
	return [][]byte{
		tartest.Tar(t,
			tartest.Dir("etc", 0o755),
			tartest.File("etc/os-release", "ID=toc\nVERSION_ID=1\n", 0o644),
			tartest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
			tartest.Dir("opt", 0o755),
			tartest.FileBytes("opt/big.bin", big, 0o644),
			tartest.FileBytes("opt/random.bin", rnd, 0o600, tartest.Owner(1000, 1000)),
			tartest.Dir("lib", 0o755),
			tartest.File("lib/a", "aaaa", 0o755),
			tartest.File("lib/b", "bbbb", 0o644),
			tartest.Dir("var", 0o755),
			tartest.Dir("var/cache", 0o755),
			tartest.File("var/cache/x", "x", 0o644),
			tartest.File("var/cache/y", "y", 0o644),
			tartest.File("bin", "#!/bin/sh\n", 0o755, tartest.Xattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), tartest.Xattr("user.note", "v")),
			tartest.Hardlink("etc/os-release.link", "etc/os-release"),
			tartest.Symlink("etc/alt", "os-release"),
			tartest.Dir("dev", 0o755),
			tartest.Char("dev/null", 1, 3),
			tartest.Dir("run", 0o755),
			tartest.FIFO("run/fifo"),
		),
		tartest.Tar(t,
			tartest.Whiteout("lib/b"),
			tartest.Dir("var/cache", 0o750),
			tartest.Opaque("var/cache"),
			tartest.File("var/cache/new", "new", 0o644),
			tartest.Hardlink("lib/a2", "lib/a"), // to a lower layer's file
			tartest.File("etc/motd", "hello\n", 0o644, tartest.Xattr("user.x", "y")),
		),
		tartest.Tar(t,
			tartest.Whiteout("opt/big.bin"),
			tartest.File("etc/os-release", "ID=toc\nVERSION_ID=2\n", 0o644),
			tartest.FileBytes("opt/more.bin", pseudoRandomBytes(200000, 9), 0o644),
		),
		tartest.Tar(t, tartest.File("plain", "a plain layer\n", 0o644), tartest.Whiteout("etc/passwd")),
	}
}

func pseudoRandomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// tocBookkeeping: umoci extracts eStargz's bookkeeping entries, which the
// mount hides (as stargz-snapshotter does); only their absence is excused.
func tocBookkeeping(path, field string, _, got *Node) bool {
	switch path {
	case "stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark":
		return field == "exists" && got == nil
	}
	return false
}

// tocImage is the test image in format kind: the first three layers
// converted by stargz-snapshotter's writer, the last one plain.
func tocImage(t *testing.T, kind string, tars [][]byte) (tartest.Image, []tartest.TOCLayer) {
	img := tartest.Image{Ref: "latest"}
	var conv []tartest.TOCLayer
	for i, tb := range tars {
		if i == len(tars)-1 {
			img.Layers = append(img.Layers, tartest.ImageLayer{Compression: tartest.Gzip, Tar: tb})
			continue
		}
		var l tartest.TOCLayer
		switch kind {
		case "estargz":
			l = tartest.EStargz(t, tb, 256<<10)
			img.Layers = append(img.Layers, l.Layer(tartest.Gzip))
		case "zstd-chunked":
			l = tartest.ZstdChunked(t, tb, 256<<10)
			img.Layers = append(img.Layers, l.Layer(tartest.Zstd))
		}
		conv = append(conv, l)
	}
	return img, conv
}

// TestTOCMount mounts eStargz and zstd:chunked images (written by
// stargz-snapshotter's writer, with a plain layer on top) from an OCI
// layout and from a registry, with an empty cache and no ocimount index:
// the trees equal umoci's extraction, no layer of a TOC is read whole
// (the registry never sees a GET of a whole TOC layer), and bytes served
// are checked against the chunk digests (a proxy that corrupts them makes
// reads fail, never succeed with wrong bytes).
func TestTOCMount(t *testing.T) {
	requireIntegration(t, "docker-registry")
	tars := tocLayers(t)
	reg := startRegistry(t, registryOpts{})
	// The reference: umoci's extraction of the layers as they were before
	// conversion (umoci 0.4 reads no zstd), which has no bookkeeping
	// entries at all.
	ref := plainRef(t, tars)
	for _, kind := range []string{"estargz", "zstd-chunked"} {
		t.Run(kind, func(t *testing.T) {
			img, conv := tocImage(t, kind, tars)
			dir := filepath.Join(t.TempDir(), "layout")
			info := tartest.WriteOCILayoutInfo(t, dir, img)[0]
			if kind == "estargz" {
				// umoci's extraction of the converted image itself has the
				// bookkeeping entries; the rest must be the same.
				requireSameTree(t, umociRef(t, dir, "latest"), ref, tocBookkeeping)
			}

			t.Run("layout", func(t *testing.T) {
				mnt, cache := tocMount(t, nil, "oci:"+dir+":latest")
				got, err := Snapshot(mnt)
				if err != nil {
					t.Fatal(err)
				}
				requireSameTree(t, ref, got, rootDirException, umociDropsEmptyXattrs)
				requireTOCUsed(t, cache, len(conv))
			})

			t.Run("forensics", func(t *testing.T) {
				src := "oci:" + dir + ":latest"
				cache := t.TempDir()
				format, source := map[string]string{"estargz": "eStargz", "zstd-chunked": "zstd:chunked"}[kind], map[string]string{"estargz": "eStargz TOC", "zstd-chunked": "zstd:chunked TOC"}[kind]
				requireInspect(t, cache, src, []string{format, format, format, "tar+gzip"}, []string{source, source, source, "built"})
				r := run(t, time.Minute, "cat", "--cache-dir", cache, src, "etc/os-release.link")
				if r.code != 0 || r.stdout != "ID=toc\nVERSION_ID=1\n" {
					t.Errorf("cat: %s", r)
				}
				r = run(t, time.Minute, "waste", "--json", "--cache-dir", cache, src)
				var waste struct {
					Entries []struct {
						Path, How string
						Layer     int
						HiddenBy  int `json:"hidden_by"`
					}
				}
				if err := json.Unmarshal([]byte(r.stdout), &waste); r.code != 0 || err != nil {
					t.Fatalf("waste: %v: %s", err, r)
				}
				book := 0
				for _, w := range waste.Entries {
					if isBook := tocBookkeeping(strings.TrimPrefix(w.Path, "/"), "exists", nil, nil); isBook != (w.How == "bookkeeping") || isBook && w.HiddenBy != w.Layer {
						t.Errorf("waste: %+v", w)
					}
					if w.How == "bookkeeping" {
						book++
					}
				}
				if book == 0 {
					t.Errorf("waste lists no bookkeeping entries: %s", r.stdout)
				}
				if r := run(t, time.Minute, "ls", "--cache-dir", cache, src, "/"); r.code != 0 || strings.Contains(r.stdout, "landmark") || strings.Contains(r.stdout, "stargz.index.json") {
					t.Errorf("ls /: %s", r)
				}
			})

			repo := "toc/" + kind + ":latest"
			if err := pushLayout(reg.Host, dir, repo); err != nil {
				t.Fatal(err)
			}
			proxy := startFaultProxy(t, reg.Host, nil)
			t.Run("registry", func(t *testing.T) {
				proxy.set(passThrough, 0)
				proxy.reset()
				mnt, cache := tocMount(t, nil, proxy.Host+"/"+repo)
				st := statusOf(t, mnt)
				for i, l := range st.Layers[:len(conv)] {
					// The footer and the TOC only: a fraction of the layer
					// holding 4 MiB of files, less than the others.
					if l.Fetched >= l.Size || i == 0 && l.Fetched > l.Size/20 {
						t.Errorf("layer %d: %d of %d bytes fetched before any read", i, l.Fetched, l.Size)
					}
					t.Logf("layer %d: %d of %d bytes fetched to mount", i, l.Fetched, l.Size)
				}
				got, err := Snapshot(mnt)
				if err != nil {
					t.Fatal(err)
				}
				requireSameTree(t, ref, got, rootDirException, umociDropsEmptyXattrs)
				requireTOCUsed(t, cache, len(conv))
				for i, d := range info.Layers[:len(conv)] {
					ranged, whole, _ := proxy.counts(string(d.Digest))
					t.Logf("layer %d: %d range requests", i, ranged)
					if whole != 0 {
						t.Errorf("layer %d (%s): read whole %d times", i, d.Digest, whole)
					}
				}
				if _, whole, _ := proxy.counts(string(info.Layers[len(conv)].Digest)); whole != 1 {
					t.Errorf("the plain layer was streamed %d times, want 1", whole)
				}

				// A remount with the same cache: footers and TOCs again
				// (TOC indexes are not cached), file data from the range
				// cache (every chunk checked again).
				proxy.reset()
				mnt2 := newMountpoint(t)
				if r := runEnv(t, nil, 2*time.Minute, "mount", "--cache-dir", cache, "--no-remote-index", proxy.Host+"/"+repo, mnt2); r.code != 0 {
					t.Fatalf("remount: %s", r)
				}
				if h, err := hashFile(filepath.Join(mnt2, "opt/random.bin")); err != nil || h != ref.Nodes["opt/random.bin"].SHA256 {
					t.Fatalf("remount: opt/random.bin: %s, %v", h, err)
				}
				if ranged, _, _ := proxy.counts(string(info.Layers[0].Digest)); ranged != 2 {
					t.Errorf("remount: %d range requests for layer 0, want 2 (footer, TOC)", ranged)
				}
			})

			t.Run("corrupt-chunks", func(t *testing.T) {
				proxy.set(passThrough, 0)
				mnt, cache := tocMount(t, nil, proxy.Host+"/"+repo)
				want := ref.Nodes["opt/random.bin"].SHA256
				proxy.set(corruptByte, -1)
				_, err := hashFile(filepath.Join(mnt, "opt/random.bin"))
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("read through a corrupting proxy: %v, want EIO", err)
				}
				if log := readLog(cache); !strings.Contains(log, string(info.Layers[0].Digest)) || !strings.Contains(log, "opt/random.bin") {
					t.Errorf("no log line naming the chunk and the file:\n%s", log)
				}
				proxy.set(corruptByte, 1) // one bad answer: the chunk is fetched again
				if got, err := hashFile(filepath.Join(mnt, "opt/random.bin")); err != nil || got != want {
					t.Fatalf("after one corrupt answer: %s, %v; want %s", got, err, want)
				}
			})
		})
	}
}

// TestTOCRawAndDamaged: a raw view of an eStargz layer shows its
// bookkeeping entries (the TOC's bytes are the TOC, whose digest the
// annotation gives); a layer whose TOC does not match its annotation is
// indexed by a full pass instead, logged, and the mount is right.
func TestTOCRawAndDamaged(t *testing.T) {
	requireIntegration(t)
	tars := tocLayers(t)
	img, conv := tocImage(t, "estargz", tars)
	dir := filepath.Join(t.TempDir(), "layout")
	tartest.WriteOCILayout(t, dir, img)
	ref := plainRef(t, tars)

	t.Run("raw", func(t *testing.T) {
		mnt, _ := tocMount(t, nil, "oci:"+dir+":latest", "--layer", "0", "--raw")
		b, err := os.ReadFile(filepath.Join(mnt, "stargz.index.json"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if want := conv[0].Annotations["containerd.io/snapshot/stargz/toc.digest"]; "sha256:"+hex.EncodeToString(sum[:]) != want {
			t.Errorf("stargz.index.json is sha256:%x, the annotation says %s", sum, want)
		}
		if _, err := os.Stat(filepath.Join(mnt, ".no.prefetch.landmark")); err != nil {
			t.Errorf("landmark: %v", err)
		}
	})

	t.Run("no-toc", func(t *testing.T) {
		// --no-toc: every layer gets a full pass (which checks the DiffID).
		requireInspect(t, t.TempDir(), "oci:"+dir+":latest", []string{"eStargz", "eStargz", "eStargz", "tar+gzip"}, []string{"built", "built", "built", "built"}, "--no-toc")
		mnt, _ := tocMount(t, nil, "oci:"+dir+":latest", "--no-toc")
		got, err := Snapshot(mnt)
		if err != nil {
			t.Fatal(err)
		}
		requireSameTree(t, ref, got, rootDirException, umociDropsEmptyXattrs)
	})

	t.Run("damaged", func(t *testing.T) {
		bad := img
		bad.Layers = append([]tartest.ImageLayer{}, img.Layers...)
		bad.Layers[1].Annotations = map[string]string{"containerd.io/snapshot/stargz/toc.digest": "sha256:" + strings.Repeat("0", 64)}
		dir := filepath.Join(t.TempDir(), "layout")
		info := tartest.WriteOCILayoutInfo(t, dir, bad)[0]
		mnt, cache := tocMount(t, nil, "oci:"+dir+":latest")
		got, err := Snapshot(mnt)
		if err != nil {
			t.Fatal(err)
		}
		requireSameTree(t, ref, got, rootDirException, umociDropsEmptyXattrs)
		requireInspect(t, t.TempDir(), "oci:"+dir+":latest", []string{"eStargz", "eStargz", "eStargz", "tar+gzip"}, []string{"eStargz TOC", "built", "eStargz TOC", "built"})
		log := readLog(cache)
		if !strings.Contains(log, "unusable") || !strings.Contains(log, string(info.Layers[1].Digest)) || !strings.Contains(log, "reading the whole layer instead") {
			t.Errorf("no log line naming the damaged layer:\n%s", log)
		}
	})
}

// plainRef is umoci's extraction of an image of tars as gzip layers.
func plainRef(t *testing.T, tars [][]byte) *Tree {
	img := tartest.Image{Ref: "latest"}
	for _, tb := range tars {
		img.Layers = append(img.Layers, tartest.ImageLayer{Compression: tartest.Gzip, Tar: tb})
	}
	dir := filepath.Join(t.TempDir(), "plain")
	tartest.WriteOCILayout(t, dir, img)
	return umociRef(t, dir, "latest")
}

// tocMount mounts src with an empty cache of its own.
func tocMount(t *testing.T, env []string, src string, flags ...string) (mnt, cacheDir string) {
	t.Helper()
	mnt = newMountpoint(t)
	cacheDir = t.TempDir()
	args := append([]string{"mount", "--cache-dir", cacheDir, "--no-remote-index"}, flags...)
	r := runEnv(t, env, 2*time.Minute, append(args, src, mnt)...)
	if r.code != 0 {
		t.Fatalf("mount failed: %s\nlog:\n%s", r, readLog(cacheDir))
	}
	return mnt, cacheDir
}

// requireInspect checks inspect's format and index source of each layer.
func requireInspect(t *testing.T, cache, src string, formats, sources []string, flags ...string) {
	t.Helper()
	r := run(t, time.Minute, append(append([]string{"inspect", "--json", "--cache-dir", cache}, flags...), src)...)
	if r.code != 0 {
		t.Fatalf("inspect: %s", r)
	}
	var out struct {
		Layers []struct {
			Format      string `json:"format"`
			IndexSource string `json:"index_source"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	if len(out.Layers) != len(formats) {
		t.Fatalf("inspect: %d layers, want %d", len(out.Layers), len(formats))
	}
	for i, l := range out.Layers {
		if l.Format != formats[i] || l.IndexSource != sources[i] {
			t.Errorf("inspect layer %d: format %q, index %q; want %q, %q", i, l.Format, l.IndexSource, formats[i], sources[i])
		}
	}
}

// requireTOCUsed checks from the log that no TOC was refused.
func requireTOCUsed(t *testing.T, cacheDir string, n int) {
	t.Helper()
	if log := readLog(cacheDir); strings.Contains(log, "unusable") {
		t.Errorf("a TOC was refused:\n%s", log)
	}
	_ = fmt.Sprint(n)
}

// TestTOCSkopeoZstdChunked: a zstd:chunked image written by skopeo (the
// containers/storage writer: a 64-byte footer, tar-split, the older
// annotation names) mounts from its TOCs and equals umoci's extraction of
// the image it was converted from.
func TestTOCSkopeoZstdChunked(t *testing.T) {
	requireIntegration(t, "skopeo")
	tars := tocLayers(t)
	img := tartest.Image{Ref: "latest"}
	for _, tb := range tars {
		img.Layers = append(img.Layers, tartest.ImageLayer{Compression: tartest.Gzip, Tar: tb})
	}
	plain := filepath.Join(t.TempDir(), "plain")
	tartest.WriteOCILayout(t, plain, img)
	ref := umociRef(t, plain, "latest")
	dir := filepath.Join(t.TempDir(), "zstd-chunked")
	out, err := exec.Command("skopeo", "--insecure-policy", "copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd:chunked",
		"oci:"+plain+":latest", "oci:"+dir+":latest").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}
	mnt, cache := tocMount(t, nil, "oci:"+dir+":latest")
	got, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, ref, got, rootDirException, umociDropsEmptyXattrs)
	requireTOCUsed(t, cache, len(tars))
	src := []string{"zstd:chunked TOC", "zstd:chunked TOC", "zstd:chunked TOC", "zstd:chunked TOC"}
	requireInspect(t, t.TempDir(), "oci:"+dir+":latest", []string{"zstd:chunked", "zstd:chunked", "zstd:chunked", "zstd:chunked"}, src)
}

// TestTOCDiffIDTrap: skopeo 1.9's zstd:chunked writer drops GNU tar's
// record padding, so the layer decodes to bytes that do not hash to the
// config's DiffID. The mount from the TOC (which cannot check a DiffID)
// serves the files, every chunk checked; `ocimount index`, a full pass,
// refuses the layer, as documented.
func TestTOCDiffIDTrap(t *testing.T) {
	requireIntegration(t, "skopeo", "tar")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hello from GNU tar\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(t.TempDir(), "layer.tar")
	if out, err := exec.Command("tar", "--format=gnu", "--owner=0", "--group=0", "--mtime=@1600000000", "-C", src, "-cf", layer, "hello").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tb, err := os.ReadFile(layer)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb)%10240 != 0 {
		t.Fatalf("GNU tar wrote %d bytes, not whole records", len(tb))
	}
	plain := filepath.Join(t.TempDir(), "plain")
	tartest.WriteOCILayout(t, plain, tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tb}}})
	dir := filepath.Join(t.TempDir(), "zstd-chunked")
	if out, err := exec.Command("skopeo", "--insecure-policy", "copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd:chunked",
		"oci:"+plain+":latest", "oci:"+dir+":latest").CombinedOutput(); err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}
	mnt, cache := tocMount(t, nil, "oci:"+dir+":latest")
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "hello from GNU tar\n" {
		t.Fatalf("hello: %q, %v", b, err)
	}
	requireTOCUsed(t, cache, 1)
	r := run(t, time.Minute, "index", "--cache-dir", t.TempDir(), "oci:"+dir+":latest")
	if r.code == 0 || !strings.Contains(r.stderr, "digest mismatch") {
		t.Fatalf("index of a layer that does not match its DiffID: %s", r)
	}
	t.Logf("index refuses it: %s", strings.TrimSpace(r.stderr))
}

// TestTOCPrefetch: a registry mount of an eStargz image fetches, in the
// background, the chunks of the files listed before the prefetch landmark
// into the range cache, so reading them then fetches nothing; the other
// files are not fetched until read.
func TestTOCPrefetch(t *testing.T) {
	requireIntegration(t, "docker-registry")
	tars := tocLayers(t)
	l := tartest.EStargzPrioritized(t, tars[0], 256<<10, "opt/random.bin")
	img := tartest.Image{Ref: "latest", Layers: []tartest.ImageLayer{l.Layer(tartest.Gzip)}}
	dir := filepath.Join(t.TempDir(), "layout")
	info := tartest.WriteOCILayoutInfo(t, dir, img)[0]
	reg := startRegistry(t, registryOpts{})
	if err := pushLayout(reg.Host, dir, "toc/prefetch:latest"); err != nil {
		t.Fatal(err)
	}
	proxy := startFaultProxy(t, reg.Host, nil)
	mnt, _ := tocMount(t, nil, proxy.Host+"/toc/prefetch:latest")
	layer := string(info.Layers[0].Digest)
	// footer, TOC, and the 5 chunks of opt/random.bin (1 MiB + 333 bytes).
	if !waitFor(30*time.Second, func() bool { r, _, _ := proxy.counts(layer); return r >= 7 }) {
		r, _, _ := proxy.counts(layer)
		t.Fatalf("%d range requests: the prefetch did not fetch opt/random.bin", r)
	}
	time.Sleep(200 * time.Millisecond) // (a prefetch going further would show below)
	before, _, _ := proxy.counts(layer)
	if before != 7 {
		t.Errorf("%d range requests after the prefetch, want 7: it fetched more than the prioritized file", before)
	}
	want := pseudoRandomBytes(1<<20+333, 5)
	sum := sha256.Sum256(want)
	if h, err := hashFile(filepath.Join(mnt, "opt/random.bin")); err != nil || h != hex.EncodeToString(sum[:]) {
		t.Fatalf("opt/random.bin: %s, %v", h, err)
	}
	if after, _, _ := proxy.counts(layer); after != before {
		t.Errorf("reading the prefetched file made %d range requests", after-before)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "lib/a")); err != nil || string(b) != "aaaa" {
		t.Fatalf("lib/a: %q, %v", b, err)
	}
	if after, _, _ := proxy.counts(layer); after != before+1 {
		t.Errorf("reading a file that was not prefetched made %d range requests, want 1", after-before)
	}
}
