package layerindex

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
)

// gzHeaderOpts selects the optional fields of a hand-made member header.
type gzHeaderOpts struct {
	extra, name, comment []byte
	hcrc                 bool
	badHCRC              bool
}

// gzipMember writes one member by hand (RFC 1952), deflating data at level
// and forcing a block end (sync flush) every flushEvery bytes if > 0.
func gzipMember(t testing.TB, data []byte, level, flushEvery int, o gzHeaderOpts) []byte {
	t.Helper()
	var b bytes.Buffer
	flg := byte(0)
	if o.hcrc {
		flg |= gzFlagHCRC
	}
	if o.extra != nil {
		flg |= gzFlagExtra
	}
	if o.name != nil {
		flg |= gzFlagName
	}
	if o.comment != nil {
		flg |= gzFlagComment
	}
	b.Write([]byte{gzID1, gzID2, gzDeflate, flg, 1, 2, 3, 4, 0, 3})
	if o.extra != nil {
		binary.Write(&b, binary.LittleEndian, uint16(len(o.extra)))
		b.Write(o.extra)
	}
	if o.name != nil {
		b.Write(o.name)
		b.WriteByte(0)
	}
	if o.comment != nil {
		b.Write(o.comment)
		b.WriteByte(0)
	}
	if o.hcrc {
		c := uint16(crc32.ChecksumIEEE(b.Bytes()))
		if o.badHCRC {
			c ^= 1
		}
		binary.Write(&b, binary.LittleEndian, c)
	}
	fw, err := flate.NewWriter(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	rest := data
	for len(rest) > 0 {
		n := len(rest)
		if flushEvery > 0 {
			n = min(n, flushEvery)
		}
		fw.Write(rest[:n])
		rest = rest[n:]
		if flushEvery > 0 && len(rest) > 0 {
			fw.Flush()
		}
	}
	fw.Close()
	binary.Write(&b, binary.LittleEndian, crc32.ChecksumIEEE(data))
	binary.Write(&b, binary.LittleEndian, uint32(len(data)))
	return b.Bytes()
}

func kgzipBytes(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := kgzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// nextBlockType is BTYPE of the deflate block starting at checkpoint p.
func nextBlockType(blob []byte, p Checkpoint) int {
	v := uint16(blob[p.In])
	if p.In+1 < int64(len(blob)) {
		v |= uint16(blob[p.In+1]) << 8
	}
	return int(v>>p.Bits>>1) & 3
}

type gzipCase struct {
	name string
	make func(t testing.TB, data []byte) []byte
	// checks on the table built with a 64 KiB span
	check func(t *testing.T, cps *Checkpoints, blob []byte)
}

func gzipCases() []gzipCase {
	return []gzipCase{
		{name: "klauspost-level6", make: func(t testing.TB, d []byte) []byte { return kgzipBytes(t, d, 6) },
			check: func(t *testing.T, cps *Checkpoints, blob []byte) {
				// The data mixes compressible and random runs, so Huffman
				// and stored blocks alternate: restarts must work mid-byte
				// and before a stored block (which skips to a byte
				// boundary), including both at once.
				var bits, stored, both int
				for _, p := range cps.Points[1:] {
					if p.Kind != CheckpointDeflate {
						t.Fatalf("kind %v in a single member", p.Kind)
					}
					s := nextBlockType(blob, p) == 0
					if p.Bits != 0 {
						bits++
					}
					if s {
						stored++
					}
					if s && p.Bits != 0 {
						both++
					}
				}
				if bits == 0 || stored == 0 || both == 0 {
					t.Fatalf("deflate checkpoints: %d with a bit offset, %d before a stored block, %d both", bits, stored, both)
				}
			}},
		{name: "klauspost-best", make: func(t testing.TB, d []byte) []byte { return kgzipBytes(t, d, 9) }},
		{name: "stored-blocks", make: func(t testing.TB, d []byte) []byte { return kgzipBytes(t, d, kgzip.NoCompression) },
			check: func(t *testing.T, cps *Checkpoints, blob []byte) {
				if len(cps.Points) < 10 {
					t.Fatalf("%d checkpoints in stored blocks", len(cps.Points))
				}
			}},
		{name: "huffman-only", make: func(t testing.TB, d []byte) []byte { return kgzipBytes(t, d, kgzip.HuffmanOnly) }},
		{name: "stdlib-flushes", make: func(t testing.TB, d []byte) []byte {
			var b bytes.Buffer
			w, _ := stdgzip.NewWriterLevel(&b, 5)
			for _, c := range chunks(d, 10000, 70000, 3) {
				w.Write(c)
				w.Flush()
			}
			w.Close()
			return b.Bytes()
		}},
		// Members of 50 KiB with block ends every 20 KiB: with a 64 KiB
		// span, member starts are often not due while a block 20 KiB into
		// the next member is, which gives windows shorter than 32 KiB.
		{name: "members-short-windows", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for _, c := range chunks(d, 50<<10) {
				b = append(b, gzipMember(t, c, 6, 20<<10, gzHeaderOpts{})...)
			}
			return b
		}, check: func(t *testing.T, cps *Checkpoints, blob []byte) {
			short, members := 0, 0
			for _, p := range cps.Points {
				if p.Kind == CheckpointDeflate && len(p.Window) < deflateWindow {
					short++
				}
				if p.Kind == CheckpointGzipMember {
					members++
				}
			}
			if short == 0 {
				t.Fatalf("%d short windows, %d member checkpoints", short, members)
			}
		}},
		// Many small members (eStargz-like): only those span bytes apart
		// become checkpoints.
		{name: "many-small-members", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for _, c := range chunks(d, 3000, 17, 40000, 1, 9000) {
				b = append(b, kgzipBytes(t, c, 6)...)
			}
			return b
		}, check: func(t *testing.T, cps *Checkpoints, blob []byte) {
			members := 0
			for i := 1; i < len(cps.Points); i++ {
				if d := cps.Points[i].Out - cps.Points[i-1].Out; d < 64<<10 {
					t.Fatalf("checkpoints %d bytes apart", d)
				}
				if cps.Points[i].Kind == CheckpointGzipMember {
					members++
				}
			}
			if members == 0 {
				t.Fatal("no member checkpoint after the first")
			}
		}},
		{name: "empty-members", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			b = append(b, kgzipBytes(t, nil, 6)...)
			for _, c := range chunks(d, 700<<10) {
				b = append(b, kgzipBytes(t, c, 6)...)
				b = append(b, kgzipBytes(t, nil, 6)...)
			}
			return b
		}},
		{name: "header-fields", make: func(t testing.TB, d []byte) []byte {
			opts := []gzHeaderOpts{
				{name: []byte("layer.tar")},
				{extra: []byte("SC\x04\x00abcd"), hcrc: true},
				{comment: bytes.Repeat([]byte("c"), 100000), name: []byte("x"), hcrc: true},
				{extra: bytes.Repeat([]byte{0xfe}, 65535), name: []byte{}, comment: []byte{}, hcrc: true},
				{extra: []byte{}},
			}
			var b []byte
			for i, c := range chunks(d, 400<<10) {
				b = append(b, gzipMember(t, c, 6, 0, opts[i%len(opts)])...)
			}
			return b
		}},
		{name: "gzip-cli-concat", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for _, c := range chunks(d, 900<<10, 100<<10) {
				b = append(b, runCLI(t, c, "gzip", "-c", "-n")...)
			}
			return b
		}},
		{name: "pigz-independent", make: func(t testing.TB, d []byte) []byte {
			return runCLI(t, d, "pigz", "-c", "-i", "-p", "2", "-b", "128")
		}},
		{name: "pigz-concat", make: func(t testing.TB, d []byte) []byte {
			var b []byte
			for _, c := range chunks(d, 300<<10) {
				b = append(b, runCLI(t, c, "pigz", "-c", "-p", "2")...)
			}
			return b
		}},
	}
}

