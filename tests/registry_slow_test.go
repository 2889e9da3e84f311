package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Registry reads that never hang and always say why (issue 16).

// timing is $OCIMOUNT_REGISTRY_TIMING for the mount's server: the
// registry timeouts, made short so that these tests take seconds.
func timing(v string) []string { return []string{"OCIMOUNT_REGISTRY_TIMING=" + v} }

// unmountAndWait unmounts mnt and waits for its server to exit: a server
// that is still finishing fetches (a span's decode goes on after the read
// that started it) may write into the cache dir after the unmount.
func unmountAndWait(t *testing.T, mnt string) {
	t.Helper()
	pids := serverPIDs(t, mnt)
	forceUnmount(t, mnt)
	if !waitFor(20*time.Second, func() bool {
		for _, pid := range pids {
			if pidAlive(pid) {
				return false
			}
		}
		return true
	}) {
		t.Errorf("the server of %s (pids %v) is still running 20 s after the unmount", mnt, pids)
	}
}

// TestRegistrySlowResponses: a range response that trickles (1 KB/s) or
// sends its headers and then nothing is abandoned on the floor-rate
// schedule, retried, and the read fails with EIO and a log line naming the
// blob and the range, in seconds; reads of other layers meanwhile do not
// wait for it.
func TestRegistrySlowResponses(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	f := images(t)
	proxy := startFaultProxy(t, reg.Host, startBlobStore(t, f.Dir+"/gzip"))
	t.Cleanup(func() { proxy.set(passThrough, 0) })
	const file = "data/random2.bin"
	const limit = 15 * time.Second
	for _, c := range []struct {
		mode faultMode
		says string
	}{{trickle, "too slow"}, {headersOnly, "stalled"}} {
		t.Run(c.mode.String(), func(t *testing.T) {
			proxy.set(passThrough, 0)
			// A 512 KiB chunk is due 1 s after its request.
			mnt, cache := remoteMount(t, timing("idle=500ms,budget=500ms,rate=1M,memory=1m"), proxy.Host+"/"+repo)
			layer := statusOf(t, mnt).Layers[2].Digest
			proxy.setFor(c.mode, -1, layer)
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				s, err := hashFile(filepath.Join(mnt, file))
				if err == nil && s != ref.Nodes[file].SHA256 {
					err = fmt.Errorf("WRONG BYTES")
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(limit):
				proxy.set(passThrough, 0) // free the read
				err = <-done
				t.Fatalf("a read whose range responses are %s still waits after %v (then: %v); log:\n%s", c.mode, limit, err, readLog(cache))
			}
			took := time.Since(start)
			t.Logf("read ended after %v: %v", took.Round(time.Millisecond), err)
			if err == nil || !strings.Contains(err.Error(), "input/output error") {
				t.Fatalf("read: %v, want EIO", err)
			}
			log := readLog(cache)
			found := false
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "read failed") && strings.Contains(l, layer+" bytes ") && strings.Contains(l, c.says) {
					found = true
				}
			}
			if !found {
				t.Errorf("no log line says the read of blob %s failed (%s), naming the range; log:\n%s", layer, c.says, log)
			}
			// Retried once, on another connection than the slow one.
			conns := proxy.slowConns()
			t.Logf("slow answers went to %v", conns)
			if len(conns) < 2 {
				t.Errorf("%d attempts, want a retry", len(conns))
			} else if conns[0] == conns[1] {
				t.Errorf("the retry went out on the connection that was too slow (%s)", conns[0])
			}
			if findMount(t, mnt) == nil {
				t.Fatal("mount went away")
			}
		})
	}
	t.Run("other-chunks-do-not-wait", func(t *testing.T) {
		proxy.set(passThrough, 0)
		// Nothing is abandoned during the test: the slow read waits until
		// the proxy lets it go.
		mnt, cache := remoteMount(t, timing("idle=1m,budget=1m,rate=1K"), proxy.Host+"/"+repo)
		layer := statusOf(t, mnt).Layers[2].Digest
		want, err := os.ReadFile(filepath.Join(ref.Root, file))
		if err != nil {
			t.Fatal(err)
		}
		seqWant, err := os.ReadFile(filepath.Join(ref.Root, "data/seq.txt"))
		if err != nil {
			t.Fatal(err)
		}
		proxy.setFor(trickle, 1, layer) // the first range request of layer 3 only
		p := filepath.Join(mnt, file)
		slow := make(chan error, 1)
		go func() { slow <- readAtCheckRandom(p, 0, want[:4096]) }()
		if !waitFor(20*time.Second, func() bool { return proxy.slowStarted() > 0 }) {
			t.Fatalf("the slow read sent no range request; log:\n%s", readLog(cache))
		}
		// Files of other layers. (Other reads of this file wait: its tar
		// header, which a published index's entry is checked against
		// before any byte of the file is served, is in the slow chunk.
		// blobs' TestRegistrySlowChunkDoesNotBlockOthers reads another
		// chunk of the same blob.)
		if err := readAtCheckRandom(filepath.Join(mnt, "data/seq.txt"), 1<<20, seqWant[1<<20:][:64<<10]); err != nil {
			t.Errorf("read of layer 2: %v", err)
		}
		if err := readAtCheckRandom(filepath.Join(mnt, "etc/hostname"), 0, []byte("ocimount-test\n")); err != nil {
			t.Errorf("read of layer 0: %v", err)
		}
		select {
		case err := <-slow:
			t.Fatalf("the slow read ended (%v) before the others: the test shows nothing", err)
		default:
		}
		proxy.set(passThrough, 0) // cut the trickle: the retry gets the chunk
		if err := <-slow; err != nil {
			t.Errorf("the slow read, once let go: %v", err)
		}
		unmountAndWait(t, mnt)
	})
}

