package fs

import (
	"bytes"
	"context"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ocimount/ocimount/internal/tartest"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// BenchmarkReadHandler: the READ handler alone (no kernel), 128 KiB from a
// plain layer held in memory, for a file with two xattrs (a binary with
// file capabilities). It measures what the server adds per request.
func BenchmarkReadHandler(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	tb := tartest.Tar(b, tartest.FileBytes("bin/x", data, 0o755,
		tartest.Xattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		tartest.Xattr("user.a", "b")))
	ix, err := layerindex.Build(context.Background(), bytes.NewReader(tb), layerindex.None, layerindex.Options{})
	if err != nil {
		b.Fatal(err)
	}
	tree, err := overlay.Merge([]overlay.Layer{{Index: ix, Content: bytes.NewReader(tb)}})
	if err != nil {
		b.Fatal(err)
	}
	id, ok := tree.Walk("bin/x")
	if !ok {
		b.Fatal("no bin/x")
	}
	r := &rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), tree: tree}
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: tree.Ino(id)}, Size: 128 << 10}
	dest := make([]byte, 128<<10)
	b.SetBytes(int64(len(dest)))
	b.ReportAllocs()
	for b.Loop() {
		in.Offset = (in.Offset + 128<<10) % uint64(len(data))
		res, st := r.Read(nil, in, dest)
		if !st.Ok() || res.Size() != len(dest) {
			b.Fatalf("read: %v, %d bytes", st, res.Size())
		}
	}
}
