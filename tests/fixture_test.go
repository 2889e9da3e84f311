package tests

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFixture checks that the reference extraction really holds the cases
// the mount tests are meant to cover. Without it, a change in the build
// script, umoci or the host (say a missing /usr/share/perl) could quietly
// shrink every comparison to a trivial one.
func TestFixture(t *testing.T) {
	f := images(t)
	ref := refTree(t)
	node := func(p string) *Node {
		t.Helper()
		n := ref.Nodes[p]
		if n == nil {
			t.Errorf("reference lacks %s", p)
			return &Node{}
		}
		return n
	}
	var files, links, dirs int
	for _, n := range ref.Nodes {
		switch n.Type {
		case unix.S_IFREG:
			files++
		case unix.S_IFLNK:
			links++
		case unix.S_IFDIR:
			dirs++
		}
	}
	if files < 2000 || links < 250 || dirs < 100 {
		t.Errorf("reference too small: %d files, %d symlinks, %d dirs", files, links, dirs)
	}
	// Whiteouts, opaque directory, type changes.
	for _, gone := range []string{"data/todelete", "data/random.bin", "bin/ls", "data/opq/old1", "data/opq/old2", "usr/share/zoneinfo/Europe/Paris", "data/dir2file/a"} {
		if ref.Nodes[gone] != nil {
			t.Errorf("reference still has %s", gone)
		}
	}
	if node("data/dir2file").Type != unix.S_IFREG || node("data/file2dir").Type != unix.S_IFDIR || node("data/opq/new").Type != unix.S_IFREG {
		t.Error("type changes or opaque dir not in reference")
	}
	// Hard links, including across layers.
	groups := map[string]int{"special/hl1": 3, "special/hl_to_lower": 2, "data/hl_to_lower_gnutar": 2}
	for p, n := range groups {
		if g := ref.groups[p]; len(g) != n {
			t.Errorf("%s shares its inode with %q, want %d paths", p, g, n)
		}
	}
	if g := ref.groups["data/hl_to_lower_gnutar"]; len(g) != 2 || g[1] != "data/lowerfile" {
		t.Errorf("GNU tar link to a lower-layer file not in reference: %q", g)
	}
	// Metadata.
	if c := node("special/ping").Xattrs["security.capability"]; len(c) < 20 {
		t.Errorf("security.capability missing: %q", c)
	}
	if v := node("special/xattrs").Xattrs["user.binary"]; v != "\x00\xff\x7f\x80\x01\x02\x03" {
		t.Errorf("binary user xattr = %q", v)
	}
	if n := node("special/allbits"); n.Perm != 0o7777 {
		t.Errorf("allbits mode %#o", n.Perm)
	}
	if n := node("special/dir000"); n.Perm != 0 || n.Type != unix.S_IFDIR {
		t.Errorf("dir000 mode %#o", n.Perm)
	}
	if n := node("special/owned-4294967294"); n.UID != 4294967294 || n.GID != 4294967294 {
		t.Errorf("owned-4294967294 owner %d:%d", n.UID, n.GID)
	}
	if n := node("data/nanos"); n.Mtime.Nsec != 123456789 {
		t.Errorf("nanosecond mtime lost: %s", fmtTime(n.Mtime))
	}
	if n := node("data/pre1970"); n.Mtime.Sec != -1 {
		t.Errorf("pre-1970 mtime: %s", fmtTime(n.Mtime))
	}
	if n := node("data/y2100"); n.Mtime.Sec != 4102444800 {
		t.Errorf("2100 mtime: %s", fmtTime(n.Mtime))
	}
	if n := node("special/null"); n.Type != unix.S_IFCHR || n.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("char device: %+v", n)
	}
	if n := node("special/loop7"); n.Type != unix.S_IFBLK {
		t.Errorf("block device: %+v", n)
	}
	if n := node("special/fifo"); n.Type != unix.S_IFIFO {
		t.Errorf("fifo: %+v", n)
	}
	if n := node("special/longlink"); len(n.Link) < 500 {
		t.Errorf("long symlink target only %d bytes", len(n.Link))
	}
	if n := node(f.Facts["deep"]); len(f.Facts["deep"]) <= 255 || n.Type != unix.S_IFREG {
		t.Errorf("no path over 255 bytes")
	}
	if name := f.Facts["n255"]; len(name[strings.LastIndexByte(name, '/')+1:]) != 255 {
		t.Errorf("255-byte name is %d bytes", len(name))
	}
	node(f.Facts["n255"])
	node("special/ünïcödé-日本語-🙂")
	if n := node("data/seq.txt"); n.Size < 8<<20 {
		t.Errorf("seq.txt only %d bytes: too small for several 4 MiB spans", n.Size)
	}
}