// TestRegistryFailingChunkRemembered: a chunk whose bytes are wrong fails
// its read after a couple of requests (the same wrong bytes twice are not
// asked for six times), and the next reads fail at once, without asking
// the registry again; status tells the rejected bytes from the fetched
// ones.
func TestRegistryFailingChunkRemembered(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	f := images(t)
	proxy := startFaultProxy(t, reg.Host, startBlobStore(t, f.Dir+"/gzip"))
	t.Cleanup(func() { proxy.set(passThrough, 0) })
	mnt, cache := remoteMount(t, timing("memory=1m"), proxy.Host+"/"+repo)
	l3 := statusOf(t, mnt).Layers[2]
	proxy.setFor(corruptByte, -1, l3.Digest)
	p := filepath.Join(mnt, "data/random2.bin")
	read := func() error {
		fd, err := os.Open(p)
		if err != nil {
			return err
		}
		defer fd.Close()
		_, err = fd.ReadAt(make([]byte, 4096), 0)
		return err
	}
	start := time.Now()
	err := read()
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("read of a chunk with wrong bytes: %v, want EIO", err)
	}
	// Let what the read left running (its span's decode) end.
	var r1 int
	waitFor(10*time.Second, func() bool {
		prev := r1
		time.Sleep(300 * time.Millisecond)
		r1, _, _ = proxy.counts(l3.Digest)
		return r1 == prev
	})
	t.Logf("first read failed after %v with %d range requests: %v", took.Round(time.Millisecond), r1, err)
	for i := 0; i < 3; i++ {
		if err := read(); err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Fatalf("read %d: %v, want EIO", i+2, err)
		}
	}
	r2, _, _ := proxy.counts(l3.Digest)
	if r2 != r1 {
		t.Errorf("reads of a chunk that just failed asked the registry again: %d -> %d range requests", r1, r2)
	}
	var raw struct {
		Layers []map[string]json.RawMessage `json:"layers"`
	}
	r := run(t, 30*time.Second, "status", "--json", mnt)
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || len(raw.Layers) != 6 {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	l := raw.Layers[2]
	num := func(k string) int64 {
		var n int64
		if json.Unmarshal(l[k], &n) != nil {
			return -1
		}
		return n
	}
	t.Logf("status of layer 3: fetched %d rejected %d failed_fast %d failing_chunks %d requests %d (size %d)",
		num("fetched"), num("rejected"), num("failed_fast"), num("failing_chunks"), num("requests"), l3.Size)
	if num("rejected") <= 0 || num("failing_chunks") <= 0 || num("failed_fast") <= 0 {
		t.Errorf("status does not show the rejected bytes, the failing chunks and the fast failures: %s", r.stdout)
	}
	if num("fetched") > l3.Size {
		t.Errorf("status counts %d bytes fetched for a %d-byte blob whose chunks were all rejected", num("fetched"), l3.Size)
	}
	if !strings.Contains(readLog(cache), "same wrong bytes twice") {
		t.Errorf("the log does not say the registry keeps sending the same wrong bytes:\n%s", readLog(cache))
	}
	r = run(t, 30*time.Second, "status", mnt)
	if !strings.Contains(r.stdout, "REJECTED") || !strings.Contains(r.stdout, "FAILING") {
		t.Errorf("status table without REJECTED and FAILING:\n%s", r.stdout)
	}
}

