package mountinfo

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sample: a root, a tmpfs on a path with a space, two ocimount FUSE mounts
// stacked on one mount point (the second on the first), a FUSE mount of
// another server, an overlay, a mount with an empty source and one with
// several optional fields.
const sample = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /tmp/a\040b rw,relatime shared:20 - tmpfs none rw,size=1024k
41 22 0:51 / /mnt/img ro,nosuid,nodev,relatime shared:21 - fuse.ocimount oci:/img:latest ro,user_id=0,group_id=0,default_permissions
42 41 0:52 / /mnt/img ro,relatime shared:22 - fuse.ocimount oci:/other\040image:1 ro,user_id=0,group_id=0,allow_other
43 22 0:53 / /mnt/sshfs rw,nosuid,nodev,relatime shared:23 - fuse.sshfs host:/x rw,user_id=0,group_id=0
44 22 0:54 / /b/rootfs rw,relatime shared:24 - overlay ocimount rw,lowerdir=/b/rootfs-ro,upperdir=/b/upper,workdir=/b/work
45 22 0:55 / /empty\011src rw,relatime - tmpfs  rw
46 22 0:56 /sub /bind rw,relatime shared:25 master:3 propagate_from:4 - ext4 /dev/sda2 rw
47 40 0:57 / /tmp/a\040b/inner rw - tmpfs none rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 9 {
		t.Fatalf("%d mounts, want 9", len(ms))
	}
	want := Mount{
		ID: 40, Parent: 22, Dev: "0:50", Root: "/", MountPoint: "/tmp/a b", Options: "rw,relatime",
		Optional: []string{"shared:20"}, FSType: "tmpfs", Source: "none", SuperOptions: "rw,size=1024k",
	}
	if !reflect.DeepEqual(ms[1], want) {
		t.Errorf("tmpfs line:\n got %+v\nwant %+v", ms[1], want)
	}
	if m := ms[3]; m.FSType != "fuse.ocimount" || m.Source != "oci:/other image:1" || !m.HasSuperOption("allow_other") || m.HasSuperOption("allow") {
		t.Errorf("second FUSE line: %+v", m)
	}
	if m := ms[2]; !m.HasOption("nosuid") || !m.HasOption("ro") || m.HasOption("rw") {
		t.Errorf("options of %+v", m)
	}
	if m := ms[4]; m.FSType != "fuse.sshfs" {
		t.Errorf("sshfs: %+v", m)
	}
	if v, ok := ms[5].SuperOption("lowerdir"); !ok || v != "/b/rootfs-ro" {
		t.Errorf("lowerdir = %q, %v", v, ok)
	}
	if m := ms[6]; m.MountPoint != "/empty\tsrc" || m.Source != "" || m.FSType != "tmpfs" || m.SuperOptions != "rw" || len(m.Optional) != 0 {
		t.Errorf("empty-source line: %+v", m)
	}
	if m := ms[7]; m.Root != "/sub" || !reflect.DeepEqual(m.Optional, []string{"shared:25", "master:3", "propagate_from:4"}) || m.FSType != "ext4" {
		t.Errorf("bind line: %+v", m)
	}
	for _, bad := range []string{"", "x 1 0:1 / / rw - a b c", "1 2 0:1 / / rw a b c", "1 2 0:1 / / rw - tmpfs"} {
		if _, err := ParseLine(bad); err == nil {
			t.Errorf("ParseLine(%q) accepted", bad)
		}
	}
}

