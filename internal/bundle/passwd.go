package bundle

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// PasswdEntry is one line of an /etc/passwd file.
type PasswdEntry struct {
	Name     string
	UID, GID uint32
	Home     string
}

// GroupEntry is one line of an /etc/group file.
type GroupEntry struct {
	Name    string
	GID     uint32
	Members []string
}

// maxLine bounds one line of passwd/group: the files come from an image,
// which may be hostile, and a line longer than this is not a real entry.
const maxLine = 64 << 10

// ParsePasswd reads passwd(5) lines. The bytes come from an untrusted
// image, so it never fails: lines that are not well-formed entries
// (comments, NIS "+"/"-" lines, missing fields, ids that are not 32-bit
// numbers, over-long lines) are skipped, as libc's files backend does.
func ParsePasswd(b []byte) []PasswdEntry {
	var out []PasswdEntry
	eachLine(b, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 7 || !validName(f[0]) {
			return
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			return
		}
		out = append(out, PasswdEntry{Name: f[0], UID: uid, GID: gid, Home: f[5]})
	})
	return out
}

// ParseGroup reads group(5) lines, skipping malformed ones like ParsePasswd.
func ParseGroup(b []byte) []GroupEntry {
	var out []GroupEntry
	eachLine(b, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 4 || !validName(f[0]) {
			return
		}
		gid, ok := parseID(f[2])
		if !ok {
			return
		}
		g := GroupEntry{Name: f[0], GID: gid}
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				g.Members = append(g.Members, m)
			}
		}
		out = append(out, g)
	})
	return out
}

func eachLine(b []byte, fn func(string)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	sc.Split(scanLinesSkippingLong)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		fn(line)
	}
}

// scanLinesSkippingLong is bufio.ScanLines, except that a line longer than
// maxLine is dropped instead of stopping the scan: one garbage line must not
// hide the entries after it.
func scanLinesSkippingLong(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		if i > maxLine {
			return i + 1, []byte{}, nil
		}
		return i + 1, data[:i], nil
	}
	if len(data) >= maxLine {
		// Too long and no end in sight: drop what we have and go on
		// dropping until the next newline.
		return len(data), []byte{}, nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// validName refuses the NIS compat markers ("+", "-name", "+@netgroup")
// and names that could not be typed in a User field.
func validName(s string) bool {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return false
	}
	return !strings.ContainsAny(s, " \t\x00")
}

// parseID accepts a decimal 32-bit id. (uint32)(-1) is "no id" to the
// kernel and is refused.
func parseID(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}
