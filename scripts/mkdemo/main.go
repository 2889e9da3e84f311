// Command mkdemo writes the small multi-layer demo image `make demo` mounts:
// an OCI layout with a gzip, a zstd and a plain tar layer that exercise
// whiteouts, an opaque directory, a symlinked parent, hardlinks, xattrs and
// a file large enough to span several gzip checkpoints. It is generated
// rather than checked in so the repository stays small and the demo shows
// every layer format without external tools.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var mtime = time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)

type entry struct {
	hdr  tar.Header
	body string
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}}
}
func file(name, body string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
}
func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}
func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

func mkTar(es ...entry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := e.hdr
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mkdemo DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mkdemo:", err)
		os.Exit(1)
	}
}

func write(out string) error {
	var numbers strings.Builder
	for i := 0; numbers.Len() < 12<<20; i++ {
		fmt.Fprintf(&numbers, "line %d: the quick brown fox jumps over the lazy dog\n", i)
	}
	capFile := file("usr/bin/ping-like", "#!/bin/sh\necho pretend ping\n", 0o755)
	capFile.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"SCHILY.xattr.user.demo":           "hello from an xattr",
	}
	layers := []struct {
		media string
		tar   []byte
		by    string
	}{
		{ocispec.MediaTypeImageLayerGzip, mkTar(
			dir("etc"), file("etc/os-release", "NAME=\"ocimount demo\"\nID=demo\nVERSION_ID=1\n", 0o644),
			file("etc/secret.txt", "a secret that layer 2 deletes\n", 0o600),
			dir("usr"), dir("usr/lib"), dir("usr/bin"), symlink("lib", "usr/lib"),
			file("usr/lib/libdemo.txt", "a library\n", 0o644),
			dir("app"), file("app/v1.txt", "app version 1\n", 0o644),
			dir("data"), file("data/numbers.txt", numbers.String(), 0o644),
		), "base: etc, usr, app v1, 12 MiB of text"},
		{ocispec.MediaTypeImageLayerZstd, mkTar(
			file("etc/.wh.secret.txt", "", 0o644),
			hardlink("etc/os-release.link", "etc/os-release"),
			capFile,
			file("app/v2.txt", "app version 2\n", 0o644),
		), "delete etc/secret.txt, hardlink, xattrs, app v2"},
		{ocispec.MediaTypeImageLayer, mkTar(
			file("app/.wh..wh..opq", "", 0o644),
			file("app/v3.txt", "app version 3 (opaque: v1 and v2 are gone)\n", 0o644),
			file("lib/through-symlink.txt", "written to lib/, lands in usr/lib/\n", 0o644),
		), "replace app/ (opaque), add through the lib symlink"},
	}

	blobsDir := filepath.Join(out, "blobs", "sha256")
	if err := os.MkdirAll(blobsDir, 0o755); err != nil {
		return err
	}
	put := func(b []byte) (digest.Digest, error) {
		d := digest.FromBytes(b)
		return d, os.WriteFile(filepath.Join(blobsDir, d.Encoded()), b, 0o644)
	}
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	var history []ocispec.History
	for _, l := range layers {
		blob := l.tar
		switch l.media {
		case ocispec.MediaTypeImageLayerGzip:
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(l.tar)
			zw.Close()
			blob = b.Bytes()
		case ocispec.MediaTypeImageLayerZstd:
			zw, _ := zstd.NewWriter(nil)
			blob = zw.EncodeAll(l.tar, nil)
		}
		d, err := put(blob)
		if err != nil {
			return err
		}
		descs = append(descs, ocispec.Descriptor{MediaType: l.media, Digest: d, Size: int64(len(blob))})
		diffIDs = append(diffIDs, digest.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256(l.tar))))
		history = append(history, ocispec.History{Created: &mtime, CreatedBy: l.by})
	}
	cfg, _ := json.Marshal(ocispec.Image{
		Created:  &mtime,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin:/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		History:  history,
	})
	cd, err := put(cfg)
	if err != nil {
		return err
	}
	man, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
		Layers:    descs,
	})
	md, err := put(man)
	if err != nil {
		return err
	}
	idx, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(man)),
			Annotations: map[string]string{ocispec.AnnotationRefName: "demo"},
		}},
	})
	if err := os.WriteFile(filepath.Join(out, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
