package overlay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
)

func treeFixture(t testing.TB) (*Tree, []LayerID, []Layer) {
	var layers []Layer
	var ids []LayerID
	for _, tb := range [][]byte{
		tartest.Tar(t,
			tartest.Dir("etc", 0o755),
			tartest.File("etc/passwd", "root:x:0:0\n", 0o644, tartest.Owner(70000, 4294967295)),
			tartest.File("etc/cap", "x", 0o4755, tartest.Xattr("security.capability", "\x01\x00\x00\x02"), tartest.Xattr("user.a", "")),
			tartest.Symlink("lib", "usr/lib"),
			tartest.Char("dev/null", 1, 3),
			tartest.Sparse("sparse", 1<<20, []tartest.Chunk{{Offset: 4096, Data: []byte("hello")}}, tartest.SparsePAX01, 0o644),
		),
		tartest.Tar(t,
			tartest.Hardlink("etc/passwd2", "etc/passwd"),
			tartest.File("lib/x", "through the symlink", 0o600),
			tartest.Whiteout("dev"),
		),
	} {
		ix, err := layerindex.Build(context.Background(), bytes.NewReader(tb), layerindex.None, layerindex.Options{})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, Layer{Index: ix, Content: bytes.NewReader(tb)})
		ids = append(ids, LayerID{Digest: ix.Digest, DiffID: ix.DiffID, UncompressedSize: ix.UncompressedSize})
	}
	tree, err := Merge(layers)
	if err != nil {
		t.Fatal(err)
	}
	return tree, ids, layers
}

type nodeDump struct {
	Name          string
	Parent, First NodeID
	Count         int
	Attr          Inode
}

func dumpNodes(t *Tree) []nodeDump {
	var out []nodeDump
	for id := RootID; int(id) <= t.Len(); id++ {
		f, c := t.Children(id)
		out = append(out, nodeDump{t.Name(id), t.Parent(id), f, c, t.Attr(id)})
	}
	return out
}

func TestTreeFileRoundTrip(t *testing.T) {
	tree, ids, layers := treeFixture(t)
	b, err := tree.MarshalBinary(ids)
	if err != nil {
		t.Fatal(err)
	}
	// The loaded tree needs no entry tables: drop them.
	bare := make([]Layer, len(layers))
	for i, l := range layers {
		bare[i] = Layer{Content: l.Content}
	}
	got, err := UnmarshalTree(b, ids, bare)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(dumpNodes(tree), dumpNodes(got)); d != "" {
		t.Errorf("round trip differs (-want +got):\n%s", d)
	}
	for _, p := range []string{"etc/passwd2", "usr/lib/x", "sparse"} {
		id, ok := got.Walk(p)
		if !ok {
			t.Fatalf("%s missing", p)
		}
		want, _ := tree.Walk(p)
		ra1, err1 := tree.Open(want)
		ra2, err2 := got.Open(id)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		n := got.Attr(id).Size
		b1, b2 := make([]byte, n), make([]byte, n)
		ra1.ReadAt(b1, 0)
		ra2.ReadAt(b2, 0)
		if !bytes.Equal(b1, b2) {
			t.Errorf("%s: content differs after reload", p)
		}
	}
	// A tree is only valid for the layers it was made from.
	other := append([]LayerID(nil), ids...)
	other[1].Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	if _, err := UnmarshalTree(b, other, bare); !errors.Is(err, ErrBadTree) {
		t.Errorf("other layers: err = %v, want ErrBadTree", err)
	}
	for i := 0; i < len(b); i += max(1, len(b)/300) {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, err := UnmarshalTree(c, ids, bare); !errors.Is(err, ErrBadTree) {
			t.Fatalf("flipped byte %d: err = %v, want ErrBadTree", i, err)
		}
		if _, err := UnmarshalTree(b[:i], ids, bare); !errors.Is(err, ErrBadTree) {
			t.Fatalf("truncated to %d: err = %v, want ErrBadTree", i, err)
		}
	}
}

func FuzzUnmarshalTree(f *testing.F) {
	tree, ids, layers := treeFixture(f)
	b, err := tree.MarshalBinary(ids)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:len(b)-4])
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseTree(body, ids, layers)
		if err != nil {
			if !errors.Is(err, ErrBadTree) {
				t.Fatalf("error %v does not wrap ErrBadTree", err)
			}
			return
		}
		// Whatever loads must be walkable without panics.
		for id := RootID; int(id) <= got.Len(); id++ {
			got.Attr(id)
			got.Path(id)
			if got.Attr(id).Kind == layerindex.KindDir {
				got.Lookup(id, "x")
			}
		}
	})
}

// Past the checksum, every truncation and a node whose parent is the
// unused slot 0 must be refused, not panic or loop.
func TestParseTreeHostile(t *testing.T) {
	tree, ids, layers := treeFixture(t)
	b, err := tree.MarshalBinary(ids)
	if err != nil {
		t.Fatal(err)
	}
	body := b[:len(b)-4]
	for cut := 0; cut < len(body); cut++ {
		c := append([]byte(nil), body[:cut]...)
		if _, err := parseTree(c[:cut:cut], ids, layers); !errors.Is(err, ErrBadTree) {
			t.Fatalf("cut at %d: err = %v, want ErrBadTree", cut, err)
		}
	}
	bad := &Tree{layers: tree.layers, strs: tree.strs, inodes: tree.inodes, xattrs: tree.xattrs, frags: tree.frags}
	bad.nodes = append([]node(nil), tree.nodes...)
	bad.nodes[len(bad.nodes)-1].parent = 0
	b2, err := bad.MarshalBinary(ids)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalTree(b2, ids, layers); !errors.Is(err, ErrBadTree) {
		t.Fatalf("parent 0: err = %v, want ErrBadTree", err)
	}
}

// TestTreeFileRulesVersion: a tree merged by other union rules (or of
// another file format) is refused, so the loader rebuilds it instead of
// serving what the old rules made.
func TestTreeFileRulesVersion(t *testing.T) {
	tree, ids, layers := treeFixture(t)
	b, err := tree.MarshalBinary(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off  int
		want string
	}{{len(treeMagic), "version"}, {len(treeMagic) + 8, "rules version"}} {
		bad := bytes.Clone(b)
		binary.LittleEndian.PutUint32(bad[c.off:], binary.LittleEndian.Uint32(bad[c.off:])-1)
		binary.LittleEndian.PutUint32(bad[len(bad)-4:], crc32.Checksum(bad[:len(bad)-4], castagnoli))
		if _, err := UnmarshalTree(bad, ids, layers); !errors.Is(err, ErrBadTree) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s one less: err = %v", c.want, err)
		}
	}
}
