package layerindex

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// Whatever the write sizes (across block boundaries, empty writes), the
// other goroutine sees exactly the bytes written, in order, by Close.
func TestAsyncWriter(t *testing.T) {
	data := make([]byte, asyncBlock*asyncBlocks*3+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, maxWrite := range []int{1, 511, asyncBlock, 3*asyncBlock + 7} {
		var got bytes.Buffer
		a := newAsyncWriter(&got)
		for p := data; len(p) > 0; {
			k := min(len(p), r.IntN(maxWrite+1))
			a.Write(p[:k])
			p = p[k:]
		}
		a.Close()
		a.Close() // idempotent
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("max write %d: the writer saw %d bytes, differing from the %d written", maxWrite, got.Len(), len(data))
		}
	}
	// Closed without writes (an early error return): the goroutine ends.
	newAsyncWriter(sha256.New()).Close()
}
