package layerindex

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func zstdFrames(t testing.TB, cs [][]byte, opts ...zstd.EOption) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var b []byte
	for _, c := range cs {
		b = enc.EncodeAll(c, b)
	}
	return b
}

// zstdStream writes data as one frame with the streaming encoder, as
// container tools do (no content size in the header).
func zstdStreamed(t testing.TB, data []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var b bytes.Buffer
	enc, err := zstd.NewWriter(&b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(data)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func skippable(n int, magicLow byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, zstdSkippableBase|uint32(magicLow&0xf))
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	return append(b, bytes.Repeat([]byte{0xab}, n)...)
}

type zstdCase struct {
	name  string
	make  func(t testing.TB, data []byte) []byte
	check func(t *testing.T, cps *Checkpoints, dataLen int)
}

func zstdCases() []zstdCase {
	oneSpan := func(t *testing.T, cps *Checkpoints, n int) {
		if cps.NumSpans() != 1 || cps.MaxSpanLen() != int64(n) {
			t.Fatalf("%d spans, longest %d", cps.NumSpans(), cps.MaxSpanLen())
		}
	}
	manySpans := func(t *testing.T, cps *Checkpoints, n int) {
		if cps.NumSpans() < 5 {
			t.Fatalf("%d spans", cps.NumSpans())
		}
	}
	return []zstdCase{
		{name: "klauspost-single-frame", make: func(t testing.TB, d []byte) []byte {
			return zstdFrames(t, [][]byte{d}, zstd.WithEncoderCRC(true))
		}, check: oneSpan},
		{name: "klauspost-streamed", make: func(t testing.TB, d []byte) []byte {
			return zstdStreamed(t, d, zstd.WithEncoderConcurrency(1))
		}, check: oneSpan},
		{name: "klauspost-frames-crc", make: func(t testing.TB, d []byte) []byte {
			return zstdFrames(t, chunks(d, 100<<10, 7, 300<<10), zstd.WithEncoderCRC(true))
		}, check: manySpans},
		{name: "klauspost-frames-nocrc-better", make: func(t testing.TB, d []byte) []byte {
			return zstdFrames(t, chunks(d, 64<<10, 200<<10), zstd.WithEncoderCRC(false), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
		}, check: manySpans},
		{name: "skippable-start-middle-end", make: func(t testing.TB, d []byte) []byte {
			b := skippable(10, 0)
			b = append(b, skippable(0, 15)...)
			for i, c := range chunks(d, 250<<10) {
				b = append(b, zstdFrames(t, [][]byte{c}, zstd.WithEncoderCRC(true))...)
				if i%3 == 1 {
					b = append(b, skippable(1000+i, byte(i))...)
				}
			}
			return append(b, skippable(70000, 5)...)
		}, check: func(t *testing.T, cps *Checkpoints, n int) {
			if p := cps.Points[0]; p.In != 0 || p.Out != 0 {
				t.Fatalf("first point %+v", p)
			}
		}},
		{name: "empty-frames", make: func(t testing.TB, d []byte) []byte {
			cs := [][]byte{nil}
			for _, c := range chunks(d, 500<<10) {
				cs = append(cs, c, nil)
			}
			return zstdFrames(t, cs)
		}},
		{name: "zstd-cli-single", make: func(t testing.TB, d []byte) []byte {
			return runCLI(t, d, "zstd", "-c", "-q", "-3")
		}, check: oneSpan},
		{name: "zstd-cli-concat", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for i, c := range chunks(d, 400<<10, 90<<10) {
				args := []string{"-c", "-q", "-1"}
				if i%2 == 1 {
					args = append(args, "--no-check", "--no-content-size")
				}
				b = append(b, runCLI(t, c, "zstd", args...)...)
			}
			return b
		}, check: manySpans},
		{name: "zstd-cli-long-window", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for _, c := range chunks(d, 2<<20) {
				b = append(b, runCLI(t, c, "zstd", "-c", "-q", "--long=27", "-B1048576", "-T2")...)
			}
			return b
		}},
	}
}

func TestZstd(t *testing.T) {
	data := testData(12, 2<<20+777)
	for _, tc := range zstdCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			blob := tc.make(t, data)
			for _, span := range testSpans {
				cps := checkDecode(t, Zstd, blob, data, span)
				if span == 64<<10 && tc.check != nil {
					tc.check(t, cps, len(data))
				}
			}
		})
	}
}

func TestZstdEmptyOutput(t *testing.T) {
	for _, blob := range [][]byte{
		zstdFrames(t, [][]byte{nil}),
		zstdFrames(t, [][]byte{nil, nil}, zstd.WithEncoderCRC(true)),
		skippable(5, 0),
		append(skippable(5, 0), zstdFrames(t, [][]byte{nil})...),
	} {
		cps := checkDecode(t, Zstd, blob, nil, 0)
		if b, err := cps.DecodeSpan(bytes.NewReader(blob), 0, nil); err != nil || len(b) != 0 {
			t.Fatalf("DecodeSpan: %d bytes, %v", len(b), err)
		}
	}
}