func TestGzip(t *testing.T) {
	data := testData(2, 2<<20+12345)
	for _, tc := range gzipCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			blob := tc.make(t, data)
			for _, span := range testSpans {
				cps := checkDecode(t, Gzip, blob, data, span)
				if span == 64<<10 && tc.check != nil {
					tc.check(t, cps, blob)
				}
			}
		})
	}
}

func TestGzipEmptyOutput(t *testing.T) {
	blob := append(kgzipBytes(t, nil, 6), kgzipBytes(t, nil, 1)...)
	cps := checkDecode(t, Gzip, blob, nil, 0)
	if b, err := cps.DecodeSpan(bytes.NewReader(blob), 0, nil); err != nil || len(b) != 0 {
		t.Fatalf("DecodeSpan: %d bytes, %v", len(b), err)
	}
}

func TestGzipErrors(t *testing.T) {
	data := testData(3, 200<<10)
	good := gzipMember(t, data, 6, 0, gzHeaderOpts{name: []byte("n"), hcrc: true})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name  string
		blob  []byte
		trunc bool
	}{
		{"empty", nil, true},
		{"zeros", make([]byte, 100), false},
		{"bad-magic", mod(func(b []byte) []byte { b[1] = 0; return b }), false},
		{"bad-method", mod(func(b []byte) []byte { b[2] = 7; return b }), false},
		{"reserved-flag", mod(func(b []byte) []byte { b[3] |= 0x80; return b }), false},
		{"bad-header-crc", gzipMember(t, data, 6, 0, gzHeaderOpts{name: []byte("n"), hcrc: true, badHCRC: true}), false},
		{"bad-crc", mod(func(b []byte) []byte { b[len(b)-6] ^= 1; return b }), false},
		{"bad-isize", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), false},
		{"trailing-garbage", append(bytes.Clone(good), "garbage"...), false},
		{"zero-padding", append(bytes.Clone(good), make([]byte, 10000)...), false},
		{"one-zero", append(bytes.Clone(good), 0), false},
		{"garbage-after-padding", append(append(bytes.Clone(good), 0, 0, 0), 1), false},
		{"magic-then-junk", append(bytes.Clone(good), gzID1, gzID2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), false},
		{"trailing-magic", append(bytes.Clone(good), gzID1, gzID2), true},
		{"truncated-header", good[:5], true},
		{"truncated-name", good[:11], true},
		{"truncated-body", good[:len(good)/2], true},
		{"truncated-trailer", good[:len(good)-3], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tryIndex(Gzip, tc.blob, 0)
			requireCorrupt(t, err, tc.trunc, tc.name)
			t.Log(err)
		})
	}
}

