package overlay_test

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocimount/ocimount/internal/tartest"
)

// Fuzz input is a compact op list, 3 bytes an op: kind, name, target.
// Names and targets come from small alphabets full of the awkward cases
// (".." components, whiteout prefixes, absolute paths, symlink targets
// that climb or loop), so that short inputs reach deep into Merge.
var (
	fuzzNames = []string{
		"a", "b", "c", "a/b", "a/c", "b/a", "a/b/c", "c/a",
		".wh.a", "a/.wh.b", ".wh.b", "b/.wh.a", ".wh..wh..opq", "a/.wh..wh..opq",
		".wh..wh.plnk", ".wh..wh.plnk/x", ".wh.", ".wh..", ".wh.a/b",
		"..", "a/..", "a/../b", "../a", "/a", "/a/b", ".", "./", "a//b/", "",
	}
	fuzzTargets = []string{
		"a", "b", "c", "a/b", "/a", "/a/b", "..", "../a", "../../b", ".", "",
		"a/..", "b/../a", "/", "c/a", "a/b/c", "x",
	}
)

const (
	opFile = iota
	opDir
	opSymlink
	opHardlink
	opWhiteout
	opOpaque
	opLayer
	opSpecial
	numOps
)

// fuzzLayers decodes data into 1-3 tar layers. Headers are written with
// archive/tar directly (names are not cleaned); an entry archive/tar
// refuses is skipped.
func fuzzLayers(data []byte) [][]byte {
	var layers [][]byte
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	flush := func() {
		tw.Close()
		layers = append(layers, append([]byte(nil), buf.Bytes()...))
		buf.Reset()
		tw = tar.NewWriter(&buf)
	}
	for i := 0; i+2 < len(data) && i < 3*48; i += 3 {
		op, n, tg := int(data[i])%numOps, int(data[i+1]), int(data[i+2])
		name := fuzzNames[n%len(fuzzNames)]
		hdr := &tar.Header{Name: name, Mode: 0o644, ModTime: tartest.DefaultMTime}
		if n >= 128 {
			hdr.Mode = 0o4755
			hdr.Uid, hdr.Gid = 1000, 1000
		}
		var body []byte
		switch op {
		case opFile:
			hdr.Typeflag = tar.TypeReg
			body = bytes.Repeat([]byte{'a' + byte(tg%26)}, tg%7)
		case opDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Mode = 0o755
		case opSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = fuzzTargets[tg%len(fuzzTargets)]
		case opHardlink:
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = fuzzNames[tg%len(fuzzNames)]
		case opWhiteout, opOpaque:
			hdr.Typeflag = tar.TypeReg
			dir := strings.TrimSuffix(name, "/")
			if op == opOpaque {
				hdr.Name = dir + "/.wh..wh..opq"
			} else {
				j := strings.LastIndexByte(dir, '/')
				hdr.Name = dir[:j+1] + ".wh." + dir[j+1:]
			}
		case opLayer:
			if len(layers) < 2 {
				flush()
			}
			continue
		case opSpecial:
			hdr.Typeflag = []byte{tar.TypeFifo, tar.TypeChar, tar.TypeBlock}[tg%3]
			hdr.Devmajor, hdr.Devminor = int64(tg%4), int64(tg%5)
		}
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			continue
		}
		tw.Write(body)
	}
	flush()
	return layers
}

func op(kind int, name, target string) []byte {
	idx := func(list []string, s string) byte {
		for i, x := range list {
			if x == s {
				return byte(i)
			}
		}
		panic("fuzz seed: unknown name " + s)
	}
	tl := fuzzNames
	if kind == opSymlink {
		tl = fuzzTargets
	}
	t := byte(0)
	if target != "" || kind == opSymlink {
		t = idx(tl, target)
	}
	return []byte{byte(kind), idx(fuzzNames, name), t}
}

func seq(ops ...[]byte) []byte { return bytes.Join(ops, nil) }

// FuzzMerge: Build+Merge never panic, and every tree Merge returns keeps
// the Tree invariants (checkInvariants: no .wh. name visible, children
// sorted and unique, Nlink = names sharing Ino, fstest.TestFS passes...)
// and is deterministic.
func FuzzMerge(f *testing.F) {
	nl := []byte{opLayer, 0, 0}
	f.Add(seq(op(opDir, "a", ""), op(opFile, "a/b", "a"), op(opHardlink, "c", "a/b"), nl, op(opWhiteout, "a", ""), op(opFile, "a/c", "")))
	f.Add(seq(op(opDir, "a", ""), op(opFile, "a/b", ""), nl, op(opOpaque, "a", ""), op(opFile, "a/c", ""), nl, op(opSymlink, "b", "a")))
	f.Add(seq(op(opSymlink, "a", "../../b"), op(opFile, "a/b", ""), nl, op(opWhiteout, "a/b", ""), op(opSymlink, "c", "c")))
	f.Add(seq(op(opFile, "a", ""), op(opHardlink, "b", "a"), nl, op(opFile, "b", ""), op(opSpecial, "c", "a"), op(opHardlink, "a/b", "c")))
	f.Add(seq(op(opFile, ".wh.", ""), op(opFile, ".wh..wh.plnk/x", ""), op(opFile, ".wh.a/b", "")))
	f.Add(seq(op(opSymlink, "a", "/"), op(opFile, "a/b", ""), op(opDir, "./", ""), nl, op(opOpaque, "", ""), op(opFile, "c", "")))
	f.Add(seq(op(opFile, "a", ""), nl, op(opDir, "a", ""), op(opOpaque, "a", ""), op(opFile, "a/b", "")))
	f.Add(seq(op(opSymlink, "a", "b"), op(opSymlink, "b", "a"), op(opFile, "a/c", "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		layers := fuzzLayers(data)
		tr, err := mergeTars(t, layers...)
		if err != nil {
			return
		}
		checkInvariants(t, tr)
		tr2, err := mergeTars(t, layers...)
		if err != nil {
			t.Fatalf("second merge failed: %v", err)
		}
		if diff := cmp.Diff(dump(t, tr, true), dump(t, tr2, true)); diff != "" {
			t.Errorf("Merge is not deterministic:\n%s", diff)
		}
	})
}
