// Package mountinfo reads /proc/self/mountinfo. It is the one place
// ocimount parses that file: umount, bundle removal and mount all decide
// from it what is mounted where (and whose it is), because it answers
// without touching the mounts themselves — a stat of a stale FUSE mount
// fails and one of a stuck server hangs — and because it tells what kind
// of filesystem a mount is, which a comparison of device numbers cannot.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo (proc(5)). Paths and the source are
// unescaped.
type Mount struct {
	ID, Parent int
	// Dev is the st_dev of the mount's files as "MAJOR:MINOR".
	Dev string
	// Root is the path inside the filesystem that is mounted (a bind
	// mount of a subdirectory has more than "/").
	Root       string
	MountPoint string
	// Options are the per-mount options (ro, nosuid, nodev, ...).
	Options string
	// Optional are the optional fields (shared:N, master:N, ...).
	Optional []string
	// FSType is "type[.subtype]": "fuse.ocimount" for ocimount's FUSE
	// mounts, "tmpfs", "overlay", ...
	FSType string
	// Source is the mount source ("none", a device, what a FUSE server
	// named itself); it is whatever the mounter chose, so it identifies
	// nothing on its own.
	Source string
	// SuperOptions are the filesystem's own options (allow_other,
	// lowerdir=..., ...).
	SuperOptions string
}

// HasOption reports whether o is one of the per-mount options.
func (m Mount) HasOption(o string) bool { return hasOpt(m.Options, o) }

// HasSuperOption reports whether o is one of the filesystem's options.
func (m Mount) HasSuperOption(o string) bool { return hasOpt(m.SuperOptions, o) }

// SuperOption returns the value of key=value among the filesystem's
// options, unescaped.
func (m Mount) SuperOption(key string) (string, bool) {
	for _, s := range strings.Split(m.SuperOptions, ",") {
		if k, v, ok := strings.Cut(s, "="); ok && k == key {
			return Unescape(v), true
		}
	}
	return "", false
}

func hasOpt(opts, o string) bool {
	for _, s := range strings.Split(opts, ",") {
		if s == o {
			return true
		}
	}
	return false
}

// String describes the mount for messages: type, source and mount point.
func (m Mount) String() string {
	return fmt.Sprintf("%s (source %q) at %s", m.FSType, m.Source, m.MountPoint)
}

// ParseLine parses one line of mountinfo:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields are separated by single spaces (an empty source is an empty
// field, so the line is not split on runs of blanks); the kernel writes
// space, tab, newline and backslash in paths as \ooo octal escapes.
func ParseLine(line string) (Mount, error) {
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+4 {
		return Mount{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	id, err1 := strconv.Atoi(f[0])
	parent, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return Mount{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	return Mount{
		ID: id, Parent: parent, Dev: f[2],
		Root:         Unescape(f[3]),
		MountPoint:   Unescape(f[4]),
		Options:      f[5],
		Optional:     f[6:sep],
		FSType:       Unescape(f[sep+1]),
		Source:       Unescape(f[sep+2]),
		SuperOptions: strings.Join(f[sep+3:], " "),
	}, nil
}

// Parse reads every line of a mountinfo file, in its order (the order
// mounts were made in, so a mount stacked on another comes after it).
func Parse(r io.Reader) ([]Mount, error) {
	var ms []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if sc.Text() == "" {
			continue
		}
		m, err := ParseLine(sc.Text())
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

// Read parses /proc/self/mountinfo: this process's mount namespace.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Top returns the mount at exactly path p that is on top, the one a
// path lookup of p reaches and umount2(p) takes off. That is not simply
// the last mount listed at p: a mount at p whose parent mount was covered
// since (a tmpfs mounted, or a mount moved, over a directory above p) is
// still listed at p but hidden, and umount2(p) takes off whatever is
// visible there instead. So Top walks p from the root as a lookup does:
// at each prefix of p, a mount is reached only if it sits on the mount
// reached so far, and then whatever is stacked on it. p must be absolute,
// clean and free of symlinks, as mountinfo writes mount points.
func Top(ms []Mount, p string) (Mount, bool) {
	cur, ok := rootMount(ms)
	if !ok {
		return Mount{}, false
	}
	cur = climb(ms, cur, "/")
	if p != "/" {
		prefix := ""
		for _, c := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			prefix += "/" + c
			if m, ok := onTopOf(ms, cur, prefix); ok {
				cur = climb(ms, m, prefix)
			}
		}
	}
	if cur.MountPoint != p {
		return Mount{}, false
	}
	return cur, true
}

// rootMount is the bottom mount at "/": the one whose parent is not
// itself a mount at "/" (the namespace root's parent is not listed).
func rootMount(ms []Mount) (Mount, bool) {
	atRoot := map[int]bool{}
	for _, m := range ms {
		if m.MountPoint == "/" {
			atRoot[m.ID] = true
		}
	}
	for _, m := range ms {
		if m.MountPoint == "/" && (!atRoot[m.Parent] || m.Parent == m.ID) {
			return m, true
		}
	}
	return Mount{}, false
}

// onTopOf finds the mount at path a whose parent is m (the last such).
func onTopOf(ms []Mount, m Mount, a string) (Mount, bool) {
	var top Mount
	found := false
	for _, o := range ms {
		if o.MountPoint == a && o.Parent == m.ID && o.ID != m.ID {
			top, found = o, true
		}
	}
	return top, found
}

// climb follows the stack of mounts at a on top of m to its top
// (bounded: a malformed file could make a cycle).
func climb(ms []Mount, m Mount, a string) Mount {
	for range ms {
		o, ok := onTopOf(ms, m, a)
		if !ok {
			break
		}
		m = o
	}
	return m
}

// Inside returns the mounts made on top of m's files: its children,
// their children, and so on (not m itself). Unmounting m fails (EBUSY)
// while there are any, and a lazy unmount detaches them all with it.
func Inside(ms []Mount, m Mount) []Mount {
	var out []Mount
	in := map[int]bool{m.ID: true}
	for changed := true; changed; {
		changed = false
		for _, o := range ms {
			if !in[o.ID] && in[o.Parent] {
				in[o.ID], changed = true, true
				out = append(out, o)
			}
		}
	}
	return out
}

// At returns every mount at exactly p, bottom first.
func At(ms []Mount, p string) []Mount {
	var out []Mount
	for _, m := range ms {
		if m.MountPoint == p {
			out = append(out, m)
		}
	}
	return out
}

// Under returns the mounts at p or anywhere below it.
func Under(ms []Mount, p string) []Mount {
	var out []Mount
	prefix := strings.TrimSuffix(p, "/") + "/"
	for _, m := range ms {
		if m.MountPoint == p || strings.HasPrefix(m.MountPoint, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// Resolve turns p into the form mountinfo writes mount points in:
// absolute, clean, symlinks resolved. It resolves p's parent, and p itself
// only if nothing is mounted at the result: looking up a mount point reaches
// the filesystem mounted there, and a stale FUSE mount fails (ENOTCONN)
// while one whose server is stopped hangs. ms is what Read returned.
func Resolve(ms []Mount, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	cand := filepath.Join(dir, filepath.Base(abs))
	if len(At(ms, cand)) > 0 {
		return cand, nil
	}
	if r, err := filepath.EvalSymlinks(cand); err == nil {
		return r, nil
	}
	return cand, nil
}

// Unescape undoes mountinfo's \ooo escapes (space, tab, newline, \).
func Unescape(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
