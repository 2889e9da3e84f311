package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Node is what the comparator knows about one path, read with lstat and
// friends (never following symlinks).
type Node struct {
	Path     string
	Type     uint32 // st_mode & S_IFMT
	Perm     uint32 // st_mode & 07777, incl. setuid/setgid/sticky
	UID, GID uint32
	Size     int64
	SHA256   string // regular files only
	Link     string // symlink target
	Rdev     uint64 // char and block devices
	Xattrs   map[string]string
	Nlink    uint64
	Dev, Ino uint64
	Mtime    unix.Timespec
	Subdirs  int      // directories: number of subdirectories
	Errs     []string // errors met while reading this path
}

// Tree is a snapshot of a directory tree keyed by relative path ("." is the
// root).
type Tree struct {
	Root  string
	Nodes map[string]*Node
	Paths []string // sorted
	// groups maps each non-directory path to the sorted paths sharing its
	// inode (itself included).
	groups map[string][]string
}

// Snapshot walks root. Per-path read errors are recorded in the node (so a
// comparison shows them next to their path); only an unusable root fails.
func Snapshot(root string) (*Tree, error) {
	t := &Tree{Root: root, Nodes: map[string]*Node{}}
	if _, err := os.Lstat(root); err != nil {
		return nil, err
	}
	var files []*Node
	var walk func(rel string)
	walk = func(rel string) {
		abs := filepath.Join(root, rel)
		n := &Node{Path: rel}
		t.Nodes[rel] = n
		var st unix.Stat_t
		if err := unix.Lstat(abs, &st); err != nil {
			n.Errs = append(n.Errs, "lstat: "+err.Error())
			return
		}
		n.Type, n.Perm = st.Mode&unix.S_IFMT, st.Mode&0o7777
		n.UID, n.GID = st.Uid, st.Gid
		n.Size, n.Nlink = st.Size, uint64(st.Nlink)
		n.Dev, n.Ino = st.Dev, st.Ino
		n.Mtime = st.Mtim
		n.Xattrs = readXattrs(abs, n)
		switch n.Type {
		case unix.S_IFREG:
			files = append(files, n)
		case unix.S_IFLNK:
			l, err := os.Readlink(abs)
			if err != nil {
				n.Errs = append(n.Errs, "readlink: "+err.Error())
			}
			n.Link = l
		case unix.S_IFCHR, unix.S_IFBLK:
			n.Rdev = st.Rdev
		case unix.S_IFDIR:
			ents, err := readDirents(abs)
			if err != nil {
				n.Errs = append(n.Errs, "readdir: "+err.Error())
			}
			sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
			for _, e := range ents {
				child := filepath.Join(rel, e.name)
				walk(child)
				c := t.Nodes[child]
				if c == nil || c.Type == 0 {
					continue
				}
				if c.Type == unix.S_IFDIR {
					n.Subdirs++
				}
				// readdir must agree with lstat: find and du trust d_type
				// (to skip the stat) and d_ino (ls -i, find -inum).
				if e.ino != c.Ino {
					c.Errs = append(c.Errs, fmt.Sprintf("readdir d_ino %d but lstat st_ino %d", e.ino, c.Ino))
				}
				if e.typ != unix.DT_UNKNOWN && uint32(e.typ)<<12 != c.Type {
					c.Errs = append(c.Errs, fmt.Sprintf("readdir d_type %d but lstat says %s", e.typ, typeName(c.Type)))
				}
			}
		}
	}
	walk(".")
	hashAll(root, files)

	byIno := map[[2]uint64][]string{}
	for p, n := range t.Nodes {
		t.Paths = append(t.Paths, p)
		if n.Type != unix.S_IFDIR && n.Type != 0 {
			k := [2]uint64{n.Dev, n.Ino}
			byIno[k] = append(byIno[k], p)
		}
	}
	sort.Strings(t.Paths)
	t.groups = map[string][]string{}
	for _, g := range byIno {
		sort.Strings(g)
		for _, p := range g {
			t.groups[p] = g
		}
	}
	return t, nil
}

type dirent struct {
	name string
	ino  uint64
	typ  uint8
}

// readDirents lists a directory with getdents64, keeping d_ino and d_type
// (os.ReadDir hides d_ino).
func readDirents(dir string) ([]dirent, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{name: s, ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18]})
			}
			b = b[reclen:]
		}
	}
}