func TestTopAtUnder(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if top, ok := Top(ms, "/mnt/img"); !ok || top.ID != 42 {
		t.Errorf("Top(/mnt/img) = %+v, %v; want the mount stacked on top (42)", top, ok)
	}
	if n := len(At(ms, "/mnt/img")); n != 2 {
		t.Errorf("At(/mnt/img): %d mounts, want 2", n)
	}
	if top, ok := Top(ms, "/tmp/a b"); !ok || top.FSType != "tmpfs" {
		t.Errorf("Top of the escaped path: %+v, %v", top, ok)
	}
	if _, ok := Top(ms, `/tmp/a\040b`); ok {
		t.Error("Top matched the escaped form of a path")
	}
	if _, ok := Top(ms, "/mnt"); ok {
		t.Error("Top(/mnt) found a mount")
	}
	var under []string
	for _, m := range Under(ms, "/tmp/a b") {
		under = append(under, m.MountPoint)
	}
	if want := []string{"/tmp/a b", "/tmp/a b/inner"}; !reflect.DeepEqual(under, want) {
		t.Errorf("Under = %q, want %q", under, want)
	}
	if n := len(Under(ms, "/tmp/a")); n != 0 {
		t.Errorf("Under(/tmp/a) matched %d mounts of /tmp/a b", n)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`:   "/tmp/a b",
		`/x\011y\012z`:  "/x\ty\nz",
		`/back\134s`:    `/back\s`,
		`/plain`:        "/plain",
		`/short\04`:     `/short\04`,
		`/not\999octal`: `/not\999octal`,
		`/big\777`:      `/big\777`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadSelf: this process's own mountinfo parses, and "/" is there.
func TestReadSelf(t *testing.T) {
	ms, err := Read()
	if err != nil {
		t.Skip("no /proc/self/mountinfo:", err)
	}
	if _, ok := Top(ms, "/"); !ok {
		t.Error("no mount at /")
	}
}

func TestResolve(t *testing.T) {
	d := t.TempDir()
	real := filepath.Join(d, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(d, "link")); err != nil {
		t.Fatal(err)
	}
	rd, err := filepath.EvalSymlinks(d)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		filepath.Join(d, "link") + "/":   filepath.Join(rd, "real"),
		filepath.Join(d, "link", "gone"): filepath.Join(rd, "real", "gone"),
		"/":                              "/",
	} {
		if got, err := Resolve(nil, in); err != nil || got != want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	// A listed mount point is not looked up (it may be a dead FUSE
	// mount); mountinfo never lists a symlink, so nothing is lost.
	ms := []Mount{{MountPoint: filepath.Join(rd, "link")}}
	if got, err := Resolve(ms, filepath.Join(d, "link")); err != nil || got != filepath.Join(rd, "link") {
		t.Errorf("Resolve of a listed mount point = %s, %v", got, err)
	}
	if _, err := Resolve(nil, filepath.Join(d, "gone", "x")); err == nil {
		t.Error("Resolve with a missing parent succeeded")
	}
}

// TestTopHidden: a mount still listed at p whose parent was covered since
// (here: tmpfs A moved over /s/x, bringing B, mounted on A's mnt, along)
// is not what a lookup of p reaches, nor what umount2(p) takes off: B is.
// Top picked the hidden FUSE mount (listed last), and `ocimount umount`
// then unmounted B, someone's tmpfs.
func TestTopHidden(t *testing.T) {
	const moved = `47 1 8:1 / / rw - ext4 /dev/vda rw
67 47 0:41 / /s/x rw,relatime - tmpfs A rw
68 67 0:42 / /s/x/mnt rw,relatime - tmpfs B rw
69 47 0:43 / /s/x/mnt ro,nosuid,nodev,relatime - fuse.ocimount oci:/img ro,user_id=0,group_id=0
70 68 0:44 / /s/x/mnt/deep rw - tmpfs C rw
71 69 0:45 / /s/x/mnt/gone rw - tmpfs D rw
`
	ms, err := Parse(strings.NewReader(moved))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]int{"/": 47, "/s/x": 67, "/s/x/mnt": 68, "/s/x/mnt/deep": 70, "/s/x/mnt/gone": 0, "/s": 0} {
		top, ok := Top(ms, p)
		if (want == 0) == ok || top.ID != want {
			t.Errorf("Top(%s) = %d, %v; want %d", p, top.ID, ok, want)
		}
	}
	// Without B, nothing is reached at /s/x/mnt: the lookup ends in A.
	ms = append(ms[:2:2], ms[3:]...)
	if top, ok := Top(ms, "/s/x/mnt"); ok {
		t.Errorf("Top(/s/x/mnt) = %+v with only a hidden mount there", top)
	}
	// A cycle in a malformed file does not hang.
	cyc, err := Parse(strings.NewReader("1 2 0:1 / / rw - ext4 a rw\n2 1 0:2 / / rw - ext4 b rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	Top(cyc, "/x")
}

// Inside: what was mounted on a mount's files, at any depth, and nothing
// that merely has a longer path (a mount covered at the same path, one
// below a sibling).
func TestInside(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range Inside(ms, ms[1]) { // the tmpfs at /tmp/a b
		got = append(got, m.ID)
	}
	if !reflect.DeepEqual(got, []int{47}) {
		t.Errorf("Inside(/tmp/a b) = %v, want [47]", got)
	}
	if in := Inside(ms, ms[3]); len(in) != 0 { // top of /mnt/img
		t.Errorf("Inside(top of /mnt/img) = %+v", in)
	}
	if in := Inside(ms, ms[2]); len(in) != 1 || in[0].ID != 42 { // the one under it
		t.Errorf("Inside(41) = %+v, want the mount stacked on it", in)
	}
}
