package overlay_test

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/overlay"
)

// TestWithDirs: the directories a bundle needs are added where the image
// lacks them, parents included, root-owned 0755, with inode numbers of
// their own; the image's files keep their attributes, contents, hardlinks
// and children; the original tree is untouched.
func TestWithDirs(t *testing.T) {
	ls, err := buildLayers(t, tartest.Tar(t,
		tartest.File("busybox", "static binary", 0o755),
		tartest.Dir("dev", 0o700, tartest.Owner(5, 5)), tartest.File("dev/keep", "k", 0o600),
		tartest.Dir("a", 0o755), tartest.File("a/f", "shared", 0o644),
		tartest.Dir("z", 0o755), tartest.Hardlink("z/g", "a/f"),
		tartest.Symlink("lnk", "a"),
	))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := overlay.Merge(ls)
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, tree, true)
	got, added := tree.WithDirs([]string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/sys/fs/cgroup", "data/work/", "/data/../data", "/"})
	if want := []string{"/proc", "/dev/pts", "/dev/shm", "/sys", "/sys/fs", "/sys/fs/cgroup", "/data", "/data/work"}; !reflect.DeepEqual(added, want) {
		t.Errorf("added %q, want %q", added, want)
	}
	if d := cmp.Diff(before, dump(t, tree, true)); d != "" {
		t.Errorf("the original tree changed (-before +after):\n%s", d)
	}
	checkInvariants(t, got)
	want := []string{
		". dir 0755 0:0 0 - - 8 - 0",
		"a dir 0755 0:0 0 - - 2 - D",
		`a/f file 0644 0:0 6 "shared" =a/f 2 - D`,
		`busybox file 0755 0:0 13 "static binary" - 1 - D`,
		"data dir 0755 0:0 0 - - 3 - 0",
		"data/work dir 0755 0:0 0 - - 2 - 0",
		"dev dir 0700 5:5 0 - - 4 - D",
		`dev/keep file 0600 0:0 1 "k" - 1 - D`,
		"dev/pts dir 0755 0:0 0 - - 2 - 0",
		"dev/shm dir 0755 0:0 0 - - 2 - 0",
		"lnk symlink 0777 0:0 1 ->a - 1 - D",
		"proc dir 0755 0:0 0 - - 2 - 0",
		"sys dir 0755 0:0 0 - - 3 - 0",
		"sys/fs dir 0755 0:0 0 - - 3 - 0",
		"sys/fs/cgroup dir 0755 0:0 0 - - 2 - 0",
		"z dir 0755 0:0 0 - - 2 - D",
		`z/g file 0644 0:0 6 "shared" =a/f 2 - D`,
	}
	gotDump := dump(t, got, true)
	if d := cmp.Diff(want, gotDump); d != "" {
		t.Errorf("tree with dirs (-want +got):\n%s", d)
	}
	inos := map[uint64]string{}
	for _, p := range []string{".", "a", "a/f", "data", "data/work", "dev", "dev/keep", "dev/pts", "dev/shm", "busybox", "lnk", "proc", "sys", "sys/fs", "sys/fs/cgroup", "z"} {
		id, ok := got.Walk(p)
		if !ok {
			t.Fatalf("%s missing", p)
		}
		in := got.Attr(id)
		if o, dup := inos[in.Ino]; dup {
			t.Errorf("%s and %s share inode number %d", p, o, in.Ino)
		}
		inos[in.Ino] = p
		if _, orig := tree.Walk(p); !orig && (in.Layer != -1 || in.Entry != -1) {
			t.Errorf("%s: added directory claims layer %d entry %d", p, in.Layer, in.Entry)
		}
	}
	// Deterministic: the same input gives the same numbering.
	again, _ := tree.WithDirs([]string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/sys/fs/cgroup", "data/work/", "/data/../data", "/"})
	for _, p := range []string{"proc", "sys/fs/cgroup", "a/f", "z/g"} {
		a, _ := got.Walk(p)
		b, _ := again.Walk(p)
		if got.Attr(a).Ino != again.Attr(b).Ino {
			t.Errorf("%s: inode %d, then %d", p, got.Attr(a).Ino, again.Attr(b).Ino)
		}
	}
	// The tree file's loader accepts the result (it checks the layout
	// and that every inode number leads back to its inode).
	var ids []overlay.LayerID
	for _, l := range ls {
		ids = append(ids, overlay.LayerID{Digest: l.Index.Digest, DiffID: l.Index.DiffID, UncompressedSize: l.Index.UncompressedSize})
	}
	b, err := got.MarshalBinary(ids)
	if err != nil {
		t.Fatal(err)
	}
	re, err := overlay.UnmarshalTree(b, ids, ls)
	if err != nil {
		t.Fatalf("the tree file loader rejects the tree: %v", err)
	}
	if d := cmp.Diff(gotDump, dump(t, re, true)); d != "" {
		t.Errorf("round trip differs:\n%s", d)
	}
}

// TestWithDirsLeavesNonDirectories: a file or a symlink (even to a
// directory) where a directory is wanted is left alone, and nothing is
// added below it; with nothing to add, the tree itself comes back.
func TestWithDirsLeavesNonDirectories(t *testing.T) {
	tree, err := mergeEntries(t, []tartest.Entry{
		tartest.File("proc", "not a dir", 0o644),
		tartest.Dir("realdev", 0o755), tartest.Symlink("dev", "realdev"),
		tartest.Dir("sys", 0o555),
	})
	if err != nil {
		t.Fatal(err)
	}
	got, added := tree.WithDirs([]string{"/proc", "/proc/self", "/dev", "/dev/pts", "/sys"})
	if got != tree || added != nil {
		t.Errorf("WithDirs added %q (new tree: %v)", added, got != tree)
	}
	if _, ok := tree.Walk("realdev/pts"); ok {
		t.Error("a directory was added through a symlink")
	}
	if id, _ := tree.Walk("sys"); tree.Attr(id).Mode != 0o555 {
		t.Errorf("existing /sys changed: %+v", tree.Attr(id))
	}
}
