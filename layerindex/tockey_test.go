package layerindex

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// TestTOCReadersOfOneBlobShareSpanCache: one blob can hold two eStargz
// TOCs, one ending at a size a descriptor gives short of the blob's end
// (a registry that answers ranges with a total of "*" never says it is
// short) and one at its real end. Two layers naming the blob by one
// digest then have different chunk tables, and readers of both share one
// span cache (the snapshotter's) under the loader's key for the blob:
// chunk i of one table must not be served, unchecked, as chunk i of the
// other. It served the first table's bytes for the second's file (or, with
// a shorter cached chunk, panicked slicing it) before the key named the
// chunk table.
func TestTOCReadersOfOneBlobShareSpanCache(t *testing.T) {
	member := func(p []byte) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(p)
		zw.Close()
		return b.Bytes()
	}
	tocJS := func(off int64, content []byte) []byte {
		return fmt.Appendf(nil, `{"version":1,"entries":[{"name":"f","type":"reg","mode":420,"size":%d,"offset":%d,"chunkDigest":%q}]}`,
			len(content), off, digest.FromBytes(content))
	}
	a, b := bytes.Repeat([]byte("A"), 8192), bytes.Repeat([]byte("B"), 4096)
	data1 := append([]byte("pad"), member(a)...)
	blob1, ann1 := tocBlob(t, false, data1, tocJS(3, a))
	data2 := append(append([]byte{}, blob1...), member(b)...)
	blob, ann2 := tocBlob(t, false, data2, tocJS(int64(len(blob1)), b))
	d := digest.FromBytes(blob)

	cache := NewSpanCache(64 << 20)
	defer cache.Close()
	read := func(size int64, ann map[string]string, want []byte) {
		t.Helper()
		ix, err := estargzFormat.Load(context.Background(), bytes.NewReader(blob), size, d, "", ann)
		if err != nil {
			t.Fatal(err)
		}
		r := ix.TOC.NewReaderAt(bytes.NewReader(blob), cache, string(d)+"/toc", ChunkCache{})
		f := ix.Entries[0]
		got := make([]byte, f.Size)
		if _, err := r.ReadAt(got, f.Offset); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("blob of %d bytes, file f: served %.16q..., want %.16q... (its chunk digest)", size, got, want)
		}
	}
	read(int64(len(blob1)), ann1, a)
	read(int64(len(blob)), ann2, b)
}
