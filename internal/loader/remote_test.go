package loader

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/ocimount/ocimount/blobs"
)

// countingRT counts layer blob GETs: whole-blob streams and range reads.
type countingRT struct {
	layers                 map[string]bool // layer digests
	streams, ranges, other atomic.Int64
}

func (c *countingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	_, dg, _ := strings.Cut(req.URL.Path, "/blobs/")
	switch {
	case !c.layers[dg] || req.Method != http.MethodGet:
		c.other.Add(1)
	case req.Header.Get("Range") != "":
		c.ranges.Add(1)
	default:
		c.streams.Add(1)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// pushLayout copies the layout's only image to an in-process registry.
func pushLayout(t *testing.T, dir string) blobs.Source {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := ii.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/test/img:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return blobs.Source{Transport: blobs.TransportDocker, Path: host + "/test/img", Ref: "v1"}
}

// A registry image mounts to the same tree as its local layout: first by
// streaming each layer once, then — after its indexes are published —
// on an empty cache with no full pass over any layer.
func TestRemoteImage(t *testing.T) {
	local, dir := image(t)
	li := load(t, local, Options{})
	want := dump(t, li.Tree)
	layers := map[string]bool{}
	for _, l := range li.Image.Layers {
		layers[string(l.Descriptor.Digest)] = true
	}
	src := pushLayout(t, dir)
	ctx := context.Background()
	loadRemote := func(rt *countingRT, o Options) *Image {
		t.Helper()
		im, err := Load(ctx, src, blobs.Options{Remote: blobs.RemoteOptions{Transport: rt, ChunkDir: o.CacheDir + "/chunks", Logf: t.Logf}}, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() })
		return im
	}

	rt := &countingRT{layers: layers}
	cold := loadRemote(rt, Options{CacheDir: t.TempDir(), KeepEntries: true})
	if got := dump(t, cold.Tree); got != want {
		t.Fatalf("registry tree differs from the layout's:\n%s\nwant:\n%s", got, want)
	}
	if n := rt.streams.Load(); n != 3 {
		t.Errorf("cold load streamed %d blobs, want 3 (one pass per layer)", n)
	}

	// Publish the indexes.
	order := make([]digest.Digest, len(cold.Indexes))
	data := map[digest.Digest][]byte{}
	for i, ix := range cold.Indexes {
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		order[i] = cold.Image.Layers[i].Descriptor.Digest
		data[order[i]] = b
	}
	if _, err := cold.Image.Remote.PushIndexes(ctx, order, data); err != nil {
		t.Fatal(err)
	}

	// Another machine: empty cache, published indexes.
	rt = &countingRT{layers: layers}
	var used digest.Digest
	var nUsed, nOffered int
	fresh := t.TempDir()
	lazy := loadRemote(rt, Options{CacheDir: fresh, RemoteIndex: func(a digest.Digest, n, offered int) { used, nUsed, nOffered = a, n, offered }})
	if used == "" {
		t.Fatal("published indexes were not used")
	}
	if nUsed != len(order) || nOffered != len(order) {
		t.Errorf("RemoteIndex told %d of %d layer indexes used, want %d of %d", nUsed, nOffered, len(order), len(order))
	}
	if n := rt.streams.Load(); n != 0 {
		t.Fatalf("with published indexes, %d layers were streamed whole", n)
	}
	if n := rt.ranges.Load(); n != 0 {
		t.Fatalf("%d range reads before any file was read", n)
	}
	for i, l := range lazy.Tree.Layers() {
		if !l.CheckHeaders {
			t.Errorf("layer %d from a published index is served without tar header checks", i)
		}
	}
	if got := dump(t, lazy.Tree); got != want {
		t.Fatalf("lazily read tree differs:\n%s\nwant:\n%s", got, want)
	}
	if rt.ranges.Load() == 0 {
		t.Fatal("reading files made no range requests")
	}

	// A remount on that machine reads no layer bytes and no indexes.
	rt = &countingRT{layers: layers}
	warm := loadRemote(rt, Options{CacheDir: fresh})
	if n := rt.streams.Load() + rt.ranges.Load(); n != 0 {
		t.Fatalf("warm remount made %d blob requests", n)
	}
	for i, l := range warm.Tree.Layers() {
		if !l.CheckHeaders {
			t.Errorf("warm remount: layer %d (published index, cached) is served without tar header checks", i)
		}
	}
	// Its reads come from the range cache on disk.
	if got := dump(t, warm.Tree); got != want {
		t.Fatal("warm tree differs")
	}
	if n := rt.ranges.Load(); n != 0 {
		t.Errorf("warm reads made %d range requests; the range cache should have served them", n)
	}

	// --no-remote-index ignores what is published.
	rt = &countingRT{layers: layers}
	loadRemote(rt, Options{CacheDir: t.TempDir(), NoRemoteIndex: true})
	if n := rt.streams.Load(); n != 3 {
		t.Errorf("NoRemoteIndex streamed %d layers, want 3", n)
	}
}