// TestRegistrySwappedLayerColdMount: a registry that serves another blob
// under a layer's digest fails a first mount with a digest mismatch that
// names the layer, not with the decompressor's complaint.
func TestRegistrySwappedLayerColdMount(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	f := images(t)
	proxy := startFaultProxy(t, reg.Host, startBlobStore(t, f.Dir+"/gzip"))
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Host+"/v2/fixture/gzip/manifests/latest", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) < 3 {
		t.Fatalf("manifest: %v, %d layers", err, len(m.Layers))
	}
	// The victim: a layer over 1 MiB (the proxy's whole-GET faults),
	// swapped for the bytes of a bigger one, cut to its length.
	big, victim := -1, -1
	for i, l := range m.Layers {
		if big < 0 || l.Size > m.Layers[big].Size {
			big = i
		}
	}
	for i, l := range m.Layers {
		if i != big && l.Size > 1<<20 && (victim < 0 || l.Size > m.Layers[victim].Size) {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no layer over 1 MiB besides the biggest: %+v", m.Layers)
	}
	resp, err = http.Get("http://" + reg.Host + "/v2/fixture/gzip/blobs/" + m.Layers[big].Digest)
	if err != nil {
		t.Fatal(err)
	}
	other, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	proxy.swapWhole(m.Layers[victim].Digest, other)
	mnt := newMountpoint(t)
	r := run(t, 2*time.Minute, "mount", "--cache-dir", t.TempDir(), proxy.Host+"/fixture/gzip:latest", mnt)
	t.Logf("%s", r.stderr)
	if r.code == 0 {
		t.Fatalf("mount of a swapped layer succeeded: %s", r)
	}
	if !strings.Contains(r.stderr, m.Layers[victim].Digest) || !strings.Contains(r.stderr, "digest mismatch") || !strings.Contains(r.stderr, "not the layer's bytes") {
		t.Errorf("the error does not say that the registry's bytes of %s do not match its digest: %s", m.Layers[victim].Digest, r)
	}
	requireNoMount(t, mnt)
}

// chunkBytesLocked adds up the range cache's chunk files while holding
// its lock (chunks/v1/.state), as a mount storing a chunk would: a count
// no store is halfway through.
func chunkBytesLocked(t *testing.T, cache string) int64 {
	t.Helper()
	dir := filepath.Join(cache, "chunks", "v1")
	os.MkdirAll(dir, 0o755)
	fh, err := os.OpenFile(filepath.Join(dir, ".state"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// TestRegistryRangeCacheSharedBound: mounts sharing a cache dir hold its
// --range-cache-max (given with a suffix, as `cache prune --max-size`
// takes it) between them, while they read and after they are gone.
func TestRegistryRangeCacheSharedBound(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	const max = 2 << 20
	cache := t.TempDir()
	var mnts []string
	for i := 0; i < 4; i++ {
		mnt := newMountpoint(t)
		if r := run(t, time.Minute, "mount", "--cache-dir", cache, "--range-cache-max", "2M", reg.Host+"/"+repo, mnt); r.code != 0 {
			t.Fatalf("mount: %s", r)
		}
		mnts = append(mnts, mnt)
	}
	stop := make(chan struct{})
	var peak int64
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			peak = max64(peak, chunkBytesLocked(t, cache))
		}
	}()
	files := []string{"data/random2.bin", "data/seq.txt", "usr/share/perl/5.36/CPAN.pm", "bin/busybox"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, mnt := range mnts {
		for j := range 2 {
			file := files[(i+j)%len(files)]
			if ref.Nodes[file] == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got, err := hashFile(filepath.Join(mnt, file)); err != nil || got != ref.Nodes[file].SHA256 {
					mu.Lock()
					t.Errorf("%s: sha256 %s, %v", file, got, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	<-watched
	for _, mnt := range mnts {
		unmountAndWait(t, mnt)
	}
	after := chunkBytesLocked(t, cache)
	t.Logf("range cache bound %d: peak %d bytes while reading, %d after unmounting", max, peak, after)
	if peak > max {
		t.Errorf("the mounts together held %d bytes in the range cache, bound %d", peak, max)
	}
	if after > max {
		t.Errorf("after unmounting, the range cache holds %d bytes, bound %d", after, max)
	}
	if after == 0 {
		t.Errorf("nothing kept in the range cache")
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
