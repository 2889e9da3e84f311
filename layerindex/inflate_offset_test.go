package layerindex

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/flate"
)

// TestInflaterCheckpointOffsets pins the behaviour of klauspost's
// end-of-block callback that onBlockEnd depends on. Up to v1.19.2 the
// inflater's InflateCheckpoint.CompressedOffset ran ahead of the true
// position by whole bytes after a stored block that followed a Huffman
// block; onBlockEnd measures that drift from the bufio position and
// subtracts it. From v1.20 the offset is exact. This test fails if an
// upgrade changes that in either direction: a drift (onBlockEnd still
// copes, but its bound of 4 bytes of read-ahead must be re-checked), or
// checkpoints that cannot be resumed verbatim at the offset they give.
func TestInflaterCheckpointOffsets(t *testing.T) {
	data := testData(7, 3<<20) // compressible and random runs
	// Level 6 with sync flushes: Huffman blocks, stored blocks for the
	// random runs and the empty stored block of each flush, in every order.
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, 6)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks(data, 50000, 170000, 9000) {
		fw.Write(c)
		fw.Flush()
	}
	fw.Close()
	blob := comp.Bytes()

	type point struct {
		cp       flate.InflateCheckpoint
		consumed int64
	}
	var points []point
	cr := &byteCounter{r: bytes.NewReader(blob)}
	br := bufio.NewReaderSize(cr, 64<<10)
	fr := flate.NewReaderOpts(br, flate.WithEobCallback(func(cp flate.InflateCheckpoint) {
		cp.Window = bytes.Clone(cp.Window)
		points = append(points, point{cp, cr.n - int64(br.Buffered())})
	}))
	out, err := io.ReadAll(fr)
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("inflate: %v (equal %v)", err, bytes.Equal(out, data))
	}
	var storedEnds, afterHuffman int
	for i, p := range points {
		if p.cp.CompressedOffset > p.consumed {
			t.Errorf("block end %d: CompressedOffset %d is past the %d bytes the inflater consumed (drift %d): re-check onBlockEnd",
				i, p.cp.CompressedOffset, p.consumed, p.cp.CompressedOffset-p.consumed)
		}
		if p.consumed-p.cp.CompressedOffset > 4 {
			t.Errorf("block end %d: %d bytes of read-ahead, onBlockEnd assumes at most 4", i, p.consumed-p.cp.CompressedOffset)
		}
		if p.cp.Final || int(p.cp.CompressedOffset) >= len(blob) {
			continue
		}
		if nextBlockType(blob, Checkpoint{In: p.cp.CompressedOffset, Bits: p.cp.BitOffset}) == 0 {
			storedEnds++
			if i > 0 && p.cp.BitOffset != 0 {
				afterHuffman++
			}
		}
		// Resume verbatim at the reported place: the rest must decode to
		// the rest of the data.
		r := flate.NewReaderOpts(bytes.NewReader(blob[p.cp.CompressedOffset:]), flate.WithResumeFrom(p.cp))
		rest, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(rest, data[p.cp.UncompressedOffset:]) {
			t.Fatalf("block end %d (in %d bit %d, out %d): resuming gives %d bytes, err %v, equal %v",
				i, p.cp.CompressedOffset, p.cp.BitOffset, p.cp.UncompressedOffset, len(rest), err, bytes.Equal(rest, data[p.cp.UncompressedOffset:]))
		}
	}
	// The fixture must contain the case that used to drift.
	if storedEnds == 0 || afterHuffman == 0 {
		t.Fatalf("fixture too tame: %d block ends before a stored block, %d of them mid-byte", storedEnds, afterHuffman)
	}
}

type byteCounter struct {
	r io.Reader
	n int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
