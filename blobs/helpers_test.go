package blobs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarOf builds an uncompressed tar of regular files, in name order.
func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(1, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// layout writes an OCI image layout by hand.
type layout struct {
	t   testing.TB
	dir string
}

func newLayout(t testing.TB) *layout {
	t.Helper()
	l := &layout{t: t, dir: t.TempDir()}
	l.write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	return l
}

func (l *layout) write(name string, data []byte) {
	l.t.Helper()
	p := filepath.Join(l.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// blob stores data and returns its descriptor.
func (l *layout) blob(mt string, data []byte) ocispec.Descriptor {
	l.t.Helper()
	d := digest.FromBytes(data)
	l.write("blobs/sha256/"+d.Encoded(), data)
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func (l *layout) path(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", string(d.Algorithm()), d.Encoded())
}

func (l *layout) index(v any) {
	l.t.Helper()
	l.write("index.json", mustJSON(l.t, v))
}

// img describes a test image.
type img struct {
	plat   ocispec.Platform
	layers [][]byte // layer blobs as stored
	diffs  [][]byte // uncompressed layers (default: layers)
	mts    []string // layer media types (default: OCI tar)
	// manifestMT/configMT "" → OCI; "-" → field omitted
	manifestMT, configMT string
	configExtra          string // e.g. author, to make configs differ
}

type built struct {
	manifest ocispec.Descriptor
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor
	diffIDs  []digest.Digest
}

func (l *layout) image(im img) built {
	l.t.Helper()
	var b built
	if im.diffs == nil {
		im.diffs = im.layers
	}
	for i, data := range im.layers {
		mt := ocispec.MediaTypeImageLayer
		if i < len(im.mts) {
			mt = im.mts[i]
		}
		b.layers = append(b.layers, l.blob(mt, data))
		b.diffIDs = append(b.diffIDs, digest.FromBytes(im.diffs[i]))
	}
	cfg := ocispec.Image{Platform: im.plat, Author: im.configExtra, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: b.diffIDs}}
	cmt := ocispec.MediaTypeImageConfig
	if im.configMT != "" {
		cmt = im.configMT
	}
	b.config = l.blob(cmt, mustJSON(l.t, cfg))
	m := map[string]any{"schemaVersion": 2, "config": b.config, "layers": b.layers}
	switch im.manifestMT {
	case "":
		m["mediaType"] = ocispec.MediaTypeImageManifest
	case "-":
	default:
		m["mediaType"] = im.manifestMT
	}
	mmt := ocispec.MediaTypeImageManifest
	if im.manifestMT != "" && im.manifestMT != "-" {
		mmt = im.manifestMT
	}
	b.manifest = l.blob(mmt, mustJSON(l.t, m))
	p := im.plat
	b.manifest.Platform = &p
	return b
}

func indexOf(ds ...ocispec.Descriptor) ocispec.Index {
	return ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: ds}
}

func withRef(d ocispec.Descriptor, ref string) ocispec.Descriptor {
	d.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	return d
}

func noPlatform(d ocispec.Descriptor) ocispec.Descriptor { d.Platform = nil; return d }

// tarDir archives a directory tree into a new file; prefix is prepended to
// member names ("./" as GNU tar writes them with `tar -C dir .`).
func tarDir(t testing.TB, dir, prefix string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = prefix + filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tarMember is one entry for writeTar.
type tarMember struct {
	name, link string
	typ        byte
	data       []byte
}

func writeTar(t testing.TB, ms ...tarMember) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "archive.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: typ, Mode: 0o644, ModTime: time.Unix(1, 0)}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(m.data))
		}
		if typ == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// readBlob reads a whole Blob through ReadAt.
func readBlob(t testing.TB, b Blob) []byte {
	t.Helper()
	buf := make([]byte, b.Size())
	n, err := b.ReadAt(buf, 0)
	if n != len(buf) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt: n=%d of %d, err=%v", n, len(buf), err)
	}
	return buf
}

func mustContain(t testing.TB, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error containing %q, got nil", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

var (
	linuxAmd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	layerA     = map[string]string{"etc/a": "A\n"}
	layerB     = map[string]string{"etc/b": "BB\n"}
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
