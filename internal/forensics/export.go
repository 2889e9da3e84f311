package forensics

import (
	"archive/tar"
	"fmt"
	"io"
	"time"

	"github.com/ocimount/ocimount/layerindex"
	"github.com/ocimount/ocimount/overlay"
)

// Export writes the merged tree as one tar stream: "./" first, then every
// path depth-first, siblings by name, so the same image always gives the
// same bytes. The first name of a hardlinked file carries its data and
// later names are tar hardlinks to it; xattrs are PAX SCHILY.xattr
// records; sparse files are written dense. Memory: the walk's stack plus
// one path per hardlinked file.
func Export(w io.Writer, t *overlay.Tree) error {
	tw := tar.NewWriter(w)
	first := map[uint32]string{} // inode slot → first name written, for nlink > 1
	write := func(id overlay.NodeID) error {
		in := t.Attr(id)
		name := t.Path(id)
		if id == overlay.RootID {
			name = "./"
		}
		h := &tar.Header{
			Name: name, Mode: int64(in.Mode), Uid: int(in.UID), Gid: int(in.GID),
			ModTime: time.Unix(in.ModSec, int64(in.ModNsec)),
		}
		if in.ModNsec != 0 || len(in.Xattrs) > 0 {
			h.Format = tar.FormatPAX // sub-second mtimes and xattrs need PAX records
		}
		for _, x := range in.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+x.Name] = x.Value
		}
		switch in.Kind {
		case layerindex.KindDir:
			h.Typeflag = tar.TypeDir
			if id != overlay.RootID {
				h.Name += "/"
			}
		case layerindex.KindSymlink:
			h.Typeflag, h.Linkname = tar.TypeSymlink, in.Link
		case layerindex.KindChar, layerindex.KindBlock:
			h.Typeflag = tar.TypeChar
			if in.Kind == layerindex.KindBlock {
				h.Typeflag = tar.TypeBlock
			}
			h.Devmajor, h.Devminor = int64(in.DevMajor), int64(in.DevMinor)
		case layerindex.KindFIFO:
			h.Typeflag = tar.TypeFifo
		case layerindex.KindReg:
			h.Typeflag, h.Size = tar.TypeReg, in.Size
		default:
			return fmt.Errorf("%s: cannot export a %s", displayPath(name), kindName(in.Kind))
		}
		if in.Kind != layerindex.KindDir && in.Nlink > 1 {
			slot := t.InodeIndex(id)
			if target, ok := first[slot]; ok {
				// The link shares the first name's inode, xattrs included.
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, target, 0
				h.Devmajor, h.Devminor, h.PAXRecords = 0, 0, nil
			} else {
				first[slot] = name
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", displayPath(name), err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			r, err := t.Open(id)
			if err != nil {
				return err
			}
			if _, err := io.Copy(tw, io.NewSectionReader(r, 0, h.Size)); err != nil {
				return fmt.Errorf("%s: %w", displayPath(name), err)
			}
		}
		return nil
	}
	if err := write(overlay.RootID); err != nil {
		return err
	}
	if err := walkTree(t, overlay.RootID, write); err != nil {
		return err
	}
	return tw.Close()
}
