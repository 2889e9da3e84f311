package blobs

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseSource(t *testing.T) {
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "lay:out") // ':' in a bare path
	os.MkdirAll(layoutDir, 0o755)
	os.WriteFile(filepath.Join(layoutDir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	ociTar := writeTar(t, tarMember{name: "./oci-layout", data: []byte("{}")}, tarMember{name: "./index.json", data: []byte("{}")})
	dockerTar := writeTar(t, tarMember{name: "manifest.json", data: []byte("[]")}, tarMember{name: "repositories", data: []byte("{}")})
	otherTar := writeTar(t, tarMember{name: "hello", data: []byte("x")})
	plainDir := t.TempDir()
	notTar := filepath.Join(dir, "not.tar")
	os.WriteFile(notTar, []byte("hello, this is not a tar archive"), 0o644)

	for _, tc := range []struct {
		in      string
		want    Source
		str     string
		wantErr error
	}{
		{in: "oci:/x/img", want: Source{TransportOCI, "/x/img", ""}, str: "oci:/x/img"},
		{in: "oci:/x/img:v1", want: Source{TransportOCI, "/x/img", "v1"}, str: "oci:/x/img:v1"},
		{in: "oci:img:", want: Source{TransportOCI, "img", ""}, str: "oci:img"},
		{in: "oci-archive:a.tar:latest", want: Source{TransportOCIArchive, "a.tar", "latest"}},
		{in: "docker-archive:a.tar:busybox:latest", want: Source{TransportDockerArchive, "a.tar", "busybox:latest"}, str: "docker-archive:a.tar:busybox:latest"},
		{in: "docker-archive:a.tar:@1", want: Source{TransportDockerArchive, "a.tar", "@1"}},
		{in: "docker://alpine", want: Source{TransportDocker, "alpine", ""}, str: "docker://alpine"},
		{in: "docker://quay.io/a/b:1.0", want: Source{TransportDocker, "quay.io/a/b", "1.0"}, str: "docker://quay.io/a/b:1.0"},
		{in: "alpine", want: Source{TransportDocker, "alpine", ""}},
		{in: "alpine:3.20", want: Source{TransportDocker, "alpine", "3.20"}, str: "docker://alpine:3.20"},
		{in: "docker:27-cli", want: Source{TransportDocker, "docker", "27-cli"}},
		{in: "host:5000/a/b@sha256:" + hex64, want: Source{TransportDocker, "host:5000/a/b", "sha256:" + hex64}, str: "docker://host:5000/a/b@sha256:" + hex64},
		{in: "localhost:5000/a:t@sha256:" + hex64, want: Source{TransportDocker, "localhost:5000/a", "t@sha256:" + hex64}, str: "docker://localhost:5000/a:t@sha256:" + hex64},
		{in: "0@A:00000000000000000000000000000000", want: Source{TransportDocker, "0", "A:00000000000000000000000000000000"}, str: "docker://0@A:00000000000000000000000000000000"},
		{in: "[::1]:5000/a:t", want: Source{TransportDocker, "[::1]:5000/a", "t"}},
		{in: layoutDir, want: Source{TransportOCI, layoutDir, ""}},
		{in: ociTar, want: Source{TransportOCIArchive, ociTar, ""}},
		{in: dockerTar, want: Source{TransportDockerArchive, dockerTar, ""}},
		{in: "", wantErr: ErrInvalid},
		{in: "oci:", wantErr: ErrInvalid},
		{in: "oci-archive::x", wantErr: ErrInvalid},
		{in: "docker://", wantErr: ErrInvalid},
		{in: "docker://upper/Case", wantErr: ErrInvalid},
		{in: "containers-storage:alpine", wantErr: ErrUnsupported},
		{in: "dir:/tmp/x", wantErr: ErrUnsupported},
		{in: "./does/not/exist", wantErr: ErrNotFound},
		{in: "/does/not/exist", wantErr: ErrNotFound},
		{in: "Alpine", wantErr: ErrNotFound},
		{in: plainDir, wantErr: ErrInvalid},
		{in: otherTar, wantErr: ErrInvalid},
		{in: notTar, wantErr: ErrInvalid},
		{in: "/dev/null", wantErr: ErrInvalid},
	} {
		got, err := ParseSource(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ParseSource(%q) = %+v, %v; want %v", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if tc.str != "" && got.String() != tc.str {
			t.Errorf("String(%q) = %q, want %q", tc.in, got.String(), tc.str)
		}
		// String output parses back to the same source (skopeo's syntax
		// cannot round-trip a path containing ':').
		if strings.Contains(got.Path, ":") && got.Transport != TransportDocker {
			continue
		}
		if back, err := ParseSource(got.String()); err != nil || back != got {
			t.Errorf("round trip %q → %q → %+v, %v", tc.in, got.String(), back, err)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// A bare path is checked as a whole before it is read as a registry
// reference, so a file named like an image wins.
func TestBarePathBeatsRegistry(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	l := newLayout(t)
	os.Rename(l.dir, filepath.Join(dir, "alpine:3.20"))
	src, err := ParseSource("alpine:3.20")
	if err != nil || src.Transport != TransportOCI || src.Path != "alpine:3.20" {
		t.Fatalf("%+v %v", src, err)
	}
}

func TestDetectSymlinkedMember(t *testing.T) {
	// A docker archive whose manifest.json is a symlink is still detected.
	p := writeTar(t, tarMember{name: "real.json", data: []byte("[]")}, tarMember{name: "manifest.json", typ: tar.TypeSymlink, link: "real.json"})
	if src, err := ParseSource(p); err != nil || src.Transport != TransportDockerArchive {
		t.Fatal(src, err)
	}
}

func TestParsePlatform(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ocispec.Platform
		err  bool
	}{
		{in: "linux/amd64", want: ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{in: "linux/arm64/v8", want: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{in: "Linux/ARM/V7", want: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{in: "linux/x86_64", want: ocispec.Platform{OS: "linux", Architecture: "amd64"}},
		{in: "linux/aarch64", want: ocispec.Platform{OS: "linux", Architecture: "arm64"}},
		{in: "linux/armhf", want: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{in: "linux/armel", want: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{in: "linux/i686", want: ocispec.Platform{OS: "linux", Architecture: "386"}},
		{in: "linux", err: true},
		{in: "", err: true},
		{in: "linux/", err: true},
		{in: "/amd64", err: true},
		{in: "linux/arm/v7/x", err: true},
		{in: "linux/ amd64", err: true},
		{in: "linux//v7", err: true},
	} {
		got, err := ParsePlatform(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParsePlatform(%q) = %+v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || FormatPlatform(got) != FormatPlatform(tc.want) {
			t.Errorf("ParsePlatform(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestPlatformScore(t *testing.T) {
	p := func(s string) ocispec.Platform { q, _ := ParsePlatform(s); return q }
	for _, tc := range []struct {
		want, have string
		score      int
	}{
		{"linux/amd64", "linux/amd64", 3},
		{"linux/arm64/v8", "linux/arm64/v8", 3},
		{"linux/arm64/v8", "linux/arm64", 2},
		{"linux/arm64", "linux/arm64/v8", 2},
		{"linux/arm/v7", "linux/arm", 1},
		{"linux/arm/v7", "linux/arm/v6", 0},
		{"linux/arm", "linux/arm/v7", 0},
		{"linux/amd64", "windows/amd64", 0},
		{"linux/amd64", "linux/arm64", 0},
	} {
		if got := platformScore(p(tc.want), p(tc.have)); got != tc.score {
			t.Errorf("platformScore(%s, %s) = %d, want %d", tc.want, tc.have, got, tc.score)
		}
	}
}

func TestHostPlatform(t *testing.T) {
	h := HostPlatform()
	if h.OS == "" || h.Architecture == "" {
		t.Fatal(h)
	}
	for in, want := range map[string]string{
		"processor\t: 0\nCPU architecture: 7\n": "v7",
		"CPU architecture: 6TEJ\n":              "v6",
		"CPU architecture:\t5TE\n":              "v5",
		"CPU architecture: 8\n":                 "v7",
		"model name: foo\n":                     "v7",
	} {
		if got := armVariant(stringsReader(in)); got != want {
			t.Errorf("armVariant(%q) = %s, want %s", in, got, want)
		}
	}
}