func TestZstdErrors(t *testing.T) {
	data := testData(13, 300<<10)
	good := zstdFrames(t, [][]byte{data[:100<<10], data[100<<10:]}, zstd.WithEncoderCRC(true))
	first := len(zstdFrames(t, [][]byte{data[:100<<10]}, zstd.WithEncoderCRC(true)))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	// A frame header by hand: magic, descriptor, then fields.
	frame := func(fhd byte, rest ...byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, zstdMagic)
		return append(append(b, fhd), rest...)
	}
	lastRaw := func(n int) []byte { // last raw block of n bytes
		h := uint32(n)<<3 | 1
		return append([]byte{byte(h), byte(h >> 8), byte(h >> 16)}, make([]byte, n)...)
	}
	for _, tc := range []struct {
		name  string
		blob  []byte
		trunc bool
	}{
		{"empty", nil, true},
		{"zeros", make([]byte, 100), false},
		{"bad-magic", mod(func(b []byte) []byte { b[0] ^= 1; return b }), false},
		{"bad-checksum", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), false},
		{"bad-checksum-first", mod(func(b []byte) []byte { b[first-2] ^= 1; return b }), false},
		{"trailing-garbage", append(bytes.Clone(good), "garbage"...), false},
		{"trailing-zeros", append(bytes.Clone(good), 0, 0, 0, 0, 0, 0, 0, 0), false},
		{"trailing-partial-magic", append(bytes.Clone(good), 0x28, 0xb5), true},
		{"truncated-magic", good[:3], true},
		{"truncated-header", good[:5], true},
		{"truncated-block", good[:first/2], true},
		{"truncated-checksum", good[:first-1], true},
		{"truncated-second", good[:len(good)-100], true},
		{"truncated-skippable", skippable(100, 0)[:50], true},
		{"truncated-skippable-size", skippable(100, 0)[:6], true},
		{"reserved-bit", frame(0x20|0x08, append([]byte{0}, lastRaw(0)...)...), false},
		{"dictionary", frame(0x20|0x01, append([]byte{7, 0}, lastRaw(0)...)...), false},
		{"window-too-large", frame(0x00, append([]byte{0xff}, lastRaw(0)...)...), false},
		{"single-segment-too-large", frame(0xe0, append(binary.LittleEndian.AppendUint64(nil, 1<<30), lastRaw(0)...)...), false},
		{"reserved-block-type", frame(0x20, 0, 0x07, 0, 0), false},
		{"block-too-large", frame(0x00, 0x58, 0x01, 0x00, 0x20), false},
		{"content-size-mismatch", frame(0x20, append([]byte{5}, lastRaw(4)...)...), false},
		{"no-last-block", frame(0x20, 0, 0x00, 0, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tryIndex(Zstd, tc.blob, 0)
			if strings.HasSuffix(tc.name, "segment-too-large") || tc.name == "window-too-large" {
				// Valid zstd over our window limit: refused, not corrupt.
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s: %v, want ErrUnsupported", tc.name, err)
				}
				return
			}
			requireCorrupt(t, err, tc.trunc, tc.name)
			t.Log(err)
		})
	}
	// The hand-made frame format is right: a valid one decodes.
	if out, _, err := tryIndex(Zstd, frame(0x20, append([]byte{4}, lastRaw(4)...)...), 0); err != nil || len(out) != 4 {
		t.Fatalf("hand-made frame: %d bytes, %v", len(out), err)
	}
}

func TestZstdMutations(t *testing.T) {
	data := testData(14, 100<<10)
	blob := zstdFrames(t, chunks(data, 20<<10), zstd.WithEncoderCRC(true))
	blob = append(append(skippable(3, 0), blob...), skippable(3, 1)...)
	checkMutations(t, Zstd, blob, data, true)
	_, cps := indexAll(t, Zstd, blob, 16<<10)
	checkCorruptSpans(t, cps, blob)
	// Without checksums a flip can go unnoticed, but must not panic.
	checkMutations(t, Zstd, zstdFrames(t, chunks(data, 20<<10), zstd.WithEncoderCRC(false)), data, false)
}

// BenchmarkIndexZstd compares the indexing pass with a plain klauspost zstd
// decode of the same blob: a single streamed frame (as container tools
// write layers), 1 MiB frames and 4 KiB frames (zstd:chunked-like).
func BenchmarkIndexZstd(b *testing.B) {
	data := testData(10, 32<<20)
	for _, bc := range []struct {
		name string
		blob []byte
	}{
		{"single-frame", zstdStreamed(b, data)},
		{"1MiB-frames", zstdFrames(b, chunks(data, 1<<20), zstd.WithEncoderCRC(true))},
		{"4KiB-frames", zstdFrames(b, chunks(data, 4<<10), zstd.WithEncoderCRC(true))},
	} {
		b.Run(bc.name+"/index", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				ir, _ := NewIndexingReader(Zstd, bytes.NewReader(bc.blob), 0)
				if _, err := io.Copy(io.Discard, ir); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/baseline-klauspost-zstd", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				zr, _ := zstd.NewReader(bytes.NewReader(bc.blob), zstd.WithDecoderConcurrency(1))
				if _, err := io.Copy(io.Discard, zr); err != nil {
					b.Fatal(err)
				}
				zr.Close()
			}
		})
	}
}

// A frame asking for more history than we allow is not corrupt: it is
// valid zstd we refuse, and the message must say so with both figures.
func TestZstdWindowTooLarge(t *testing.T) {
	// A 256 MiB window descriptor: exponent 18 (2^(10+18)), mantissa 0.
	var fr []byte
	fr = append(fr, 0x28, 0xb5, 0x2f, 0xfd) // magic
	fr = append(fr, 0x00)                   // no single segment, no checksum, no FCS
	fr = append(fr, 18<<3)                  // window descriptor
	fr = append(fr, 0x01, 0x00, 0x00)       // last raw block of 0 bytes
	_, err := Build(context.Background(), bytes.NewReader(fr), Zstd, Options{})
	if err == nil {
		t.Fatal("frame with a 256 MiB window accepted")
	}
	want := fmt.Sprintf("unsupported window size %d, limit %d", 256<<20, zstdMaxWindow)
	if !strings.Contains(err.Error(), want) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %q: want it to say %q and not call the stream corrupt", err, want)
	}
}
