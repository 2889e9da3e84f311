package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/explore"
	"github.com/ocimount/ocimount/internal/loader"
)

// The explorer's tree for every layer of the forensic fixture is what
// the commands print: its rows other than removed ones are `ls -R --json
// --layers ..N`, its marked rows (in order) are `diff --layer N --json`.
func TestExploreTreeMatchesCommands(t *testing.T) {
	f := images(t)
	src := "oci:" + f.Dir + "/gzip:latest"
	cache := t.TempDir()
	im, err := loader.Load(context.Background(), blobs.Source{Transport: blobs.TransportOCI, Path: f.Dir + "/gzip", Ref: "latest"},
		blobs.Options{}, loader.Options{CacheDir: cache, KeepEntries: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	layers := im.Tree.Layers()
	letter := map[string]string{"added": "A", "removed": "D", "modified": "M", "metadata": "m"}
	for n := range layers {
		v, err := explore.ComputeLayer(layers, im.Tree, n)
		if err != nil {
			t.Fatal(err)
		}
		var paths, marks []string
		for _, r := range explore.Flatten(v, false) {
			if r.Change != explore.Removed {
				paths = append(paths, r.Path)
			}
			if r.Change != explore.Unchanged {
				marks = append(marks, r.Change.Letter()+" "+r.Path)
			}
		}
		var wantPaths, wantMarks []string
		sc := bufio.NewScanner(strings.NewReader(ocimountOK(t, "ls", "-R", "--json", "--cache-dir", cache, "--layers", fmt.Sprintf("..%d", n), src)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e struct{ Path string }
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			wantPaths = append(wantPaths, e.Path)
		}
		sc = bufio.NewScanner(strings.NewReader(ocimountOK(t, "diff", "--json", "--cache-dir", cache, "--layer", fmt.Sprint(n), src)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e struct{ Path, Change string }
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if e.Path != "." { // the pane has no row for the root
				wantMarks = append(wantMarks, letter[e.Change]+" "+e.Path)
			}
		}
		if len(wantMarks) == 0 || len(wantPaths) < 10 {
			t.Fatalf("layer %d: %d marks, %d paths: the fixture changed?", n, len(wantMarks), len(wantPaths))
		}
		if !slices.Equal(paths, wantPaths) {
			t.Errorf("layer %d: explore's tree (%d rows) differs from ls -R --layers ..%d (%d)", n, len(paths), n, len(wantPaths))
		}
		if !slices.Equal(marks, wantMarks) {
			t.Errorf("layer %d: explore's marks (%d) differ from diff --layer %d (%d)", n, len(marks), n, len(wantMarks))
		}
	}
}

// tmuxSession is a detached tmux server on a private socket running one
// command in a window of a fixed size; it is killed at cleanup.
type tmuxSession struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T, w, h int, command string) *tmuxSession {
	s := &tmuxSession{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	s.run("-f", "/dev/null", "new-session", "-d", "-s", "x", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), command)
	t.Cleanup(func() { exec.Command("tmux", "-S", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxSession) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *tmuxSession) keys(keys ...string) {
	s.run(append([]string{"send-keys", "-t", "x"}, keys...)...)
}

func (s *tmuxSession) capture() string { return s.run("capture-pane", "-p", "-t", "x") }

// waitScreen polls the pane until cond holds (bounded: 60 s).
func (s *tmuxSession) waitScreen(what string, cond func(string) bool) string {
	s.t.Helper()
	var scr string
	if !waitFor(60*time.Second, func() bool { scr = s.capture(); return cond(scr) }) {
		s.t.Fatalf("waiting for %s; the screen:\n%s", what, scr)
	}
	return scr
}

func has(sub ...string) func(string) bool {
	return func(s string) bool {
		for _, x := range sub {
			if !strings.Contains(s, x) {
				return false
			}
		}
		return true
	}
}

// A real terminal: `ocimount explore` under tmux opens the multi-layer
// fixture, moves to the layer that deletes data/random.bin and shows it
// marked removed, filters, opens its details (with its history), and q
// leaves the terminal as it was (the shell's output back, alternate
// screen off, cursor shown).
func TestExploreTmux(t *testing.T) {
	f := images(t)
	requireIntegration(t, "tmux")
	bin := ocimountBin(t)
	cmd := fmt.Sprintf("printf 'before explore\\n'; %s explore --cache-dir %s oci:%s/gzip:latest; echo \"explore exited $?\"; sleep 600",
		bin, t.TempDir(), f.Dir)
	s := newTmux(t, 100, 30, cmd)
	s.waitScreen("the first screen", has("ocimount explore", "TREE after layer 5", "busybox", "GNU tar layer"))

	s.keys("Up", "Up", "Up") // layer 2, "deletions"
	scr := s.waitScreen("layer 2", has("TREE after layer 2"))
	if !strings.Contains(scr, "deletions") {
		t.Errorf("layer 2's created-by not shown:\n%s", scr)
	}
	s.keys("/", "random.bin", "Enter")
	// Wait for the marked row itself, not for the filter's text: the
	// prompt echoes "random.bin" before Enter has been handled.
	markedD := func(scr string) bool {
		for _, l := range strings.Split(scr, "\n") {
			if strings.Contains(l, "random.bin") && strings.HasPrefix(strings.TrimLeft(l, " >"), "D ") {
				return true
			}
		}
		return false
	}
	s.waitScreen("data/random.bin marked D in the filtered tree of layer 2", func(scr string) bool {
		return has(`filter "random.bin"`)(scr) && markedD(scr)
	})
	s.keys("End", "Enter")
	scr = s.waitScreen("the details", has("DETAILS", "change   removed in layer 2", "history of /data/random.bin", "deleted"))
	if !strings.Contains(scr, "whiteout") {
		t.Errorf("history does not say how it was deleted:\n%s", scr)
	}

	s.keys("Escape")
	s.waitScreen("the tree again", has("TREE after layer 2"))
	s.keys("q")
	scr = s.waitScreen("the shell again", has("explore exited 0"))
	if !strings.Contains(scr, "before explore") || strings.Contains(scr, "TREE after") {
		t.Fatalf("terminal not restored after q:\n%s", scr)
	}
	if got := strings.TrimSpace(s.run("display-message", "-p", "-t", "x", "#{alternate_on} #{cursor_flag}")); got != "0 1" {
		t.Errorf("after q: alternate_on cursor_flag = %q, want \"0 1\"", got)
	}
}

// explore refuses a non-terminal stdout with a message that names the
// commands to use instead.
func TestExploreNotATerminal(t *testing.T) {
	f := images(t)
	r := run(t, time.Minute, "explore", "oci:"+f.Dir+"/gzip:latest")
	if r.code == 0 || !strings.Contains(r.stderr, "needs a terminal") || !strings.Contains(r.stderr, "diff --layer N") || !strings.Contains(r.stderr, "--json") {
		t.Fatalf("%s", r)
	}
}

// layerDigests lists the layer blobs of an OCI layout's first manifest.
func layerDigests(t *testing.T, layout string) (map[string]int64, int64) {
	var idx ocispec.Index
	var man ocispec.Manifest
	read := func(p string, v any) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	read(filepath.Join(layout, "index.json"), &idx)
	read(filepath.Join(layout, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &man)
	out := map[string]int64{}
	var total int64
	for _, l := range man.Layers {
		out[l.Digest.String()] = l.Size
		total += l.Size
	}
	return out, total
}

// countingProxy forwards to a registry and counts the bytes of the given
// blobs it serves.
type countingProxy struct {
	Host  string
	mu    sync.Mutex
	bytes int64
}

type countingBody struct {
	io.ReadCloser
	p *countingProxy
}

func (b countingBody) Read(x []byte) (int, error) {
	n, err := b.ReadCloser.Read(x)
	b.p.mu.Lock()
	b.p.bytes += int64(n)
	b.p.mu.Unlock()
	return n, err
}

func (p *countingProxy) fetched() int64 { p.mu.Lock(); defer p.mu.Unlock(); return p.bytes }

func startCountingProxy(t *testing.T, upstream string, blobs map[string]int64) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{Host: l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.ModifyResponse = func(r *http.Response) error {
		i := strings.Index(r.Request.URL.Path, "/blobs/")
		if i >= 0 && r.Request.Method == http.MethodGet {
			if _, ok := blobs[r.Request.URL.Path[i+len("/blobs/"):]]; ok {
				r.Body = countingBody{r.Body, p}
			}
		}
		return nil
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// A registry image with its indexes published, empty cache: the first
// full screen (tree and the last layer's marks) comes with under 3 % of
// the image's layer bytes fetched.
func TestExploreRegistryFirstScreen(t *testing.T) {
	requireIntegration(t, "tmux", "docker-registry", "skopeo")
	f := images(t)
	reg, repo := indexedRepo(t)
	digests, total := layerDigests(t, f.Dir+"/gzip")
	p := startCountingProxy(t, reg.Host, digests)
	cache := t.TempDir()
	home := t.TempDir()
	cmd := fmt.Sprintf("HOME=%s DOCKER_CONFIG=%s/docker %s explore --cache-dir %s %s/%s; echo \"explore exited $?\"; sleep 600",
		home, home, ocimountBin(t), cache, p.Host, repo)
	s := newTmux(t, 120, 40, cmd)
	s.waitScreen("the first full screen", func(scr string) bool {
		return strings.Contains(scr, "TREE after layer 5 (whole image)") && !strings.Contains(scr, "marking") &&
			!strings.Contains(scr, "entry tables loading")
	})
	got := p.fetched()
	t.Logf("first screen after %d of %d layer bytes (%.2f%%)", got, total, 100*float64(got)/float64(total))
	if got*100 >= 3*total {
		t.Errorf("fetched %d of %d layer bytes before the first screen (>= 3%%)", got, total)
	}
	// The counter sees layer reads: a quick look fetches the span (range
	// chunk) the file lies in.
	s.keys("/", "etc/hostname", "Enter")
	s.waitScreen("the filtered tree", has(`filter "etc/hostname"`, "hostname"))
	s.keys("End", "Enter")
	s.waitScreen("the quick look", has("CONTENT", "ocimount-test"))
	after := p.fetched()
	t.Logf("the quick look of etc/hostname fetched %d bytes", after-got)
	if after <= got {
		t.Errorf("a quick look fetched nothing: the proxy is not in the path")
	}
	s.keys("q")
	s.waitScreen("the shell again", has("explore exited 0"))
}
