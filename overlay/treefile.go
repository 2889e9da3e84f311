package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"syscall"
	"unsafe"

	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/layerindex"
)

// Serialized merged tree ("tree cache"), version 4:
//
//	"OCIMTREE" | u32 version | u32 byte-order mark | u32 merge rules
//	version | layers | pad8 |
//	u64 n | string blob | pad8 | u64 n | nodes | pad8 | u64 n | inodes |
//	pad8 | u64 n | xattrs | pad8 | u64 n | sparse fragments | crc32c
//
// Each array section is the Tree's in-memory array byte for byte (host
// byte order, recorded by the mark; a file from a machine of the other
// order is simply rebuilt), 8-byte aligned. A warm mount maps the file and
// uses the sections in place: no decoding, no copies, no allocation per
// entry, and the pages are file-backed — shared between mounts of one
// image and reclaimable by the kernel — instead of anonymous heap. This is
// what makes a 200,000-file image ready in tens of milliseconds on a
// machine where every fresh page of heap costs a fault. The checksum is
// CRC-32C: the file is a private cache, so it guards against torn writes
// and bit rot, not forgery; every index in it is still range-checked.
const (
	treeMagic   = "OCIMTREE"
	treeVersion = 4 // 4: the merge rules version joined the header
	bomValue    = 0x01020304
)

// MergeRulesVersion names the union rules a tree was merged by (Merge,
// MergeRaw: what becomes of whiteouts, opaque markers, ".wh." names,
// hardlinks, symlinked parents...). It is written in every tree file and a
// tree of another version is rejected (ErrBadTree) and rebuilt, since
// trees are cached by manifest digest: a rules change without a bump would
// leave warm mounts serving trees made by the old rules. Bump it with any
// change of what the merge makes of some input, and record the new corpus
// digest in rules_test.go (TestMergeRulesVersion fails until then). The
// tree file's own layout has treeVersion; the layer index format has
// layerindex.FormatVersion.
//
//	1: the rules up to the merge-rules version itself
//	2: entries below a ".wh.X" directory are shown under an implied
//	   ".wh.X" (only AUFS .wh..wh.* directories hide what is below them)
//	3: a layer's Hide names (a TOC format's bookkeeping entries, such as
//	   eStargz's stargz.index.json) are not shown
const MergeRulesVersion = 3

// ErrBadTree: a serialized tree is damaged, of another version, or does
// not belong to the layers it is loaded with. Callers rebuild it.
var ErrBadTree = errors.New("bad tree file")

// LayerID identifies a layer a serialized tree was merged from.
type LayerID struct {
	Digest           digest.Digest
	DiffID           digest.Digest
	UncompressedSize int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary serializes the tree; ids name its layers, in order.
func (t *Tree) MarshalBinary(ids []LayerID) ([]byte, error) {
	if len(ids) != len(t.layers) {
		return nil, fmt.Errorf("tree has %d layers, %d ids given", len(t.layers), len(ids))
	}
	le := binary.LittleEndian
	var b []byte
	b = append(b, treeMagic...)
	b = le.AppendUint32(b, treeVersion)
	b = binary.NativeEndian.AppendUint32(b, bomValue)
	b = le.AppendUint32(b, MergeRulesVersion)
	b = le.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		for _, s := range []string{string(id.Digest), string(id.DiffID)} {
			b = le.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
		b = le.AppendUint64(b, uint64(id.UncompressedSize))
	}
	section := func(n int, raw []byte) {
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		b = le.AppendUint64(b, uint64(n))
		b = append(b, raw...)
	}
	section(len(t.strs), []byte(t.strs))
	section(len(t.nodes)-1, rawBytes(t.nodes[1:]))
	section(len(t.inodes), rawBytes(t.inodes))
	section(len(t.xattrs), rawBytes(t.xattrs))
	section(len(t.frags), rawBytes(t.frags))
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// rawBytes views a slice of pointer-free structs as bytes.
func rawBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))
}

// viewAs views aligned bytes as a slice of n pointer-free structs.
func viewAs[T any](b []byte, n int) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

// LoadTreeFile maps a tree file written by MarshalBinary and checks it
// against the layers it is used with (ids; layers supplies their content,
// Index may be nil). The mapping lives as long as the process: a mount
// serves from it until it exits.
func LoadTreeFile(path string, ids []LayerID, layers []Layer) (*Tree, error) {
	// Not through a symlink: the tree cache's files are ours, made by
	// rename; one planted there must not be mapped.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0) // NONBLOCK: nor may a FIFO hang the open
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return MapTreeFile(f, path, ids, layers)
}

