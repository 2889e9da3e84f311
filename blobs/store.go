package blobs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	digest "github.com/opencontainers/go-digest"
)

// store is where an image's files live: a layout directory or a tar
// archive read in place. Names are slash-separated, relative to the root.
type store interface {
	// open returns the named regular file. Absent → ErrNotFound.
	open(name string) (*fileBlob, error)
	close() error
}

// blobName is the layout path of a blob. It validates the digest first:
// the digest comes from untrusted JSON and must not be able to name
// anything outside blobs/ ("sha256:../../etc/shadow").
func blobName(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w: %w", string(d), ErrInvalid, err)
	}
	return "blobs/" + string(d.Algorithm()) + "/" + d.Encoded(), nil
}

// dirStore is an OCI image layout directory.
type dirStore struct{ root string }

func (s dirStore) close() error { return nil }

func (s dirStore) open(name string) (*fileBlob, error) {
	// O_NONBLOCK: a FIFO planted in a layout must not hang the open; it
	// is then rejected as not regular. It has no effect on regular files.
	f, err := os.OpenFile(filepath.Join(s.root, filepath.FromSlash(name)), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file: %w", name, ErrInvalid)
	}
	return &fileBlob{f: f, size: fi.Size(), own: true}, nil
}

// member is one entry of an outer archive: where its data starts in the
// file and how long it is, or what it links to.
type member struct {
	off, size int64
	typ       byte
	link      string
	sparse    bool
}

// archive is a tar file indexed in one pass over its headers. Member data
// is never read during indexing: archive/tar seeks past it because *os.File
// is an io.Seeker, so indexing a multi-GiB archive reads a few KiB.
type archive struct {
	f       *os.File
	size    int64
	members map[string]member
}

func (a *archive) close() error { return a.f.Close() }

// memberName normalises a member name so "./index.json", "/index.json" and
// "index.json" are one key. Lookups only; nothing is written to disk.
func memberName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// openArchive opens and indexes a tar archive.
func openArchive(p string) (*archive, error) { return openArchiveCtx(context.Background(), p) }

func openArchiveCtx(ctx context.Context, p string) (*archive, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, err
	}
	a, err := indexArchive(ctx, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

func indexArchive(ctx context.Context, f *os.File) (*archive, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("archive is not a regular file: %w", ErrInvalid)
	}
	var magic [6]byte
	n, _ := f.ReadAt(magic[:], 0)
	if kind := compressedKind(magic[:n]); kind != "" {
		return nil, fmt.Errorf("%s-compressed archive is %w; decompress it first", kind, ErrUnsupported)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	a := &archive{f: f, size: fi.Size(), members: map[string]member{}}
	tr := tar.NewReader(f)
	for i := 0; ; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w: %w", ErrInvalid, err)
		}
		// archive/tar reads header blocks exactly and never reads
		// ahead, so the file offset now is where this member's data
		// starts.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		m := member{off: off, size: hdr.Size, typ: hdr.Typeflag, link: hdr.Linkname}
		if hdr.Typeflag == tar.TypeGNUSparse {
			m.sparse = true
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				m.sparse = true
			}
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeGNUSparse:
			a.members[memberName(hdr.Name)] = m // later entries win, as in tar
		}
	}
	if len(a.members) == 0 {
		return nil, fmt.Errorf("archive has no files: %w", ErrInvalid)
	}
	return a, nil
}

// compressedKind recognises compressed outer archives by magic number.
func compressedKind(b []byte) string {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return "gzip"
	case len(b) >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd:
		return "zstd"
	case len(b) >= 3 && string(b[:3]) == "BZh":
		return "bzip2"
	case len(b) >= 6 && string(b[:6]) == "\xfd7zXZ\x00":
		return "xz"
	}
	return ""
}

// open resolves name, following symbolic and hard links inside the archive
// (skopeo's docker-archive output has <id>/layer.tar symlinks to <hex>.tar),
// and returns the member's data region.
func (a *archive) open(name string) (*fileBlob, error) {
	orig := name
	name = memberName(name)
	first := name
	for hops := 0; ; hops++ {
		if hops > 16 {
			return nil, fmt.Errorf("%s: too many links: %w", orig, ErrInvalid)
		}
		m, ok := a.members[name]
		if !ok {
			if name == first {
				return nil, fmt.Errorf("%s: %w in archive", orig, ErrNotFound)
			}
			return nil, fmt.Errorf("%s (link to %s): %w in archive", orig, name, ErrNotFound)
		}
		switch m.typ {
		case tar.TypeSymlink:
			if path.IsAbs(m.link) {
				name = memberName(m.link)
			} else {
				name = memberName(path.Join(path.Dir(name), m.link))
			}
			continue
		case tar.TypeLink:
			name = memberName(m.link)
			continue
		}
		if m.sparse {
			return nil, fmt.Errorf("%s: sparse archive member is %w", orig, ErrUnsupported)
		}
		if m.off < 0 || m.size < 0 || m.off > a.size || m.size > a.size-m.off {
			return nil, fmt.Errorf("%s: archive is truncated: %w", orig, ErrInvalid)
		}
		return &fileBlob{f: a.f, base: m.off, size: m.size}, nil
	}
}