// hashAll streams every regular file through sha256, a few at a time since
// FUSE reads are latency-bound.
func hashAll(root string, files []*Node) {
	ch := make(chan *Node)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range ch {
				sum, err := hashFile(filepath.Join(root, n.Path))
				if err != nil {
					n.Errs = append(n.Errs, err.Error())
				}
				n.SHA256 = sum
			}
		}()
	}
	for _, n := range files {
		ch <- n
	}
	close(ch)
	wg.Wait()
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readXattrs(p string, n *Node) map[string]string {
	buf := make([]byte, 64*1024)
	sz, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENODATA) {
		return nil // no xattrs on this file system: compared as an empty set
	}
	if err != nil {
		n.Errs = append(n.Errs, "listxattr: "+err.Error())
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		vb := make([]byte, 64*1024)
		vsz, err := unix.Lgetxattr(p, name, vb)
		if err != nil {
			n.Errs = append(n.Errs, fmt.Sprintf("getxattr %s: %v", name, err))
			continue
		}
		out[name] = string(vb[:vsz])
	}
	return out
}

// Exception says whether a difference in field at path is legitimate. Each
// exception must be narrow and say why.
type Exception func(path, field string, want, got *Node) bool

// Compare lists the differences between the reference tree want and the
// tree under test got, sorted by path.
func Compare(want, got *Tree, exceptions ...Exception) []string {
	var diffs []string
	add := func(p, field string, w, g *Node, format string, args ...any) {
		for _, e := range exceptions {
			if e(p, field, w, g) {
				return
			}
		}
		diffs = append(diffs, fmt.Sprintf("%s: %s: %s", p, field, fmt.Sprintf(format, args...)))
	}
	for _, p := range got.Paths {
		if _, ok := want.Nodes[p]; !ok {
			add(p, "exists", nil, got.Nodes[p], "unexpected path (%s)", typeName(got.Nodes[p].Type))
		}
	}
	seenGroup := map[string]bool{}
	for _, p := range want.Paths {
		w, g := want.Nodes[p], got.Nodes[p]
		if g == nil {
			add(p, "exists", w, nil, "missing (%s)", typeName(w.Type))
			continue
		}
		for _, e := range g.Errs {
			add(p, "error", w, g, "%s", e)
		}
		for _, e := range w.Errs {
			add(p, "error", w, g, "in reference: %s", e)
		}
		if w.Type != g.Type {
			add(p, "type", w, g, "want %s, got %s", typeName(w.Type), typeName(g.Type))
			continue
		}
		if w.Perm != g.Perm {
			add(p, "mode", w, g, "want %#o, got %#o", w.Perm, g.Perm)
		}
		if w.UID != g.UID || w.GID != g.GID {
			add(p, "owner", w, g, "want %d:%d, got %d:%d", w.UID, w.GID, g.UID, g.GID)
		}
		if w.Mtime != g.Mtime {
			add(p, "mtime", w, g, "want %s, got %s", fmtTime(w.Mtime), fmtTime(g.Mtime))
		}
		if !equalXattrs(w.Xattrs, g.Xattrs) {
			add(p, "xattrs", w, g, "want %s, got %s", fmtXattrs(w.Xattrs), fmtXattrs(g.Xattrs))
		}
		switch w.Type {
		case unix.S_IFREG:
			if w.Size != g.Size {
				add(p, "size", w, g, "want %d, got %d", w.Size, g.Size)
			}
			if w.SHA256 != g.SHA256 {
				add(p, "content", w, g, "want sha256 %.12s, got %.12s", w.SHA256, g.SHA256)
			}
		case unix.S_IFLNK:
			if w.Link != g.Link {
				add(p, "target", w, g, "want %q, got %q", w.Link, g.Link)
			}
			if w.Size != g.Size {
				add(p, "size", w, g, "want %d, got %d", w.Size, g.Size)
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			if w.Rdev != g.Rdev {
				add(p, "rdev", w, g, "want %d,%d, got %d,%d", unix.Major(w.Rdev), unix.Minor(w.Rdev), unix.Major(g.Rdev), unix.Minor(g.Rdev))
			}
		}
		if w.Type == unix.S_IFDIR {
			// Directory link counts are not image content, but when a file
			// system reports more than 1 it must be 2+subdirs: tools like
			// find's leaf optimisation rely on it.
			if g.Nlink != 1 && g.Nlink != uint64(2+g.Subdirs) {
				add(p, "nlink", w, g, "directory with %d subdirectories has nlink %d (want %d or 1)", g.Subdirs, g.Nlink, 2+g.Subdirs)
			}
			continue
		}
		wg, gg := want.groups[p], got.groups[p]
		key := strings.Join(wg, "\x00")
		if !seenGroup[key] && strings.Join(wg, "\x00") != strings.Join(gg, "\x00") {
			seenGroup[key] = true
			add(p, "hardlinks", w, g, "want paths sharing the inode %q, got %q", wg, gg)
		}
		if g.Nlink != uint64(len(gg)) {
			add(p, "nlink", w, g, "st_nlink %d but %d paths share the inode", g.Nlink, len(gg))
		}
		if w.Nlink != uint64(len(wg)) {
			add(p, "nlink", w, g, "in reference: st_nlink %d but %d paths share the inode", w.Nlink, len(wg))
		}
	}
	return diffs
}

// requireSameTree fails t with the first differences, if any.
func requireSameTree(t *testing.T, want, got *Tree, exceptions ...Exception) {
	t.Helper()
	diffs := Compare(want, got, exceptions...)
	if len(diffs) == 0 {
		return
	}
	const max = 40
	shown := diffs
	if len(shown) > max {
		shown = shown[:max]
	}
	t.Errorf("%s differs from reference %s in %d ways (first %d):\n  %s",
		got.Root, want.Root, len(diffs), len(shown), strings.Join(shown, "\n  "))
}

func typeName(m uint32) string {
	switch m {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case 0:
		return "unreadable"
	}
	return fmt.Sprintf("type %#o", m)
}

func fmtTime(ts unix.Timespec) string { return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec) }

func equalXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func fmtXattrs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// TestComparator checks that the comparator notices each kind of
// difference; a comparator that never fails would make every mount test
// pass.
func TestComparator(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown, mknod and trusted xattrs")
	}
	build := func(dir string) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.MkdirAll(filepath.Join(dir, "d/sub"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "d/f"), []byte("content"), 0o644))
		must(os.Link(filepath.Join(dir, "d/f"), filepath.Join(dir, "d/g")))
		must(os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o4755))
		must(unix.Chmod(filepath.Join(dir, "x"), 0o4755)) // os.Chmod drops raw 04000
		must(os.Symlink("target", filepath.Join(dir, "l")))
		must(unix.Mknod(filepath.Join(dir, "c"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		must(unix.Lsetxattr(filepath.Join(dir, "x"), "user.v", []byte("\x00\x01"), 0))
		// Fixed times everywhere so that two builds are identical.
		must(filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			ts := []unix.Timespec{{Sec: 2}, {Sec: 2}}
			if filepath.Base(p) == "x" {
				ts = []unix.Timespec{{Sec: 1, Nsec: 5}, {Sec: 1, Nsec: 5}}
			}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}))
	}
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	build(a)
	build(b)
	snap := func(d string) *Tree {
		s, err := Snapshot(d)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ta := snap(a)
	if d := Compare(ta, snap(b)); len(d) != 0 {
		t.Fatalf("identical trees differ: %q", d)
	}
	mutations := []struct {
		field  string
		mutate func(dir string) error
	}{
		{"content", func(d string) error { return os.WriteFile(filepath.Join(d, "d/f"), []byte("Content"), 0o644) }},
		{"mode", func(d string) error { return os.Chmod(filepath.Join(d, "x"), 0o755) }},
		{"owner", func(d string) error { return os.Lchown(filepath.Join(d, "l"), 1, 1) }},
		{"mtime", func(d string) error {
			ts := []unix.Timespec{{Sec: 1, Nsec: 6}, {Sec: 1, Nsec: 6}}
			return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(d, "x"), ts, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"xattrs", func(d string) error { return unix.Lsetxattr(filepath.Join(d, "x"), "user.v", []byte("\x00\x02"), 0) }},
		{"target", func(d string) error {
			os.Remove(filepath.Join(d, "l"))
			return os.Symlink("targe7", filepath.Join(d, "l"))
		}},
		{"hardlinks", func(d string) error {
			os.Remove(filepath.Join(d, "d/g"))
			return os.WriteFile(filepath.Join(d, "d/g"), []byte("content"), 0o644)
		}},
		{"rdev", func(d string) error {
			os.Remove(filepath.Join(d, "c"))
			return unix.Mknod(filepath.Join(d, "c"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5)))
		}},
		{"exists", func(d string) error { return os.Remove(filepath.Join(d, "d/sub")) }},
		{"type", func(d string) error {
			os.Remove(filepath.Join(d, "c"))
			return os.WriteFile(filepath.Join(d, "c"), nil, 0o600)
		}},
	}
	for _, m := range mutations {
		t.Run(m.field, func(t *testing.T) {
			c := filepath.Join(t.TempDir(), "c")
			build(c)
			if err := m.mutate(c); err != nil {
				t.Fatal(err)
			}
			diffs := Compare(ta, snap(c))
			found := false
			for _, d := range diffs {
				if strings.Contains(d, ": "+m.field+": ") {
					found = true
				}
			}
			if !found {
				t.Errorf("mutation %s not reported; diffs: %q", m.field, diffs)
			}
		})
	}
}