// MapTreeFile is LoadTreeFile for a file already open (one with no name,
// say); path names it in errors. f may be closed afterwards.
func MapTreeFile(f *os.File, path string, ids []LayerID, layers []Layer) (*Tree, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() < 32 || fi.Size() > 1<<40 {
		return nil, fmt.Errorf("%w: %s: not a regular file of a plausible size", ErrBadTree, path)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	t, err := UnmarshalTree(m, ids, layers)
	if err != nil {
		syscall.Munmap(m)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.mapped = true
	return t, nil
}

// UnmarshalTree uses a tree written by MarshalBinary in place: the result
// refers to data, which must stay unchanged while the tree is used.
func UnmarshalTree(data []byte, ids []LayerID, layers []Layer) (*Tree, error) {
	if len(data) < len(treeMagic)+8 || string(data[:len(treeMagic)]) != treeMagic {
		return nil, fmt.Errorf("%w: not a tree file", ErrBadTree)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch (torn or corrupt file)", ErrBadTree)
	}
	return parseTree(body, ids, layers)
}

// parseTree takes body = the file without its checksum, starting with the
// magic (so that section offsets keep the file's 8-byte alignment).
func parseTree(body []byte, ids []LayerID, layers []Layer) (*Tree, error) {
	r := &treeReader{b: body}
	if err := r.header(ids, layers); err != nil {
		return nil, err
	}
	strB, _, ok1 := r.section(1)
	nodeB, nn, ok2 := r.section(unsafe.Sizeof(node{}))
	inodeB, ni, ok3 := r.section(unsafe.Sizeof(inode{}))
	xB, nx, ok4 := r.section(unsafe.Sizeof(xattrRef{}))
	fB, nf, ok5 := r.section(unsafe.Sizeof(layerindex.Fragment{}))
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return nil, badTree("truncated")
	}
	if r.pos != len(body) {
		return nil, badTree("trailing bytes")
	}
	if nn < 1 || ni < 1 {
		return nil, badTree("empty tree")
	}
	// Sections must be aligned for in-place use; a heap copy is made if
	// the caller's buffer is not (tests, fuzzing).
	for _, sec := range [][]byte{nodeB, inodeB, xB, fB} {
		if len(sec) > 0 && uintptr(unsafe.Pointer(&sec[0]))%8 != 0 {
			return parseTree(append(make([]byte, 0, len(body)+8), body...), ids, layers)
		}
	}
	t := &Tree{layers: layers}
	if len(strB) > 0 {
		t.strs = unsafe.String(&strB[0], len(strB))
	}
	t.xattrs = viewAs[xattrRef](xB, nx)
	t.frags = viewAs[layerindex.Fragment](fB, nf)
	t.inodes = viewAs[inode](inodeB, ni)
	// nodes[0] is unused: the section holds nodes 1..nn, so view one
	// record earlier is not possible; keep a small header slot instead.
	nodes := viewAs[node](nodeB, nn)
	t.nodes = unsafe.Slice((*node)(unsafe.Add(unsafe.Pointer(&nodes[0]), -int(unsafe.Sizeof(node{})))), nn+1)
	if err := t.checkRanges(len(layers)); err != nil {
		return nil, err
	}
	return t, nil
}

func badTree(what string) error { return fmt.Errorf("%w: %s", ErrBadTree, what) }

// treeReader reads a tree file's header and sections.
type treeReader struct {
	b   []byte
	pos int
}

func (r *treeReader) u32() (uint32, bool) {
	if r.pos+4 > len(r.b) {
		return 0, false
	}
	v := binary.LittleEndian.Uint32(r.b[r.pos:])
	r.pos += 4
	return v, true
}

func (r *treeReader) take(n uint64) ([]byte, bool) {
	if r.pos > len(r.b) || n > uint64(len(r.b)-r.pos) {
		return nil, false
	}
	p := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return p, true
}

// section reads an 8-aligned array of records of size bytes.
func (r *treeReader) section(size uintptr) ([]byte, int, bool) {
	r.pos = (r.pos + 7) &^ 7
	nb, ok := r.take(8)
	if !ok {
		return nil, 0, false
	}
	n := binary.LittleEndian.Uint64(nb)
	if n > uint64(len(r.b))/uint64(size) {
		return nil, 0, false
	}
	p, ok := r.take(n * uint64(size))
	return p, int(n), ok
}

// header checks magic, versions and byte order, and that the tree was
// made from exactly these layers.
func (r *treeReader) header(ids []LayerID, layers []Layer) error {
	le, body := binary.LittleEndian, r.b
	if len(body) < len(treeMagic)+16 {
		return badTree("truncated")
	}
	if v := le.Uint32(body[len(treeMagic):]); v != treeVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadTree, v, treeVersion)
	}
	if binary.NativeEndian.Uint32(body[len(treeMagic)+4:]) != bomValue {
		return badTree("written with another byte order")
	}
	if v := le.Uint32(body[len(treeMagic)+8:]); v != MergeRulesVersion {
		return fmt.Errorf("%w: merged by rules version %d, want %d", ErrBadTree, v, MergeRulesVersion)
	}
	r.pos = len(treeMagic) + 12
	nl, ok := r.u32()
	if !ok || int(nl) != len(ids) || int(nl) != len(layers) {
		return badTree(fmt.Sprintf("made from %d layers, image has %d", nl, len(ids)))
	}
	for i := range int(nl) {
		var parts [2]string
		for j := range parts {
			n, ok := r.u32()
			p, ok2 := r.take(uint64(n))
			if !ok || !ok2 {
				return badTree("truncated layer list")
			}
			parts[j] = string(p)
		}
		us, ok := r.take(8)
		if !ok || parts[0] != string(ids[i].Digest) || parts[1] != string(ids[i].DiffID) || int64(le.Uint64(us)) != ids[i].UncompressedSize {
			return badTree(fmt.Sprintf("layer %d differs", i))
		}
	}
	return nil
}

