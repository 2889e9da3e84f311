package blobs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Transport says how a Source is read. The names are skopeo's.
type Transport string

const (
	TransportOCI           Transport = "oci"            // an OCI image layout directory
	TransportOCIArchive    Transport = "oci-archive"    // a tar of an OCI image layout
	TransportDockerArchive Transport = "docker-archive" // `docker save` output
	TransportDocker        Transport = "docker"         // an image in a registry (registry.go)
)

// Source names an image: where it is and which one of several.
type Source struct {
	Transport Transport
	// Path is the directory or archive file; for TransportDocker, the
	// repository name as written (host/repo, not normalised).
	Path string
	// Ref selects an image inside Path: the org.opencontainers.image.ref.name
	// annotation (oci, oci-archive), a RepoTag or "@N" (docker-archive), a
	// tag, "sha256:…" digest or "tag@sha256:…" (docker). "" = unspecified.
	Ref string
}

// String renders the source in ParseSource syntax, and is the prefix of every
// error about it. A path that contains ':' followed by a Ref does not
// round-trip (skopeo's syntax has the same limit).
func (s Source) String() string {
	switch s.Transport {
	case TransportDocker:
		r := "docker://" + s.Path
		if s.Ref == "" {
			return r
		}
		// A tag cannot contain ':' and a digest always does, so the
		// separator follows from the text alone.
		if strings.Contains(s.Ref, ":") && !strings.Contains(s.Ref, "@") {
			return r + "@" + s.Ref
		}
		return r + ":" + s.Ref
	default:
		r := string(s.Transport) + ":" + s.Path
		if s.Ref != "" {
			r += ":" + s.Ref
		}
		return r
	}
}

// otherTransports are skopeo transports we recognise only to refuse them
// clearly; without this, "containers-storage:foo" would parse as the
// registry image containers-storage, tag foo.
var otherTransports = []string{"dir", "docker-daemon", "containers-storage", "ostree", "sif", "tarball"}

// ParseSource parses skopeo's transport syntax:
//
//	oci:DIR[:REF]  oci-archive:FILE[:REF]  docker-archive:FILE[:REF|:@N]
//	docker://[host[:port]/]repo[:tag][@digest]
//
// Without a transport prefix, a path that exists is inspected (directory
// with oci-layout or index.json → oci; tar file with manifest.json →
// docker-archive; tar file with index.json or oci-layout → oci-archive), and
// anything else that is a valid docker reference ("alpine:3.20") is a
// registry source. The whole string is checked as a path first, so bare
// paths may contain ':'. Detection reads the file system; explicit
// transports are not checked here but by OpenImage.
func ParseSource(s string) (Source, error) {
	if s == "" {
		return Source{}, fmt.Errorf("empty image source: %w", ErrInvalid)
	}
	if rest, ok := strings.CutPrefix(s, "docker://"); ok {
		name, ref, ok := parseDockerRef(rest)
		if !ok {
			return Source{}, fmt.Errorf("%q: not a valid docker reference: %w", s, ErrInvalid)
		}
		return Source{Transport: TransportDocker, Path: name, Ref: ref}, nil
	}
	if t, rest, ok := strings.Cut(s, ":"); ok {
		switch tr := Transport(t); tr {
		case TransportOCI, TransportOCIArchive, TransportDockerArchive:
			path, ref, _ := strings.Cut(rest, ":")
			if path == "" {
				return Source{}, fmt.Errorf("%q: missing path after %q: %w", s, t+":", ErrInvalid)
			}
			return Source{Transport: tr, Path: path, Ref: ref}, nil
		}
		for _, o := range otherTransports {
			if t == o {
				return Source{}, fmt.Errorf("%q: transport %q is %w", s, t, ErrUnsupported)
			}
		}
	}
	fi, err := os.Stat(s)
	if err == nil {
		tr, err := detect(s, fi)
		if err != nil {
			return Source{}, err
		}
		return Source{Transport: tr, Path: s}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Source{}, fmt.Errorf("%q: %w", s, err)
	}
	if name, ref, ok := parseDockerRef(s); ok {
		return Source{Transport: TransportDocker, Path: name, Ref: ref}, nil
	}
	return Source{}, fmt.Errorf("%q: no such file or directory, and not a registry reference: %w", s, ErrNotFound)
}

// detect decides the transport of an existing bare path.
func detect(path string, fi fs.FileInfo) (Transport, error) {
	switch {
	case fi.IsDir():
		for _, n := range []string{"oci-layout", "index.json"} {
			if _, err := os.Stat(path + "/" + n); err == nil {
				return TransportOCI, nil
			}
		}
		return "", fmt.Errorf("%s: directory without oci-layout or index.json is not an OCI image layout: %w", path, ErrInvalid)
	case fi.Mode().IsRegular():
		a, err := openArchive(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		defer a.f.Close()
		// Newer `docker save` output holds both; manifest.json is what
		// docker itself loads and carries the RepoTags, so it wins.
		if _, ok := a.members["manifest.json"]; ok {
			return TransportDockerArchive, nil
		}
		if _, ok := a.members["index.json"]; ok {
			return TransportOCIArchive, nil
		}
		if _, ok := a.members["oci-layout"]; ok {
			return TransportOCIArchive, nil
		}
		return "", fmt.Errorf("%s: tar archive without manifest.json, index.json or oci-layout: %w", path, ErrInvalid)
	}
	return "", fmt.Errorf("%s: neither a directory nor a regular file: %w", path, ErrInvalid)
}

// The docker reference grammar (distribution's reference.go documents it in
// EBNF; this is written from that grammar). Compiled on first use: every
// ocimount process (the mount command and its server are two) would
// otherwise pay for it at start-up.
var dockerRefRE = sync.OnceValue(func() *regexp.Regexp {
	const (
		alnum     = `[a-z0-9]+`
		sep       = `(?:[._]|__|-+)`
		component = alnum + `(?:` + sep + alnum + `)*`
		domainC   = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		host      = `(?:` + domainC + `(?:\.` + domainC + `)*|\[[a-fA-F0-9:]+\])`
		domain    = host + `(?::[0-9]+)?`
		name      = `(?:` + domain + `/)?` + component + `(?:/` + component + `)*`
		tag       = `[\w][\w.-]{0,127}`
		dgst      = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
	)
	return regexp.MustCompile(`^(` + name + `)(?::(` + tag + `))?(?:@(` + dgst + `))?$`)
})

// parseDockerRef splits a docker reference into name and Ref ("tag",
// "alg:hex" or "tag@alg:hex").
func parseDockerRef(s string) (name, ref string, ok bool) {
	m := dockerRefRE().FindStringSubmatch(s)
	if m == nil || len(m[1]) > 255 {
		return "", "", false
	}
	name, tag, dg := m[1], m[2], m[3]
	switch {
	case tag != "" && dg != "":
		ref = tag + "@" + dg
	case dg != "":
		ref = dg
	default:
		ref = tag
	}
	return name, ref, true
}
