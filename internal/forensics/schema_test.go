package forensics

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/ocimount/ocimount/overlay"
)

// The types below transcribe docs/json-schema.md independently of the
// production structs: output is decoded into them with unknown fields
// refused, then the documented value rules are checked. A field renamed in
// code but not in the document fails here.
type (
	schemaLayer struct {
		Index            *int    `json:"index"`
		Digest           *string `json:"digest"`
		DiffID           *string `json:"diff_id"`
		MediaType        *string `json:"media_type"`
		Format           *string `json:"format"`
		IndexSource      string  `json:"index_source"`
		CompressedSize   *int64  `json:"compressed_size"`
		UncompressedSize *int64  `json:"uncompressed_size"`
		Entries          *int    `json:"entries"`
		Whiteouts        *int    `json:"whiteouts"`
		OpaqueDirs       *int    `json:"opaque_dirs"`
		CreatedBy        string  `json:"created_by"`
		Created          string  `json:"created"`
		Comment          string  `json:"comment"`
	}
	schemaInspect struct {
		Manifest         *string           `json:"manifest"`
		Config           *string           `json:"config"`
		Platform         *string           `json:"platform"`
		Created          string            `json:"created"`
		Author           string            `json:"author"`
		Entrypoint       []string          `json:"entrypoint"`
		Cmd              []string          `json:"cmd"`
		Env              []string          `json:"env"`
		User             string            `json:"user"`
		WorkDir          string            `json:"workdir"`
		Labels           map[string]string `json:"labels"`
		ExposedPorts     []string          `json:"exposed_ports"`
		Entries          *int              `json:"entries"`
		Layers           []schemaLayer     `json:"layers"`
		UnmatchedHistory int               `json:"unmatched_history"`
	}
	schemaEntry struct {
		Path     *string           `json:"path"`
		Type     *string           `json:"type"`
		Mode     *string           `json:"mode"`
		UID      *uint32           `json:"uid"`
		GID      *uint32           `json:"gid"`
		Size     *int64            `json:"size"`
		Mtime    *string           `json:"mtime"`
		Nlink    *uint32           `json:"nlink"`
		Ino      *uint64           `json:"ino"`
		Layer    *int              `json:"layer"`
		Link     string            `json:"link"`
		DevMajor uint32            `json:"dev_major"`
		DevMinor uint32            `json:"dev_minor"`
		Xattrs   map[string]string `json:"xattrs"`
	}
	schemaChange struct {
		Path   *string      `json:"path"`
		Change *string      `json:"change"`
		Fields []string     `json:"fields"`
		Old    *schemaEntry `json:"old"`
		New    *schemaEntry `json:"new"`
	}
	schemaEvent struct {
		Layer     *int              `json:"layer"`
		Event     *string           `json:"event"`
		Fields    []string          `json:"fields"`
		By        string            `json:"by"`
		Type      string            `json:"type"`
		Mode      string            `json:"mode"`
		UID       *uint32           `json:"uid"`
		GID       *uint32           `json:"gid"`
		Size      *int64            `json:"size"`
		Mtime     string            `json:"mtime"`
		Link      string            `json:"link"`
		Digest    string            `json:"digest"`
		Xattrs    map[string]string `json:"xattrs"`
		FromLayer *int              `json:"from_layer"`
	}
	schemaHistory struct {
		Path   *string       `json:"path"`
		Events []schemaEvent `json:"events"`
	}
	schemaWaste struct {
		TotalBytes       *int64 `json:"total_bytes"`
		UncompressedSize *int64 `json:"uncompressed_size"`
		Entries          []struct {
			Path     *string `json:"path"`
			Layer    *int    `json:"layer"`
			Size     *int64  `json:"size"`
			HiddenBy *int    `json:"hidden_by"`
			How      *string `json:"how"`
		} `json:"entries"`
	}
)

var (
	reDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	reMode   = regexp.MustCompile(`^[0-7]{4}$`)
	types    = []string{"file", "dir", "symlink", "char", "block", "fifo"}
	fieldSet = []string{"type", "size", "content", "link", "device", "mode", "owner", "mtime", "xattrs"}
)

func strict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

func checkTime(s string) error {
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return err
	}
	return nil
}

func checkEntry(e *schemaEntry) error {
	if e.Path == nil || e.Type == nil || e.Mode == nil || e.UID == nil || e.GID == nil || e.Size == nil ||
		e.Mtime == nil || e.Nlink == nil || e.Ino == nil || e.Layer == nil {
		return fmt.Errorf("required field missing: %+v", e)
	}
	if *e.Path == "" || (*e.Path)[0] == '/' {
		return fmt.Errorf("path %q", *e.Path)
	}
	if !slices.Contains(types, *e.Type) || !reMode.MatchString(*e.Mode) || *e.Layer < -1 {
		return fmt.Errorf("bad type/mode/layer: %+v", e)
	}
	for k, v := range e.Xattrs {
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return fmt.Errorf("xattr %s: %v", k, err)
		}
	}
	return checkTime(*e.Mtime)
}

