// Command tocimage writes an OCI layout (tag "latest") with one layer per
// tar file, encoded as plain gzip, eStargz or zstd:chunked by
// stargz-snapshotter's own writer (github.com/containerd/stargz-snapshotter/estargz),
// with the annotations that point at their TOCs. It makes the images that
// scripts/bench-registry.sh measures TOC mounts on; ocimount itself never
// writes these formats.
//
//	tocimage -format estargz|zstd-chunked|gzip -out DIR LAYER.tar...
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type zstdChunked struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func main() {
	format := flag.String("format", "estargz", "estargz, zstd-chunked or gzip")
	out := flag.String("out", "", "output OCI layout directory")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		log.Fatal("usage: tocimage -format F -out DIR LAYER.tar...")
	}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, p := range flag.Args() {
		tb, err := os.ReadFile(p)
		if err != nil {
			log.Fatal(err)
		}
		var blob []byte
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip}
		diffID := digest.FromBytes(tb)
		switch *format {
		case "gzip":
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(tb)
			zw.Close()
			blob = b.Bytes()
		case "estargz", "zstd-chunked":
			ann := map[string]string{}
			opts := []estargz.Option{}
			if *format == "zstd-chunked" {
				d.MediaType = ocispec.MediaTypeImageLayerZstd
				opts = append(opts, estargz.WithCompression(zstdChunked{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: ann}, &zstdchunked.Decompressor{}}))
			}
			eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tb), 0, int64(len(tb))), opts...)
			if err != nil {
				log.Fatalf("%s: %v", p, err)
			}
			if blob, err = io.ReadAll(eb); err != nil {
				log.Fatalf("%s: %v", p, err)
			}
			eb.Close()
			diffID = eb.DiffID()
			if *format == "estargz" {
				ann[estargz.TOCJSONDigestAnnotation] = eb.TOCDigest().String()
			}
			d.Annotations = ann
		default:
			log.Fatalf("unknown format %q", *format)
		}
		bd := write(*out, blob)
		d.Digest, d.Size = bd.Digest, bd.Size
		layers = append(layers, d)
		diffIDs = append(diffIDs, diffID)
		fmt.Fprintf(os.Stderr, "%s: %d bytes -> %d (%s)\n", p, len(tb), len(blob), *format)
	}
	created := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg := ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}}
	cb, _ := json.Marshal(cfg)
	cd := write(*out, cb)
	cd.MediaType = ocispec.MediaTypeImageConfig
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
	mb, _ := json.Marshal(m)
	md := write(*out, mb)
	md.MediaType = ocispec.MediaTypeImageManifest
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "latest"}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	ib, _ := json.Marshal(idx)
	must(os.WriteFile(filepath.Join(*out, "index.json"), ib, 0o644))
	must(os.WriteFile(filepath.Join(*out, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
}

func write(dir string, b []byte) ocispec.Descriptor {
	d := digest.FromBytes(b)
	p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	must(os.MkdirAll(filepath.Dir(p), 0o755))
	must(os.WriteFile(p, b, 0o644))
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
