package layerindex

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/ocimount/ocimount/internal/tartest"
)

// Every regular entry of real tars passes; an entry pointed at another
// file's data (what a forged published index would do) fails.
func TestCheckHeader(t *testing.T) {
	long := strings.Repeat("d/", 80) + "long-name-file"
	tars := map[string][]byte{
		"built": tartest.Tar(t,
			tartest.File("etc/passwd", "root:x:0:0\n", 0o644),
			tartest.File("etc/hostname", "box\n", 0o644),
			tartest.File("etc/same", "abc\n", 0o644),
			tartest.File(long, "deep", 0o644),
			tartest.FileBytes("big", bytes.Repeat([]byte("x"), 100000), 0o644),
		),
	}
	for _, f := range []string{"basic.tar", "gnu-long.tar"} {
		b, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		tars[f] = b
	}
	for name, tb := range tars {
		ix, err := Build(context.Background(), bytes.NewReader(tb), None, Options{})
		if err != nil {
			t.Fatal(err)
		}
		stream := bytes.NewReader(tb)
		var regs []*Entry
		for i := range ix.Entries {
			e := &ix.Entries[i]
			if e.Kind != KindReg || e.Sparse {
				continue
			}
			regs = append(regs, e)
			if err := CheckHeader(stream, e, path.Base(e.Name)); err != nil {
				t.Errorf("%s: %s: %v", name, e.Name, err)
			}
		}
		if name != "built" {
			continue
		}
		// hostname's name with passwd's data, and same-size swaps.
		var pw, hn, same *Entry
		for _, e := range regs {
			switch e.Name {
			case "etc/passwd":
				pw = e
			case "etc/hostname":
				hn = e
			case "etc/same":
				same = e
			}
		}
		forged := *hn
		forged.Offset, forged.Size = pw.Offset, pw.Size
		if err := CheckHeader(stream, &forged, "hostname"); !errors.Is(err, ErrHeaderMismatch) {
			t.Errorf("forged offset and size: %v", err)
		}
		forged = *same
		forged.Offset = hn.Offset // both 4 bytes: only the name tells
		if err := CheckHeader(stream, &forged, "same"); !errors.Is(err, ErrHeaderMismatch) {
			t.Errorf("same-size swap: %v", err)
		}
		forged = *pw
		forged.Offset += 512
		if err := CheckHeader(stream, &forged, "passwd"); !errors.Is(err, ErrHeaderMismatch) {
			t.Errorf("shifted offset: %v", err)
		}
	}
}

func FuzzCheckHeader(f *testing.F) {
	tb := tartest.Tar(f, tartest.File("etc/passwd", "root:x:0:0\n", 0o644))
	f.Add(tb, int64(512), int64(11), "passwd")
	f.Fuzz(func(t *testing.T, stream []byte, off, size int64, name string) {
		e := &Entry{Kind: KindReg, Offset: off, Size: size}
		if off < 0 || size < 0 {
			return
		}
		err := CheckHeader(bytes.NewReader(stream), e, name)
		if err == nil && off >= 512 && off <= int64(len(stream)) {
			// Accepted: there must be a checksummed header there.
			h := stream[off-512 : off]
			if !bytes.ContainsAny(h[148:156], "01234567") {
				t.Fatalf("accepted a header without a checksum")
			}
		}
	})
}