func TestGzipIOError(t *testing.T) {
	blob := kgzipBytes(t, testData(4, 100<<10), 6)
	boom := errors.New("boom")
	ir, _ := NewIndexingReader(Gzip, io.MultiReader(bytes.NewReader(blob[:1000]), &errReader{boom}), 0)
	_, err := io.Copy(io.Discard, ir)
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func TestGzipMutations(t *testing.T) {
	data := testData(5, 100<<10)
	var blob []byte
	for i, c := range chunks(data, 40<<10) {
		blob = append(blob, gzipMember(t, c, 6, 15<<10, gzHeaderOpts{name: []byte("f"), hcrc: i%2 == 0})...)
	}
	checkMutations(t, Gzip, blob, data, true)
	_, cps := indexAll(t, Gzip, blob, 16<<10)
	checkCorruptSpans(t, cps, blob)
}

// TestGzipDamagedTable checks that a decode table damaged after indexing
// (say, read back from a corrupt cache file) gives errors, not panics.
func TestGzipDamagedTable(t *testing.T) {
	data := testData(6, 600<<10)
	blob := kgzipBytes(t, data, 6)
	_, cps := indexAll(t, Gzip, blob, 64<<10)
	for _, f := range []func(p *Checkpoint){
		func(p *Checkpoint) { p.Bits = 9 },
		func(p *Checkpoint) { p.In = -1 },
		func(p *Checkpoint) { p.In = 1 << 40 },
		func(p *Checkpoint) { p.In++ },
		func(p *Checkpoint) { p.Window = nil },
		func(p *Checkpoint) { p.Window = make([]byte, 100000) },
		func(p *Checkpoint) { p.Kind = CheckpointZstdFrame },
		func(p *Checkpoint) { p.DeflateIn = p.In + 1 },
	} {
		for i := range cps.Points {
			bad := *cps
			bad.Points = append([]Checkpoint(nil), cps.Points...)
			f(&bad.Points[i])
			b, err := bad.DecodeSpan(bytes.NewReader(blob), i, nil)
			if err == nil {
				s, e := cps.Span(i)
				if !bytes.Equal(b, data[s:e]) && bad.Points[i].Kind == CheckpointGzipMember {
					t.Fatalf("span %d: wrong bytes from a member start", i)
				}
			}
		}
	}
	if _, err := cps.DecodeSpan(bytes.NewReader(blob), len(cps.Points), nil); err == nil {
		t.Fatal("span out of range decoded")
	}
}

// BenchmarkIndexGzip compares the indexing pass with a plain klauspost gzip
// decode of the same blob: one member (docker, containerd) and 4 KiB
// members (eStargz-like, per-member overhead).
func BenchmarkIndexGzip(b *testing.B) {
	data := testData(10, 32<<20)
	var small []byte
	for _, c := range chunks(data[:8<<20], 4<<10) {
		small = append(small, kgzipBytes(b, c, 6)...)
	}
	for _, bc := range []struct {
		name       string
		blob, data []byte
	}{
		{"one-member", kgzipBytes(b, data, 6), data},
		{"4KiB-members", small, data[:8<<20]},
	} {
		b.Run(bc.name+"/index", func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				ir, _ := NewIndexingReader(Gzip, bytes.NewReader(bc.blob), 0)
				if _, err := io.Copy(io.Discard, ir); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/baseline-klauspost-gzip", func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				zr, _ := kgzip.NewReader(bytes.NewReader(bc.blob))
				if _, err := io.Copy(io.Discard, zr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeSpanGzip decodes default-size spans, mostly from mid-member
// deflate checkpoints, against decoding the whole blob with klauspost gzip.
func BenchmarkDecodeSpanGzip(b *testing.B) {
	data := testData(10, 32<<20)
	blob := kgzipBytes(b, data, 6)
	_, cps := indexAll(b, Gzip, blob, 0)
	b.Run("decode-span", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		var buf []byte
		for b.Loop() {
			for i := range cps.NumSpans() {
				var err error
				if buf, err = cps.DecodeSpan(bytes.NewReader(blob), i, buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("baseline-klauspost-gzip", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			zr, _ := kgzip.NewReader(bytes.NewReader(blob))
			if _, err := io.Copy(io.Discard, zr); err != nil {
				b.Fatal(err)
			}
		}
	})
}
