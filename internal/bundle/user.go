package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrUnknownUser is returned when the image config names a user or group
// that the image's own /etc/passwd or /etc/group does not define. The
// conversion document says a converter MUST fail then.
var ErrUnknownUser = errors.New("not defined in the image")

// maxIDFile bounds how much of /etc/passwd or /etc/group is read: real ones
// are kilobytes, and the bytes come from the image.
const maxIDFile = 16 << 20

// ResolveUser turns the image config's User ("", "uid", "uid:gid", "name",
// "name:group", "uid:group", "name:gid") into process.user, looking names
// up in root's /etc/passwd and /etc/group — the image's own files, never
// the host's, since the ids must mean what they mean inside the container.
// root must resolve symlinks inside the image only (overlay.Tree.FS does).
//
// Following the image-spec conversion document: numeric values are copied
// verbatim; additionalGids (the primary group, then the groups of
// /etc/group listing the user as a member, as initgroups(3) makes them for
// a login) are set only when the user is given by name and no group is
// given. A user given by number alone takes the primary group of its
// passwd entry if there is one, else 0, as runc and Docker do.
func ResolveUser(spec string, root fs.FS) (rspec.User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupPart == "" {
		return rspec.User{}, fmt.Errorf("user %q: empty group", spec)
	}
	if userPart == "" {
		if hasGroup {
			return rspec.User{}, fmt.Errorf("user %q: empty user", spec)
		}
		userPart = "0" // no User: root, as runtimes default
	}
	var passwd []PasswdEntry
	var group []GroupEntry
	var passwdErr, groupErr error
	loadPasswd := func() {
		if passwd == nil && passwdErr == nil {
			var b []byte
			b, passwdErr = readLimited(root, "etc/passwd")
			passwd = ParsePasswd(b)
		}
	}
	loadGroup := func() {
		if group == nil && groupErr == nil {
			var b []byte
			b, groupErr = readLimited(root, "etc/group")
			group = ParseGroup(b)
		}
	}

	var u rspec.User
	var name string // the user's name, when known: for supplementary groups
	if id, ok := parseID(userPart); ok {
		u.UID = id
		loadPasswd()
		for _, p := range passwd {
			if p.UID == id {
				u.GID = p.GID
				break
			}
		}
	} else if isNumeric(userPart) {
		return rspec.User{}, fmt.Errorf("user %q: uid out of range", spec)
	} else {
		loadPasswd()
		if passwdErr != nil {
			return rspec.User{}, fmt.Errorf("user %q: cannot read the image's /etc/passwd: %w", userPart, passwdErr)
		}
		found := false
		for _, p := range passwd {
			if p.Name == userPart {
				u.UID, u.GID, name, found = p.UID, p.GID, p.Name, true
				break
			}
		}
		if !found {
			return rspec.User{}, fmt.Errorf("user %q: %w (/etc/passwd)", userPart, ErrUnknownUser)
		}
	}

	if hasGroup {
		if id, ok := parseID(groupPart); ok {
			u.GID = id
		} else if isNumeric(groupPart) {
			return rspec.User{}, fmt.Errorf("user %q: gid out of range", spec)
		} else {
			loadGroup()
			if groupErr != nil {
				return rspec.User{}, fmt.Errorf("group %q: cannot read the image's /etc/group: %w", groupPart, groupErr)
			}
			found := false
			for _, g := range group {
				if g.Name == groupPart {
					u.GID, found = g.GID, true
					break
				}
			}
			if !found {
				return rspec.User{}, fmt.Errorf("group %q: %w (/etc/group)", groupPart, ErrUnknownUser)
			}
		}
		return u, nil
	}
	if name == "" {
		return u, nil
	}
	// By name, no group: supplementary groups from /etc/group. An image
	// without /etc/group simply has none.
	loadGroup()
	u.AdditionalGids = []uint32{u.GID} // as initgroups(3) and containerd do
	seen := map[uint32]bool{u.GID: true}
	for _, g := range group {
		if seen[g.GID] {
			continue
		}
		for _, m := range g.Members {
			if m == name {
				seen[g.GID] = true
				u.AdditionalGids = append(u.AdditionalGids, g.GID)
				break
			}
		}
	}
	return u, nil
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func readLimited(root fs.FS, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if st.Size() > maxIDFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxIDFile)
	}
	b := make([]byte, st.Size())
	n, err := io.ReadFull(f, b)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // shrank under us: what was read is what there is
	}
	return b[:n], err
}
