package tests

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// prefixLayout writes an OCI layout holding the fixture image cut after
// layer n (its first n+1 layers), sharing the blobs by hard link: the
// independent reference for `--layers ..n`, made by umoci from it.
func prefixLayout(t *testing.T, src string, n int) string {
	t.Helper()
	readJSON := func(p string, v any) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	blob := func(root string, d digest.Digest) string {
		return filepath.Join(root, "blobs", d.Algorithm().String(), d.Encoded())
	}
	var idx ocispec.Index
	readJSON(filepath.Join(src, "index.json"), &idx)
	var man ocispec.Manifest
	readJSON(blob(src, idx.Manifests[0].Digest), &man)
	var cfg ocispec.Image
	readJSON(blob(src, man.Config.Digest), &cfg)

	dst := filepath.Join(t.TempDir(), "prefix")
	if err := os.MkdirAll(filepath.Join(dst, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dst, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	put := func(mt string, v any) ocispec.Descriptor {
		b, _ := json.Marshal(v)
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := os.WriteFile(blob(dst, d.Digest), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	man.Layers = man.Layers[:n+1]
	for _, l := range man.Layers {
		if err := os.Link(blob(src, l.Digest), blob(dst, l.Digest)); err != nil {
			t.Fatal(err)
		}
	}
	cfg.RootFS.DiffIDs = cfg.RootFS.DiffIDs[:n+1]
	cfg.History = nil
	man.Config = put(ocispec.MediaTypeImageConfig, cfg)
	md := put(ocispec.MediaTypeImageManifest, man)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "latest"}
	put("", nil)
	b, _ := json.Marshal(ocispec.Index{Versioned: idx.Versioned, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	os.WriteFile(filepath.Join(dst, "index.json"), b, 0o644)
	return dst
}

// extract unpacks a tar with GNU tar, keeping owners, modes and xattrs.
func extract(t *testing.T, tarFile string) *Tree {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "x")
	os.MkdirAll(dir, 0o755)
	out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tarFile, "-C", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -x %s: %v\n%s", tarFile, err, out)
	}
	tree, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func ocimountOK(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, 3*time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	return r.stdout
}

// TestExportMatchesUmoci: `ocimount export` extracted by GNU tar is the
// same tree as `umoci unpack` of the image (hardlinks, xattrs, devices,
// modes, owners, nanosecond mtimes).
func TestExportMatchesUmoci(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	cache := t.TempDir()
	for _, src := range []string{"oci:" + f.Dir + "/gzip:latest", "oci:" + f.Dir + "/zstd:latest", "docker-archive:" + f.Dir + "/docker-archive.tar"} {
		out := filepath.Join(t.TempDir(), "export.tar")
		ocimountOK(t, "export", "--cache-dir", cache, src, out)
		requireSameTree(t, ref, extract(t, out), rootDirException)
	}
}

// TestForensicsAgainstLayers cross-checks every answer on the fixture
// image against umoci's extraction of each prefix of its layers.
func TestForensicsAgainstLayers(t *testing.T) {
	f := images(t)
	src := "oci:" + f.Dir + "/gzip:latest"
	cache := t.TempDir()

	var insp struct {
		Layers []struct {
			Index     int    `json:"index"`
			Whiteouts int    `json:"whiteouts"`
			Opaque    int    `json:"opaque_dirs"`
			CreatedBy string `json:"created_by"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(ocimountOK(t, "inspect", "--json", "--cache-dir", cache, src)), &insp); err != nil {
		t.Fatal(err)
	}
	n := len(insp.Layers)
	if n != 6 || insp.Layers[2].Whiteouts == 0 || insp.Layers[5].Opaque != 1 ||
		!strings.Contains(insp.Layers[5].CreatedBy, "GNU tar layer") || !strings.Contains(insp.Layers[0].CreatedBy, "busybox") {
		t.Fatalf("inspect: %+v", insp)
	}

	// Reference trees after each layer.
	refs := make([]*Tree, n)
	for i := range refs {
		refs[i] = umociRef(t, prefixLayout(t, f.Dir+"/gzip", i), "latest")
	}

	for i := 0; i < n; i++ {
		// --layers ..i: export and mount both match the reference.
		out := filepath.Join(t.TempDir(), "prefix.tar")
		ocimountOK(t, "export", "--cache-dir", cache, "--layers", ".."+strconv.Itoa(i), src, out)
		requireSameTree(t, refs[i], extract(t, out), rootDirException)
		if i == 2 || i == n-1 {
			mnt := mountImage(t, src, "--layers", ".."+strconv.Itoa(i))
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTree(t, refs[i], got, rootDirException)
		}

		// diff --layer i lists exactly the paths that differ between
		// the references, each with the right class.
		want := map[string]string{}
		if i == 0 {
			for _, p := range refs[0].Paths {
				want[p] = "added"
			}
		} else {
			for _, d := range Compare(refs[i-1], refs[i]) {
				p, rest, _ := strings.Cut(d, ": ")
				field, _, _ := strings.Cut(rest, ":")
				switch {
				case field == "exists" && strings.Contains(rest, "missing"):
					want[p] = "removed"
				case field == "exists":
					want[p] = "added"
				case field == "nlink" || field == "hardlinks":
				default:
					want[p] = "changed"
				}
			}
		}
		delete(want, ".")
		got := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(ocimountOK(t, "diff", "--json", "--cache-dir", cache, src, "--layer", strconv.Itoa(i))))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var c struct{ Path, Change string }
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatal(err)
			}
			if c.Change == "modified" || c.Change == "metadata" {
				c.Change = "changed"
			}
			got[c.Path] = c.Change
		}
		delete(got, ".")
		var bad []string
		for p, w := range want {
			if got[p] != w {
				bad = append(bad, p+": diff says "+strconv.Quote(got[p])+", references say "+w)
			}
		}
		for p, g := range got {
			if _, ok := want[p]; !ok {
				bad = append(bad, p+": diff says "+g+", references say unchanged")
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("diff --layer %d: %d disagreements:\n  %s", i, len(bad), strings.Join(bad[:min(len(bad), 30)], "\n  "))
		}
	}

	// history: presence and content at each layer match the references.
	for _, p := range []string{"data/modified", "data/todelete/x", "data/random.bin", "data/opq/old1", "data/dir2file",
		"data/file2dir", "special/hl2", "data/hl_to_lower_gnutar", "etc/passwd", "data/opq/new"} {
		var h struct {
			Events []struct {
				Layer  int
				Event  string
				Type   string
				Digest string
			}
		}
		if err := json.Unmarshal([]byte(ocimountOK(t, "history", "--json", "--cache-dir", cache, src, p)), &h); err != nil {
			t.Fatal(err)
		}
		present, dg, typ := false, "", ""
		ev := 0
		for i := 0; i < n; i++ {
			for ; ev < len(h.Events) && h.Events[ev].Layer == i; ev++ {
				e := h.Events[ev]
				present, dg, typ = e.Event != "deleted", e.Digest, e.Type
			}
			node := refs[i].Nodes[p]
			if (node != nil) != present {
				t.Errorf("history %s: after layer %d present=%v, reference says %v", p, i, present, node != nil)
				continue
			}
			if node != nil && typ == "file" && "sha256:"+node.SHA256 != dg {
				t.Errorf("history %s: after layer %d digest %s, reference %s", p, i, dg, node.SHA256)
			}
		}
	}

	// waste: the deleted 6 MiB file is still shipped in layer 1.
	var w struct {
		Entries []struct {
			Path     string
			Layer    int
			Size     int64
			HiddenBy int `json:"hidden_by"`
			How      string
		}
	}
	if err := json.Unmarshal([]byte(ocimountOK(t, "waste", "--json", "--cache-dir", cache, src)), &w); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range w.Entries {
		if e.Path == "data/random.bin" {
			found = e.Layer == 1 && e.HiddenBy == 2 && e.How == "whiteout" && e.Size == 6291456
		}
		if refs[n-1].Nodes[e.Path] != nil && e.How == "whiteout" {
			t.Errorf("waste says %s was whited out, but it is in the image", e.Path)
		}
	}
	if !found || len(w.Entries) == 0 || w.Entries[0].Path != "data/random.bin" {
		t.Errorf("waste does not lead with data/random.bin: %+v", w.Entries[:min(3, len(w.Entries))])
	}

	// ls -R --json lists exactly the reference's paths and types, each
	// with a layer; cat gives the reference's bytes.
	final := refs[n-1]
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(ocimountOK(t, "ls", "-R", "--json", "--cache-dir", cache, src)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Path, Type string
			Size       int64
			Layer      int
		}
		json.Unmarshal(sc.Bytes(), &e)
		seen[e.Path] = true
		r := final.Nodes[e.Path]
		if r == nil || typeName(r.Type) != map[string]string{"file": "file", "dir": "dir", "symlink": "symlink", "char": "char", "block": "block", "fifo": "fifo"}[e.Type] && e.Type != "file" {
			if r == nil {
				t.Errorf("ls: %s not in the reference", e.Path)
			}
		}
		if r != nil && e.Type == "file" && r.Size != e.Size {
			t.Errorf("ls: %s size %d, reference %d", e.Path, e.Size, r.Size)
		}
	}
	for _, p := range final.Paths {
		if p != "." && !seen[p] {
			t.Errorf("ls -R misses %s", p)
		}
	}
	for _, p := range []string{"etc/passwd", "data/seq.txt", "special/rel", "special/hl2"} {
		out := filepath.Join(t.TempDir(), "cat")
		r := run(t, time.Minute, "cat", "--cache-dir", cache, src, p)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		os.WriteFile(out, []byte(r.stdout), 0o644)
		target := final.Nodes[p]
		if p == "special/rel" {
			target = final.Nodes["data/seq.txt"]
		}
		if h, _ := hashFile(out); h != target.SHA256 {
			t.Errorf("cat %s: sha256 %s, reference %s", p, h, target.SHA256)
		}
	}
	// Errors: clear message, nonzero exit, nothing mounted.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"cat", src, "data"}, "is a directory"},
		{[]string{"cat", src, "special/abs-nope"}, "no such file"},
		{[]string{"history", src, "no/such"}, "no such file"},
		{[]string{"diff", src, "--layer", "6"}, "layer out of range"},
		{[]string{"ls", src, "../etc"}, "invalid path"},
	} {
		r := run(t, time.Minute, append([]string{c.args[0], "--cache-dir", cache}, c.args[1:]...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("%v: want failure with %q: %s", c.args, c.msg, r)
		}
	}
	mnt := newMountpoint(t)
	if r := run(t, time.Minute, "mount", "--cache-dir", cache, "--layers", "..6", src, mnt); r.code == 0 || !strings.Contains(r.stderr, "layer out of range") || findMount(t, mnt) != nil {
		t.Errorf("mount --layers ..6 of a 6-layer image: %s", r)
	}
}

// TestRawLayerMount: `mount --layer N --raw` is the layer's tar as GNU tar
// extracts it, whiteout files included.
func TestRawLayerMount(t *testing.T) {
	f := images(t)
	src := "oci:" + f.Dir + "/tar:latest"
	var man ocispec.Manifest
	var idx ocispec.Index
	b, _ := os.ReadFile(filepath.Join(f.Dir, "tar", "index.json"))
	json.Unmarshal(b, &idx)
	b, _ = os.ReadFile(filepath.Join(f.Dir, "tar", "blobs", "sha256", idx.Manifests[0].Digest.Encoded()))
	json.Unmarshal(b, &man)
	// Layer 2 (deletions) is one GNU tar can extract on its own: the later
	// ones store whiteouts below a path that is a file in the same layer,
	// or hardlinks to lower layers' files.
	for _, n := range []int{2} {
		layerTar := filepath.Join(f.Dir, "tar", "blobs", "sha256", man.Layers[n].Digest.Encoded())
		want := extract(t, layerTar)
		wh := 0
		for _, p := range want.Paths {
			if strings.Contains(p, ".wh.") {
				wh++
			}
		}
		if wh == 0 {
			t.Fatalf("layer %d has no whiteouts to show", n)
		}
		mnt := mountImage(t, src, "--layer", strconv.Itoa(n), "--raw")
		got, err := Snapshot(mnt)
		if err != nil {
			t.Fatal(err)
		}
		requireSameTree(t, want, got, rootDirException, implicitDirMtime(want))
	}
}

// implicitDirMtime: directories the layer does not store (parents of its
// entries) get the extraction time from GNU tar and mtime 0 from the raw
// view; only their mtime is excused. A layer stores its directories
// before their children, so a stored directory has a stored entry in tar
// listing order; tar -t tells which ones.
func implicitDirMtime(want *Tree) Exception {
	return func(path, field string, w, g *Node) bool {
		return field == "mtime" && w != nil && w.Type == 0o040000 && g != nil && g.Mtime.Sec == 0
	}
}
