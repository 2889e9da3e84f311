// Package forensics answers questions about an image from its layer
// indexes and merged trees, without FUSE and without extracting it: what
// is in it and which layer put it there (Inspect, List, Cat, History),
// what a layer or a new version changed (DiffLayer, DiffTrees), what is
// shipped but invisible (Waste), and the merged tree as one tar (Export).
//
// Every function writes to an io.Writer. Listings and diffs walk the
// trees depth-first and write as they go, so their memory is bounded by
// the depth of the tree, not its size; the trees themselves are the
// compact overlay.Tree the mount uses. JSON output follows
// docs/json-schema.md.
package forensics

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Image is what the commands work on: the image's metadata, every layer
// (index with its entry table, and content access), and the merged tree.
type Image struct {
	Meta   *blobs.Image // nil in tests that build layers directly; Inspect needs it
	Layers []overlay.Layer
	Tree   *overlay.Tree
	// Sources[i], if set, says where layer i's index came from (built,
	// cached, ocimount artifact, eStargz TOC, zstd:chunked TOC), for
	// inspect.
	Sources []string
}

// Errors callers can test for; messages name the path.
var (
	ErrNotFound = errors.New("no such file or directory in the image")
	ErrIsDir    = errors.New("is a directory")
	ErrLoop     = errors.New("too many levels of symbolic links")
	ErrBadPath  = errors.New("invalid path")
	ErrNotFile  = errors.New("not a regular file")
)

// PathError names the path an error is about.
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string { return fmt.Sprintf("%s: %v", displayPath(e.Path), e.Err) }
func (e *PathError) Unwrap() error { return e.Err }

func displayPath(p string) string {
	switch {
	case p == ".":
		return "/"
	case strings.HasPrefix(p, "/"):
		return p // a user's path, shown as given
	}
	return "/" + p
}

// CleanPath turns a user's path into the tree's form: relative, no "."
// or empty components. ".." is refused rather than resolved, so a path
// always names what it spells.
func CleanPath(p string) (string, error) {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", &PathError{Path: p, Err: fmt.Errorf("%w: %q has a \"..\" component", ErrBadPath, p)}
		}
		if strings.IndexByte(c, 0) >= 0 {
			return "", &PathError{Path: p, Err: fmt.Errorf("%w: NUL in %q", ErrBadPath, p)}
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), nil
}

// lookup finds a path in t without following any symlink.
func lookup(t *overlay.Tree, p string) (overlay.NodeID, string, error) {
	cp, err := CleanPath(p)
	if err != nil {
		return 0, "", err
	}
	id, ok := t.Walk(cp)
	if !ok {
		return 0, cp, &PathError{Path: cp, Err: ErrNotFound}
	}
	return id, cp, nil
}

// Resolve finds a path following symlinks, in every component including
// the last, by the image's one rule (overlay.Tree.Resolve, which the merge
// and the mount use too): absolute targets start at the image root and
// ".." at the root stays there, so `cat` shows exactly the file the mount
// shows at that path.
func Resolve(t *overlay.Tree, p string) (overlay.NodeID, error) {
	cp, err := CleanPath(p)
	if err != nil {
		return 0, err
	}
	id, err := t.Resolve(cp, true)
	if err != nil {
		var re *overlay.ResolveError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return 0, &PathError{Path: cp, Err: ErrNotFound}
		case errors.Is(err, overlay.ErrSymlinkLoop):
			return 0, &PathError{Path: cp, Err: ErrLoop}
		case errors.As(err, &re) && re.NotDir != "":
			return 0, &PathError{Path: cp, Err: fmt.Errorf("%s is not a directory", displayPath(re.NotDir))}
		}
		return 0, &PathError{Path: cp, Err: err}
	}
	return id, nil
}

// kindName is the JSON and table name of a file type.
func kindName(k layerindex.Kind) string {
	switch k {
	case layerindex.KindReg:
		return "file"
	case layerindex.KindDir:
		return "dir"
	case layerindex.KindSymlink:
		return "symlink"
	case layerindex.KindHardlink:
		return "hardlink"
	case layerindex.KindChar:
		return "char"
	case layerindex.KindBlock:
		return "block"
	case layerindex.KindFIFO:
		return "fifo"
	}
	return "unknown"
}

// HumanSize is a size in binary units, short enough for a column
// (`cache ls`, `status`, explore's panes share it).
func HumanSize(n int64) string {
	const u = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	i := -1
	for f >= 1024 && i < len(u)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, u[i])
}

// ModeString renders type and permission bits as ls -l does.
func ModeString(k layerindex.Kind, mode uint32) string {
	b := []byte("?rwxrwxrwx")
	switch k {
	case layerindex.KindReg, layerindex.KindHardlink:
		b[0] = '-'
	case layerindex.KindDir:
		b[0] = 'd'
	case layerindex.KindSymlink:
		b[0] = 'l'
	case layerindex.KindChar:
		b[0] = 'c'
	case layerindex.KindBlock:
		b[0] = 'b'
	case layerindex.KindFIFO:
		b[0] = 'p'
	}
	for i := 0; i < 9; i++ {
		if mode&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, pos int, set, unset byte) {
		if mode&bit != 0 {
			if b[pos] == '-' {
				b[pos] = unset
			} else {
				b[pos] = set
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

func fmtTime(sec int64, nsec uint32) string {
	return time.Unix(sec, int64(nsec)).UTC().Format(time.RFC3339Nano)
}

func layerCol(l int32) string {
	if l < 0 {
		return "-"
	}
	return fmt.Sprint(l)
}

// xattrMap renders xattrs for JSON: values base64 (they are raw bytes,
// security.capability is binary).
func xattrMap(xs []layerindex.Xattr) map[string]string {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]string, len(xs))
	for _, x := range xs {
		m[x.Name] = base64.StdEncoding.EncodeToString([]byte(x.Value))
	}
	return m
}

// hashContent returns "sha256:<hex>" of a regular file's bytes, read
// from its layer's uncompressed stream (only the spans it lies in).
func hashContent(layers []overlay.Layer, layer, entry int32) (string, error) {
	if layer < 0 || int(layer) >= len(layers) {
		return "", fmt.Errorf("layer %d out of range", layer)
	}
	l := layers[layer]
	if l.Content == nil {
		return "", fmt.Errorf("layer %d has no content source", layer)
	}
	e := &l.Index.Entries[entry]
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(layerindex.Content(l.Content, e), 0, e.Size)); err != nil {
		return "", fmt.Errorf("reading %s from layer %d: %w", e.Name, layer, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func hashReader(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// newBuf batches a streaming command's small writes into 32 KiB ones:
// few syscalls, yet output starts long before a large walk ends.
func newBuf(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 32<<10) }
