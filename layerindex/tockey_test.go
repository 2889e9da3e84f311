package layerindex

import (
	"bytes"
	"context"
	"errors"
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

// TestTOCDeepPackedChunksRefused: a TOC whose thousands of 16-byte chunks
// lie up to 64 MiB deep into one gzip member (innerOffset) would make
// every read inflate tens of megabytes per chunk, terabytes for the file,
// from a blob of a few kilobytes; it is refused (ErrBadTOC: the loader
// reads the layer by one pass instead). It loaded before the bound.
func TestTOCDeepPackedChunksRefused(t *testing.T) {
	var js bytes.Buffer
	const n, size = 4096, 16
	fmt.Fprintf(&js, `{"version":1,"entries":[{"name":"f","type":"reg","mode":420,"size":%d,"offset":3,"innerOffset":0,"chunkSize":%d,"chunkDigest":"sha256:%064x"}`, n*size, size, 0)
	for k := 1; k < n; k++ {
		fmt.Fprintf(&js, `,{"name":"f","type":"chunk","offset":3,"innerOffset":%d,"chunkOffset":%d,"chunkSize":%d,"chunkDigest":"sha256:%064x"}`, k*(16<<10), k*size, size, 0)
	}
	js.WriteString("]}")
	blob, ann := tocBlob(t, false, []byte("pad0123456789"), js.Bytes())
	_, err := estargzFormat.Load(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob), "", ann)
	if !errors.Is(err, ErrBadTOC) {
		t.Fatalf("TOC of %d chunks packed 64 MiB deep: err %v, want ErrBadTOC", n, err)
	}
	t.Log(err)
}
