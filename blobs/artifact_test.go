package blobs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// countingBody counts the bytes read from a response body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pushArtifact publishes an index artifact of the fixture's image with
// the given layer descriptors (blobs uploaded by the caller), found
// through the referrers tag.
func pushArtifact(t *testing.T, f *regFixture, layers []ocispec.Descriptor, created string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	preg, err := dialRegistry(ctx, f.src, RemoteOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	empty := []byte("{}")
	if err := preg.upload(ctx, empty); err != nil {
		t.Fatal(err)
	}
	md := f.image.Remote.ManifestDescriptor()
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ArtifactTypeIndex,
		Config:      ocispec.Descriptor{MediaType: mediaTypeEmpty, Digest: digest.FromBytes(empty), Size: 2},
		Subject:     &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: md.Digest, Size: md.Size},
		Layers:      layers,
		Annotations: map[string]string{ocispec.AnnotationCreated: created},
	}
	m.SchemaVersion = 2
	data, _ := json.Marshal(m)
	dg := digest.FromBytes(data)
	if _, err := preg.do(ctx, http.MethodPut, preg.url("manifests", string(dg)), ocispec.MediaTypeImageManifest, data); err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ArtifactTypeIndex, Digest: dg, Size: int64(len(data)), Annotations: m.Annotations}
	if err := preg.addFallbackReferrer(ctx, md.Digest, desc); err != nil {
		t.Fatal(err)
	}
	return dg
}

// Published indexes are never fetched whole when their size is out of
// reason: a descriptor over the cap is refused before any request, a blob
// longer than its descriptor is read no further than the descriptor says,
// and every artifact or index passed over is logged with the reason.
func TestIndexArtifactSizesAndReasons(t *testing.T) {
	f := newRegFixture(t, false, "")
	ctx := context.Background()
	ld := f.image.Layers[0].Descriptor.Digest
	var mu sync.Mutex
	var logs []string
	f.image.Remote.reg.logf = func(format string, a ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	logged := func(sub string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logs {
			if strings.Contains(l, sub) {
				return true
			}
		}
		return false
	}
	var read atomic.Int64
	f.rt.base = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil && strings.Contains(req.URL.Path, "/blobs/") {
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &read}
		}
		return resp, err
	})
	want := map[digest.Digest]int64{ld: int64(len(f.blob))}
	preg, err := dialRegistry(ctx, f.src, RemoteOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 24<<20) // more than 16 MiB + twice the 2.6 MiB layer
	if err := preg.upload(ctx, big); err != nil {
		t.Fatal(err)
	}
	bigDesc := ocispec.Descriptor{MediaType: MediaTypeLayerIndex, Digest: digest.FromBytes(big), Size: int64(len(big)),
		Annotations: map[string]string{AnnotationLayerDigest: string(ld)}}

	t.Run("over-the-cap", func(t *testing.T) {
		art := pushArtifact(t, f, []ocispec.Descriptor{bigDesc}, "2001-01-01T00:00:00Z")
		read.Store(0)
		got, _, err := f.image.Remote.FetchIndexes(ctx, want)
		if err != nil || len(got) != 0 {
			t.Fatalf("got %d indexes, %v", len(got), err)
		}
		if n := read.Load(); n != 0 {
			t.Errorf("read %d bytes of an index whose descriptor is over the cap", n)
		}
		if !logged(string(art)) || !logged("not fetched: its descriptor says 25165824 bytes") {
			t.Errorf("no reason logged: %q", logs)
		}
	})
	t.Run("longer-than-its-descriptor", func(t *testing.T) {
		lying := bigDesc
		lying.Size = 1000
		pushArtifact(t, f, []ocispec.Descriptor{lying}, "2002-01-01T00:00:00Z")
		read.Store(0)
		got, _, err := f.image.Remote.FetchIndexes(ctx, want)
		if err != nil || len(got) != 0 {
			t.Fatalf("got %d indexes, %v", len(got), err)
		}
		if n := read.Load(); n > 64<<10 {
			t.Errorf("read %d bytes of a blob whose descriptor says 1000", n)
		}
		if !logged("descriptor says 1000") {
			t.Errorf("no reason logged: %q", logs)
		}
	})
	t.Run("other-layers", func(t *testing.T) {
		other := digest.FromString("another image's layer")
		payload := []byte("OCIMIDX\x00 of another layer")
		if err := preg.upload(ctx, payload); err != nil {
			t.Fatal(err)
		}
		art := pushArtifact(t, f, []ocispec.Descriptor{{MediaType: MediaTypeLayerIndex, Digest: digest.FromBytes(payload), Size: int64(len(payload)),
			Annotations: map[string]string{AnnotationLayerDigest: string(other)}}}, time.Now().UTC().Format(time.RFC3339))
		got, _, err := f.image.Remote.FetchIndexes(ctx, want)
		if err != nil || len(got) != 0 {
			t.Fatalf("got %d indexes, %v", len(got), err)
		}
		if !logged("index artifact " + string(art) + ": skipped: it has indexes of other layers (" + string(other)) {
			t.Errorf("no reason logged: %q", logs)
		}
	})
	t.Run("no-layers", func(t *testing.T) {
		art := pushArtifact(t, f, nil, time.Now().UTC().Add(time.Hour).Format(time.RFC3339))
		got, _, err := f.image.Remote.FetchIndexes(ctx, want)
		if err != nil || len(got) != 0 {
			t.Fatalf("got %d indexes, %v", len(got), err)
		}
		if !logged("index artifact " + string(art) + ": skipped") {
			t.Errorf("an artifact with no layer indexes was passed over without a word: %q", logs)
		}
	})
}