// checkRanges range-checks every index in a mapped tree (string offsets,
// xattrs, sparse maps, layers, node links), so that serving from it can
// never index out of bounds, and that its structure is a tree: parents
// before children, each node among its parent's children, each inode
// number naming a node of that inode.
func (t *Tree) checkRanges(nl int) error {
	ns := uint64(len(t.strs))
	strOK := func(o, l uint32) bool { return uint64(o)+uint64(l) <= ns }
	nx, nf, ni, nn := len(t.xattrs), len(t.frags), len(t.inodes), len(t.nodes)-1
	for i, x := range t.xattrs {
		if !strOK(x.nameOff, x.nameLen) || !strOK(x.valOff, x.valLen) {
			return badTree(fmt.Sprintf("xattr %d out of range", i))
		}
	}
	for i := range t.inodes {
		in := &t.inodes[i]
		if sp, rn := *(*byte)(unsafe.Pointer(&in.sparse)), *(*byte)(unsafe.Pointer(&in.renamed)); sp > 1 || rn > 1 {
			return badTree(fmt.Sprintf("inode %d: bad flag", i))
		}
		if uint64(in.fragOff)+uint64(in.fragN) <= uint64(nf) {
			end := int64(0)
			for _, f := range t.frags[in.fragOff : in.fragOff+in.fragN] {
				if f.Off < end || f.Len < 0 || f.Off+f.Len < f.Off || f.Off+f.Len > in.size {
					return badTree(fmt.Sprintf("inode %d: bad sparse map", i))
				}
				end = f.Off + f.Len
			}
		}
		if uint64(in.xattrOff)+uint64(in.xattrN) > uint64(nx) || uint64(in.fragOff)+uint64(in.fragN) > uint64(nf) ||
			!strOK(in.linkOff, in.linkLen) || in.kind < layerindex.KindReg || in.kind > layerindex.KindFIFO ||
			in.layer < -1 || int(in.layer) >= nl || (in.kind == layerindex.KindReg && in.layer < 0) || in.size < 0 || in.offset < 0 {
			return badTree(fmt.Sprintf("inode %d out of range", i))
		}
	}
	for i := 1; i <= nn; i++ {
		n := &t.nodes[i]
		// Breadth-first layout: parents come before children, so parent
		// chains always end at the root (no cycles).
		if (i == 1 && n.parent != RootID) || (i > 1 && (n.parent < RootID || int(n.parent) >= i)) || !strOK(n.nameOff, n.nameLen) ||
			int(n.inode) >= ni || (n.count > 0 && (n.first <= NodeID(i) || uint64(n.first)+uint64(n.count) > uint64(nn+1))) {
			return badTree(fmt.Sprintf("node %d out of range", i))
		}
	}
	for i := 2; i <= nn; i++ {
		p := &t.nodes[t.nodes[i].parent]
		if NodeID(i) < p.first || uint64(i) >= uint64(p.first)+uint64(p.count) || t.inodes[p.inode].kind != layerindex.KindDir {
			return badTree(fmt.Sprintf("node %d is not among its parent's children", i))
		}
	}
	// An inode number is the NodeID of one of its names: FUSE uses it as
	// the kernel's node ID, so it must lead back to this very inode.
	for i := range t.inodes {
		ino := t.inodes[i].ino
		if ino < int64(RootID) || ino > int64(nn) || t.nodes[ino].inode != uint32(i) {
			return badTree(fmt.Sprintf("inode %d: inode number %d names another file", i, ino))
		}
	}
	if t.Kind(RootID) != layerindex.KindDir {
		return badTree("root is not a directory")
	}
	return nil
}