// jsonLines decodes every line of b with decode.
func jsonLines(t *testing.T, b []byte, decode func([]byte) error) int {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		if err := decode(sc.Bytes()); err != nil {
			t.Errorf("line %d %s: %v", n, sc.Bytes(), err)
		}
	}
	return n
}

func TestJSONSchema(t *testing.T) {
	im := goldenImage(t)
	t.Run("inspect", func(t *testing.T) {
		r, err := Inspect(im)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		WriteInspect(&b, r, true)
		var s schemaInspect
		if err := strict(b.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		if s.Manifest == nil || !reDigest.MatchString(*s.Manifest) || s.Config == nil || s.Platform == nil || s.Entries == nil || len(s.Layers) != 3 {
			t.Fatalf("inspect: %s", b.Bytes())
		}
		for i, l := range s.Layers {
			if l.Index == nil || *l.Index != i || l.Digest == nil || !reDigest.MatchString(*l.Digest) || l.DiffID == nil ||
				l.MediaType == nil || l.Format == nil || *l.Format == "" || l.CompressedSize == nil || l.UncompressedSize == nil || l.Entries == nil ||
				l.Whiteouts == nil || l.OpaqueDirs == nil {
				t.Errorf("layer %d: %+v", i, l)
			}
		}
	})
	t.Run("ls", func(t *testing.T) {
		var b bytes.Buffer
		if err := List(&b, im.Tree, "/", ListOptions{Recursive: true, JSON: true}); err != nil {
			t.Fatal(err)
		}
		n := jsonLines(t, b.Bytes(), func(line []byte) error {
			var e schemaEntry
			if err := strict(line, &e); err != nil {
				return err
			}
			return checkEntry(&e)
		})
		if n != im.Tree.Len()-1 {
			t.Errorf("%d lines for %d entries", n, im.Tree.Len()-1)
		}
	})
	t.Run("diff", func(t *testing.T) {
		for n := range im.Layers {
			var b bytes.Buffer
			before, _ := overlay.Merge(im.Layers[:n])
			after, _ := overlay.Merge(im.Layers[:n+1])
			if _, err := DiffTrees(&b, before, after, DiffOptions{JSON: true}); err != nil {
				t.Fatal(err)
			}
			jsonLines(t, b.Bytes(), func(line []byte) error {
				var c schemaChange
				if err := strict(line, &c); err != nil {
					return err
				}
				if c.Path == nil || c.Change == nil || !slices.Contains([]string{"added", "removed", "modified", "metadata"}, *c.Change) {
					return fmt.Errorf("bad change")
				}
				if (*c.Change == "added") != (c.Old == nil) || (*c.Change == "removed") != (c.New == nil) {
					return fmt.Errorf("old/new do not match the change")
				}
				for _, f := range c.Fields {
					if !slices.Contains(fieldSet, f) {
						return fmt.Errorf("unknown field name %q", f)
					}
				}
				for _, e := range []*schemaEntry{c.Old, c.New} {
					if e != nil {
						if err := checkEntry(e); err != nil {
							return err
						}
					}
				}
				return nil
			})
		}
	})
	t.Run("history", func(t *testing.T) {
		for _, p := range []string{"etc/secret", "bin/app-link", "srv", "usr/lib/libx.so"} {
			r, err := History(im.Layers, p)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			WriteHistory(&b, r, true)
			var s schemaHistory
			if err := strict(b.Bytes(), &s); err != nil {
				t.Fatal(err)
			}
			if s.Path == nil || len(s.Events) == 0 {
				t.Fatalf("history %s: %s", p, b.Bytes())
			}
			for _, e := range s.Events {
				ok := e.Layer != nil && e.Event != nil && slices.Contains([]string{"added", "re-added", "modified", "metadata", "rewritten", "deleted"}, *e.Event)
				if ok && *e.Event != "deleted" {
					ok = slices.Contains(types, e.Type) && reMode.MatchString(e.Mode) && e.UID != nil && e.GID != nil && e.Size != nil &&
						checkTime(e.Mtime) == nil && (e.Digest == "" || reDigest.MatchString(e.Digest)) && (e.Type != "file" || e.Digest != "")
				}
				if !ok {
					t.Errorf("history %s: bad event %s", p, b.Bytes())
				}
			}
		}
	})
	t.Run("waste", func(t *testing.T) {
		r, err := Waste(im.Layers, im.Tree)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		WriteWaste(&b, r, true, 0)
		var s schemaWaste
		if err := strict(b.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		if s.TotalBytes == nil || s.UncompressedSize == nil || len(s.Entries) == 0 {
			t.Fatalf("waste: %s", b.Bytes())
		}
		for _, e := range s.Entries {
			if e.Path == nil || e.Layer == nil || e.Size == nil || e.HiddenBy == nil || e.How == nil {
				t.Errorf("waste entry missing fields: %s", b.Bytes())
			}
		}
	})
}
