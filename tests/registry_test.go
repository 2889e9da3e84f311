package tests

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Registry sources against Debian's docker-registry (distribution 2.8).

// TestRegistryMount mounts every encoding of the fixture from a plain-HTTP
// loopback registry (cold: no index anywhere, each layer streamed once)
// and compares the tree with umoci's extraction.
func TestRegistryMount(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	ref := refTree(t)
	dg := reg.manifestDigest(t, "fixture/gzip", "latest")
	cases := []struct{ name, ref string }{
		{"gzip", reg.Host + "/fixture/gzip:latest"},
		{"zstd", reg.Host + "/fixture/zstd:latest"},
		{"uncompressed", reg.Host + "/fixture/tar:latest"},
		{"gzip-by-digest", reg.Host + "/fixture/gzip@" + dg},
		{"gzip-docker-transport", "docker://" + reg.Host + "/fixture/gzip:latest"},
		{"gzip-default-tag", "docker://" + reg.Host + "/fixture/gzip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mnt, cache := remoteMount(t, nil, c.ref)
			st := statusOf(t, mnt)
			if len(st.Layers) != 6 {
				t.Fatalf("status shows %d layers, want 6", len(st.Layers))
			}
			checkFormats(t, c.name, st)
			if strings.HasSuffix(c.name, "by-digest") && st.Manifest != dg {
				t.Errorf("status manifest %s, want %s", st.Manifest, dg)
			}
			for _, l := range st.Layers {
				if !l.Remote || l.Chunks == 0 {
					t.Errorf("layer %d: remote=%v chunks=%d", l.Index, l.Remote, l.Chunks)
				}
				// Cold mount: every layer was streamed once in full
				// (and only once) to build its index.
				if l.Fetched != l.Size {
					t.Errorf("layer %d: fetched %d bytes of a %d-byte blob while mounting", l.Index, l.Fetched, l.Size)
				}
			}
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTree(t, ref, got)
			if t.Failed() {
				t.Logf("log:\n%s", readLog(cache))
			}
		})
	}
}

// checkFormats makes sure the registry holds the encoding the case is
// about (skopeo may recompress on push).
func checkFormats(t *testing.T, name string, st mountStatus) {
	t.Helper()
	want := "tar+gzip"
	switch {
	case strings.HasPrefix(name, "zstd"):
		want = "tar+zstd"
	case strings.HasPrefix(name, "uncompressed"), name == "tar":
		want = "tar"
	}
	for _, l := range st.Layers {
		if l.Format != want {
			t.Errorf("layer %d is %s, want %s", l.Index, l.Format, want)
		}
	}
}

// TestRegistryIndexPush publishes the indexes, then mounts with an empty
// cache: the mount uses them and reads only the ranges it needs.
func TestRegistryIndexPush(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	ref := refTree(t)
	f := images(t)
	for _, v := range []string{"gzip", "zstd", "tar"} {
		t.Run(v, func(t *testing.T) {
			repo := reg.Host + "/indexpush/" + v + ":latest"
			if v == "tar" {
				if err := pushLayout(reg.Host, f.Dir+"/tar", "indexpush/tar:latest"); err != nil {
					t.Fatal(err)
				}
			} else {
				reg.push(t, "oci:"+f.Dir+"/"+v+":latest", "indexpush/"+v+":latest")
			}
			pushIndexes(t, nil, repo)
			mnt, cache := remoteMount(t, nil, repo)
			if log := readLog(cache); !strings.Contains(log, "using published layer indexes") {
				t.Errorf("mount did not use the published indexes; log:\n%s", log)
			}
			st0 := statusOf(t, mnt)
			checkFormats(t, v, st0)
			for _, l := range st0.Layers {
				// Known limit: a zstd layer with frames too big to
				// decode per read needs a local decoded copy
				// (docs/DESIGN.md), so it is streamed once while
				// mounting, even with a published index.
				if v == "zstd" && l.Fetched == l.Size {
					t.Logf("layer %d (tar+zstd, %d bytes): streamed once while mounting (decoded copy)", l.Index, l.Size)
					continue
				}
				if l.Fetched != 0 {
					t.Errorf("layer %d: mounting fetched %d bytes of layer data", l.Index, l.Fetched)
				}
			}
			if _, err := os.ReadDir(mnt); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
				t.Fatalf("etc/hostname = %q, %v", b, err)
			}
			st := statusOf(t, mnt)
			size := st.sum(func(l layerStatus) int64 { return l.Size })
			fetched := st.sum(func(l layerStatus) int64 { return l.Fetched })
			t.Logf("after ls + cat: fetched %d of %d bytes (%.2f%%), %d requests", fetched, size,
				100*float64(fetched)/float64(size), st.sum(func(l layerStatus) int64 { return l.Requests }))
			var streamed int64
			for _, l := range st.Layers {
				if v == "zstd" && st0.Layers[l.Index].Fetched == l.Size {
					streamed += l.Size
					continue
				}
				if l.Size > 2<<20 && l.Fetched >= l.Size/2 {
					t.Errorf("layer %d (%s): fetched %d of %d bytes: streamed instead of ranged reads", l.Index, l.Format, l.Fetched, l.Size)
				}
			}
			if fetched-streamed > size/10 {
				t.Errorf("fetched %d bytes of %d for ls + one small file", fetched, size)
			}
			got, err := Snapshot(mnt)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTree(t, ref, got)
			if t.Failed() {
				t.Logf("log:\n%s", readLog(cache))
			}
		})
	}
}

// indexedRepo is fixture/gzip copied to indexed/gzip with its indexes
// published, once per run: mounts of it read by ranges from the start.
var (
	indexedOnce sync.Once
	indexedOK   bool
)

func indexedRepo(t *testing.T) (reg *testRegistry, repo string) {
	t.Helper()
	reg = sharedRegistry(t)
	f := images(t)
	indexedOnce.Do(func() {
		reg.push(t, "oci:"+f.Dir+"/gzip:latest", "indexed/gzip:latest")
		pushIndexes(t, nil, reg.Host+"/indexed/gzip:latest")
		indexedOK = true
	})
	if !indexedOK {
		t.Fatal("setting up indexed/gzip failed in an earlier test")
	}
	return reg, "indexed/gzip:latest"
}

// TestRegistryAuth: a TLS registry with htpasswd auth and a CA made here.
func TestRegistryAuth(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo", "htpasswd")
	f := images(t)
	want := refTree(t).Nodes["data/random2.bin"].SHA256
	reg := startRegistry(t, registryOpts{TLS: true, User: "alice", Pass: "s3cret-pass"})
	reg.push(t, "oci:"+f.Dir+"/gzip:latest", "auth/gzip:latest")
	ref := reg.Host + "/auth/gzip:latest"
	ca := "SSL_CERT_FILE=" + reg.CAFile
	pushIndexes(t, isolatedEnv(t, ca), ref, "--creds", "alice:s3cret-pass")

	// check reads a file that needs authenticated range requests.
	check := func(t *testing.T, mnt string) {
		t.Helper()
		if got, err := hashFile(filepath.Join(mnt, "data/random2.bin")); err != nil || got != want {
			t.Errorf("data/random2.bin: sha256 %s, %v; want %s", got, err, want)
		}
	}
	authJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, base64.StdEncoding.EncodeToString([]byte("alice:s3cret-pass")))

	t.Run("creds", func(t *testing.T) {
		mnt, _ := remoteMount(t, isolatedEnv(t, ca), ref, "--creds", "alice:s3cret-pass")
		check(t, mnt)
		// The background server lives as long as the mount; its command
		// line is readable by every local user (ps, /proc/PID/cmdline).
		for _, pid := range serverPIDs(t, mnt) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(b), "s3cret-pass") {
				t.Errorf("the mount's background server (pid %d) keeps --creds in its command line, readable by all local users: %q",
					pid, strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	})
	t.Run("docker-config", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(authJSON), 0o600); err != nil {
			t.Fatal(err)
		}
		mnt, _ := remoteMount(t, isolatedEnv(t, ca, "DOCKER_CONFIG="+dir), "docker://"+ref)
		check(t, mnt)
	})
	t.Run("podman-auth-file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "auth.json")
		if err := os.WriteFile(p, []byte(authJSON), 0o600); err != nil {
			t.Fatal(err)
		}
		mnt, _ := remoteMount(t, isolatedEnv(t, ca, "REGISTRY_AUTH_FILE="+p), ref)
		check(t, mnt)
	})
	t.Run("cred-helper", func(t *testing.T) {
		dir := t.TempDir()
		helper := "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n" +
			"printf '{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret-pass\"}' \"$server\"\n"
		if err := os.WriteFile(filepath.Join(dir, "docker-credential-ocimounttest"), []byte(helper), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`{"credHelpers":{%q:"ocimounttest"}}`, reg.Host)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		mnt, _ := remoteMount(t, isolatedEnv(t, ca, "DOCKER_CONFIG="+dir, "PATH="+dir+":"+os.Getenv("PATH")), ref)
		check(t, mnt)
	})
	t.Run("creds-env", func(t *testing.T) {
		mnt, _ := remoteMount(t, isolatedEnv(t, ca, "OCIMOUNT_CREDS=alice:s3cret-pass"), ref)
		check(t, mnt)
	})
	t.Run("tls-verify-false", func(t *testing.T) {
		mnt, _ := remoteMount(t, isolatedEnv(t), ref, "--creds", "alice:s3cret-pass", "--tls-verify=false")
		check(t, mnt)
	})
	fails := []struct {
		name    string
		env     []string
		flags   []string
		mention string
	}{
		{"wrong-password", isolatedEnv(t, ca), []string{"--creds", "alice:wrong"}, "authentication"},
		{"no-credentials", isolatedEnv(t, ca), nil, "authentication"},
		{"unknown-ca", isolatedEnv(t), []string{"--creds", "alice:s3cret-pass"}, "certificate"},
	}
	for _, c := range fails {
		t.Run(c.name, func(t *testing.T) {
			mnt := newMountpoint(t)
			args := append(append([]string{"mount", "--cache-dir", t.TempDir()}, c.flags...), ref, mnt)
			r := runEnv(t, c.env, time.Minute, args...)
			if r.code == 0 {
				t.Fatalf("mount succeeded: %s", r)
			}
			msg := strings.ToLower(r.stderr)
			if !strings.Contains(msg, c.mention) && !(c.mention == "authentication" && strings.Contains(msg, "access denied (http 401")) {
				t.Errorf("error does not mention %q: %s", c.mention, r)
			}
			if r.dur > 20*time.Second {
				t.Errorf("failing took %v", r.dur)
			}
			requireNoMount(t, mnt)
		})
	}
}

// TestRegistryTokenAuth: distribution's token auth with ES256 JWTs from a
// token server in the test (which itself wants basic credentials).
func TestRegistryTokenAuth(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	f := images(t)
	want := refTree(t).Nodes["data/random2.bin"].SHA256
	reg := startRegistry(t, registryOpts{Token: true, User: "bob", Pass: "t0ken-pass"})
	reg.push(t, "oci:"+f.Dir+"/gzip:latest", "token/gzip:latest")
	ref := reg.Host + "/token/gzip:latest"
	pushIndexes(t, isolatedEnv(t), ref, "--creds", "bob:t0ken-pass")
	before := reg.Token.count()
	mnt, cache := remoteMount(t, isolatedEnv(t), ref, "--creds", "bob:t0ken-pass")
	if reg.Token.count() == before {
		t.Error("mount got no token from the token server")
	}
	if !strings.Contains(readLog(cache), "using published layer indexes") {
		t.Errorf("published indexes not used; log:\n%s", readLog(cache))
	}
	if got, err := hashFile(filepath.Join(mnt, "data/random2.bin")); err != nil || got != want {
		t.Errorf("data/random2.bin: sha256 %s, %v; want %s", got, err, want)
	}
	t.Run("wrong-password", func(t *testing.T) {
		mnt := newMountpoint(t)
		r := runEnv(t, isolatedEnv(t), time.Minute, "mount", "--cache-dir", t.TempDir(), "--creds", "bob:nope", ref, mnt)
		if r.code == 0 {
			t.Fatalf("mount succeeded: %s", r)
		}
		if !strings.Contains(strings.ToLower(r.stderr), "authentication") {
			t.Errorf("error does not mention authentication: %s", r)
		}
		requireNoMount(t, mnt)
	})
}

// TestRegistryFaults puts a fault-injecting proxy between the mount and
// the registry. Reads by range must never return wrong bytes: transient
// faults are retried, persistent ones fail the read (EIO, a log line) and
// the mount stays usable.
func TestRegistryFaults(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	f := images(t)
	store := startBlobStore(t, f.Dir+"/gzip")
	proxy := startFaultProxy(t, reg.Host, store)
	const file = "data/random2.bin" // 3 MiB of random bytes in layer 3
	want := ref.Nodes[file].SHA256

	// mountVia mounts through the proxy (passing through while mounting)
	// and returns the mountpoint, cache dir and the digest of layer 3.
	mountVia := func(t *testing.T) (string, string, string) {
		t.Helper()
		proxy.set(passThrough, 0)
		proxy.reset()
		// Failed chunks are remembered for a moment only, so that the
		// read after the fault clears may ask again soon.
		mnt, cache := remoteMount(t, timing("memory=200ms"), proxy.Host+"/"+repo)
		if !strings.Contains(readLog(cache), "using published layer indexes") {
			t.Fatalf("published indexes not used; log:\n%s", readLog(cache))
		}
		st := statusOf(t, mnt)
		if len(st.Layers) != 6 {
			t.Fatalf("%d layers", len(st.Layers))
		}
		return mnt, cache, st.Layers[2].Digest
	}
	cases := []struct {
		mode faultMode
		n    int // faulty answers; <0: until switched off
	}{
		{corruptByte, -1},
		{corruptByte, 1},
		{ignoreRange, -1},
		{ignoreRange, 2},
		{badRange, 2},
		{shortBody, -1},
		{shortBody, 2},
		{unavailable, 3},
		{unavailable, -1},
		{bogus416, 2},
		{bogus416, -1},
		{badRange, -1},
	}
	for _, c := range cases {
		name := c.mode.String()
		if c.n < 0 {
			name += "-persistent"
		} else {
			name += fmt.Sprintf("-x%d", c.n)
		}
		t.Run(name, func(t *testing.T) {
			mnt, cache, layer := mountVia(t)
			proxy.set(c.mode, c.n)
			start := time.Now()
			got, err := hashFile(filepath.Join(mnt, file))
			took := time.Since(start)
			_, _, faults := proxy.counts(layer)
			t.Logf("read took %v, %d faulty answers", took.Round(time.Millisecond), faults)
			if faults == 0 {
				t.Fatalf("the proxy injected no fault (no ranged reads?)")
			}
			if err == nil && got != want {
				t.Fatalf("WRONG BYTES: %s has sha256 %s, want %s", file, got, want)
			}
			if c.n < 0 {
				if err == nil {
					t.Fatalf("read succeeded although every ranged answer was broken")
				}
				if !strings.Contains(err.Error(), "input/output error") {
					t.Errorf("read error %v, want EIO", err)
				}
				log := readLog(cache)
				if !strings.Contains(log, layer) || !strings.Contains(log, "read failed") {
					t.Errorf("no log line names blob %s; log:\n%s", layer, log)
				}
				if findMount(t, mnt) == nil {
					t.Fatal("mount went away after a failed read")
				}
				proxy.set(passThrough, 0)
				if !waitFor(10*time.Second, func() bool { return statusOf(t, mnt).Layers[2].FailingChunks == 0 }) {
					t.Fatalf("chunks still failing 10 s after the fault cleared: %+v", statusOf(t, mnt).Layers[2])
				}
				got, err = hashFile(filepath.Join(mnt, file))
				if err != nil || got != want {
					t.Fatalf("after the fault cleared: sha256 %s, %v; want %s", got, err, want)
				}
			} else {
				if err != nil {
					t.Fatalf("read failed despite only %d faulty answers: %v\nlog:\n%s", c.n, err, readLog(cache))
				}
				st := statusOf(t, mnt)
				if st.Layers[2].Retries == 0 {
					t.Errorf("status shows no retries for layer 3 after %d faults: %+v", faults, st.Layers[2])
				}
			}
			if took > 20*time.Second {
				t.Errorf("the faulty read took %v", took)
			}
		})
	}

	// A registry that redirects blob GETs to object storage: the presigned
	// URL is remembered, so later ranges go straight to the store.
	t.Run("redirect", func(t *testing.T) {
		mnt, cache, layer := mountVia(t)
		proxy.set(redirectStore, -1)
		p := filepath.Join(mnt, file)
		wantBytes, err := os.ReadFile(filepath.Join(ref.Root, file))
		if err != nil {
			t.Fatal(err)
		}
		// Reads here are random (no kernel or ocimount read-ahead), and
		// counts are taken once the fetches a read leaves running (the
		// rest of its span's decode) are done.
		settle := func() {
			prev := ""
			for i := 0; i < 100; i++ {
				r, _, _ := proxy.counts(layer)
				cur := fmt.Sprint(r, store.count(layer))
				if cur == prev {
					return
				}
				prev = cur
				time.Sleep(200 * time.Millisecond)
			}
		}
		if err := readAtCheckRandom(p, 0, wantBytes[:64<<10]); err != nil {
			t.Fatalf("first read: %v\nlog:\n%s", err, readLog(cache))
		}
		settle()
		r1, _, _ := proxy.counts(layer)
		s1 := store.count(layer)
		if r1 == 0 || s1 == 0 {
			t.Fatalf("no redirect happened: %d ranged GETs at the registry, %d at the store", r1, s1)
		}
		off := int64(5 << 19) // 2.5 MiB: a span whose chunks are not fetched yet
		if err := readAtCheckRandom(p, off, wantBytes[off:off+64<<10]); err != nil {
			t.Fatalf("second read: %v", err)
		}
		settle()
		r2, _, _ := proxy.counts(layer)
		s2 := store.count(layer)
		t.Logf("registry ranged GETs %d -> %d, store GETs %d -> %d", r1, r2, s1, s2)
		if s2 == s1 {
			t.Errorf("the second read fetched nothing from the store")
		}
		if r2 != r1 {
			t.Errorf("the second read went to the registry again (%d -> %d ranged GETs) instead of the cached redirect target", r1, r2)
		}
		if got, err := hashFile(p); err != nil || got != want {
			t.Fatalf("whole file via the store: sha256 %s, %v; want %s\nlog:\n%s", got, err, want, readLog(cache))
		}

		// An expired presigned URL (403 from the store) is dropped and
		// the registry asked again. Layer 2's data/seq.txt: one read to
		// cache its redirect target, then a read of another span after
		// the store starts refusing once.
		seq := filepath.Join(mnt, "data/seq.txt")
		seqWant, err := os.ReadFile(filepath.Join(ref.Root, "data/seq.txt"))
		if err != nil {
			t.Fatal(err)
		}
		layer = statusOf(t, mnt).Layers[1].Digest // for settle
		if err := readAtCheckRandom(seq, 0, seqWant[:64<<10]); err != nil {
			t.Fatalf("seq.txt first read: %v", err)
		}
		settle()
		layer2 := layer
		ra, _, _ := proxy.counts(layer2)
		store.mu.Lock()
		store.deny = 1
		store.mu.Unlock()
		off = 8 << 20
		if err := readAtCheckRandom(seq, off, seqWant[off:off+64<<10]); err != nil {
			t.Fatalf("seq.txt read after the store refused once: %v\nlog:\n%s", err, readLog(cache))
		}
		settle()
		store.mu.Lock()
		left := store.deny
		store.mu.Unlock()
		rb, _, _ := proxy.counts(layer2)
		t.Logf("layer 2: registry ranged GETs %d -> %d, store refusals left %d", ra, rb, left)
		if left != 0 {
			t.Fatalf("the second read of seq.txt fetched nothing (test setup)")
		}
		if rb == ra {
			t.Errorf("after a 403 from the store the registry was not asked for a new URL")
		}
	})
}

// TestRegistryConcurrentReaders: 8 readers of one uncached file of a
// lazily read registry image get the same, correct bytes.
func TestRegistryConcurrentReaders(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	mnt, cache := remoteMount(t, nil, reg.Host+"/"+repo)
	for _, file := range []string{"data/seq.txt", "data/random2.bin"} {
		want := ref.Nodes[file].SHA256
		var wg sync.WaitGroup
		start := make(chan struct{})
		sums := make([]string, 8)
		errs := make([]error, 8)
		for i := range sums {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sums[i], errs[i] = hashFile(filepath.Join(mnt, file))
			}()
		}
		close(start)
		wg.Wait()
		for i := range sums {
			if errs[i] != nil || sums[i] != want {
				t.Errorf("%s reader %d: sha256 %s, %v; want %s", file, i, sums[i], errs[i], want)
			}
		}
	}
	st := statusOf(t, mnt)
	if st.sum(func(l layerStatus) int64 { return l.Retries }) != 0 {
		t.Errorf("retries against a healthy registry: %+v", st.Layers)
	}
	if t.Failed() {
		t.Logf("log:\n%s", readLog(cache))
	}
}

// TestRegistryColdStreamFaults: the first mount streams whole layers. A
// stream cut once is resumed with a Range request; a corrupted stream
// fails the mount cleanly (digest mismatch, nothing mounted, no server).
func TestRegistryColdStreamFaults(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	ref := refTree(t)
	f := images(t)
	proxy := startFaultProxy(t, reg.Host, startBlobStore(t, f.Dir+"/gzip"))
	src := proxy.Host + "/fixture/gzip:latest"
	t.Run("stream-cut-once", func(t *testing.T) {
		proxy.setWhole(shortBody, 1)
		defer proxy.setWhole(passThrough, 0)
		mnt, cache := remoteMount(t, nil, src)
		st := statusOf(t, mnt)
		if n := st.sum(func(l layerStatus) int64 { return l.Retries }); n == 0 {
			t.Errorf("no retries counted after a cut stream: %+v", st.Layers)
		}
		if !strings.Contains(readLog(cache), "resuming") {
			t.Errorf("no log line about resuming; log:\n%s", readLog(cache))
		}
		got, err := Snapshot(mnt)
		if err != nil {
			t.Fatal(err)
		}
		requireSameTree(t, ref, got)
	})
	t.Run("stream-corrupt", func(t *testing.T) {
		proxy.setWhole(corruptByte, -1)
		defer proxy.setWhole(passThrough, 0)
		mnt := newMountpoint(t)
		r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), src, mnt)
		if r.code == 0 {
			t.Fatalf("mount of a corrupted layer succeeded: %s", r)
		}
		// Either the digest check or the tar/gzip parser notices first;
		// either way the error names the blob.
		if !strings.Contains(r.stderr, "blob sha256:") {
			t.Errorf("error does not name the blob: %s", r)
		}
		requireNoMount(t, mnt)
	})
}

// TestRegistryRangeCache: fetched chunks are kept on disk and reused by
// the next mount with the same cache; a damaged chunk file is fetched
// again, never served.
func TestRegistryRangeCache(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	const file = "data/random2.bin"
	want := ref.Nodes[file].SHA256
	cache := t.TempDir()
	mountWith := func(t *testing.T) string {
		t.Helper()
		mnt := newMountpoint(t)
		r := run(t, time.Minute, "mount", "--cache-dir", cache, reg.Host+"/"+repo, mnt)
		if r.code != 0 {
			t.Fatalf("mount: %s", r)
		}
		return mnt
	}
	mnt := mountWith(t)
	if got, err := hashFile(filepath.Join(mnt, file)); err != nil || got != want {
		t.Fatalf("first read: %s, %v", got, err)
	}
	layer := statusOf(t, mnt).Layers[2]
	if layer.Local == 0 {
		t.Fatalf("no chunks kept on disk: %+v", layer)
	}
	forceUnmount(t, mnt)

	// Same cache: the read is served from disk.
	mnt = mountWith(t)
	if got, err := hashFile(filepath.Join(mnt, file)); err != nil || got != want {
		t.Fatalf("second read: %s, %v", got, err)
	}
	l2 := statusOf(t, mnt).Layers[2]
	if l2.Fetched != 0 {
		t.Errorf("read of cached chunks fetched %d bytes: %+v", l2.Fetched, l2)
	}
	forceUnmount(t, mnt)

	// Damage every cached chunk of layer 3: each must be fetched again.
	hex := strings.TrimPrefix(layer.Digest, "sha256:")
	var damaged int
	filepath.WalkDir(filepath.Join(cache, "chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, hex) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			return nil
		}
		b[len(b)/3] ^= 0xff
		if os.WriteFile(p, b, 0o600) == nil {
			damaged++
		}
		return nil
	})
	if damaged == 0 {
		t.Fatalf("found no chunk files of %s under %s/chunks", layer.Digest, cache)
	}
	mnt = mountWith(t)
	if got, err := hashFile(filepath.Join(mnt, file)); err != nil || got != want {
		t.Fatalf("read after damaging %d chunk files: sha256 %s, %v; want %s", damaged, got, err, want)
	}
	l3 := statusOf(t, mnt).Layers[2]
	t.Logf("damaged %d chunk files; then fetched %d bytes, %d misses", damaged, l3.Fetched, l3.ChunkMisses)
	if l3.Fetched == 0 {
		t.Errorf("damaged chunks were not fetched again: %+v", l3)
	}
}

// chunkFiles counts the files and bytes under CACHE/chunks.
func chunkFiles(cache string) (n int, bytes int64) {
	filepath.WalkDir(filepath.Join(cache, "chunks"), func(p string, d os.DirEntry, err error) error {
		// .tmp-* files are chunks being written, not yet in the cache;
		// .state is the cache's lock and byte count.
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			if fi, err := d.Info(); err == nil {
				n++
				bytes += fi.Size()
			}
		}
		return nil
	})
	return n, bytes
}

// TestRegistryPrefetch: --prefetch keeps every layer's bytes while the
// first mount streams it, so reading the whole tree fetches nothing more.
func TestRegistryPrefetch(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	ref := refTree(t)
	mnt, cache := remoteMount(t, nil, reg.Host+"/fixture/gzip:latest", "--prefetch")
	st := statusOf(t, mnt)
	for _, l := range st.Layers {
		if !l.FullyLocal || l.Local != l.Chunks {
			t.Errorf("layer %d not fully local after --prefetch: %d/%d chunks", l.Index, l.Local, l.Chunks)
		}
	}
	got, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, ref, got)
	st2 := statusOf(t, mnt)
	for i, l := range st2.Layers {
		if l.Fetched != st.Layers[i].Fetched || l.Requests != st.Layers[i].Requests {
			t.Errorf("layer %d: reading the tree fetched %d more bytes in %d requests", i, l.Fetched-st.Layers[i].Fetched, l.Requests-st.Layers[i].Requests)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", readLog(cache))
	}
}

// TestRegistryRangeCacheBound: --range-cache-max bounds the on-disk range
// cache, and status does not claim chunks that were pruned.
func TestRegistryRangeCacheBound(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	const max = 1 << 20
	mnt, cache := remoteMount(t, nil, reg.Host+"/"+repo, "--range-cache-max", fmt.Sprint(max))
	for _, file := range []string{"data/random2.bin", "data/seq.txt"} {
		if got, err := hashFile(filepath.Join(mnt, file)); err != nil || got != ref.Nodes[file].SHA256 {
			t.Fatalf("%s: sha256 %s, %v", file, got, err)
		}
	}
	// Pruning runs in the background and goes down to 90% of the bound,
	// so the size can pass the bound while a prune is still deleting:
	// wait until the files on disk stop changing and status agrees with
	// them, then check the bound.
	var n, local int
	var size int64
	settled := waitFor(10*time.Second, func() bool {
		n0, size0 := chunkFiles(cache)
		st := statusOf(t, mnt)
		local = int(st.sum(func(l layerStatus) int64 { return int64(l.Local) }))
		n, size = chunkFiles(cache)
		return n == n0 && size == size0 && size <= max && local == n
	})
	t.Logf("range cache: %d files, %d bytes (bound %d), status: %d local chunks", n, size, max, local)
	if size > max {
		t.Errorf("range cache holds %d bytes, bound %d", size, max)
	} else if !settled {
		t.Errorf("after pruning the range cache, status claims %d chunks on disk (fully_local may be true), there are %d chunk files", local, n)
	}
}

// TestRegistryStalled: a registry (or proxy) that goes silent in the
// middle of a range response, or before its headers, must not hang a read
// for minutes: the product promises that a failing read gives up in about
// ten seconds (6 attempts, backoff up to 3 s).
func TestRegistryStalled(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	f := images(t)
	proxy := startFaultProxy(t, reg.Host, startBlobStore(t, f.Dir+"/gzip"))
	t.Cleanup(func() { proxy.set(passThrough, 0) })
	const file = "data/random2.bin"
	const limit = 15 * time.Second
	for _, mode := range []faultMode{stallBody, stallHeaders} {
		t.Run(mode.String(), func(t *testing.T) {
			proxy.set(passThrough, 0)
			mnt, cache := remoteMount(t, nil, proxy.Host+"/"+repo)
			proxy.set(mode, -1)
			type res struct {
				sum string
				err error
			}
			done := make(chan res, 1)
			start := time.Now()
			go func() {
				s, err := hashFile(filepath.Join(mnt, file))
				done <- res{s, err}
			}()
			var r res
			select {
			case r = <-done:
			case <-time.After(limit):
				proxy.set(passThrough, 0) // free the read
				r = <-done
				if r.err == nil && r.sum != ref.Nodes[file].SHA256 {
					t.Fatalf("WRONG BYTES after a stalled response")
				}
				t.Errorf("a read whose range response stalls (%s) hangs for more than %v; log:\n%s", mode, limit, readLog(cache))
			}
			t.Logf("read ended after %v: %v", time.Since(start).Round(time.Millisecond), r.err)
			if r.err == nil && r.sum != ref.Nodes[file].SHA256 {
				t.Fatalf("WRONG BYTES after a stalled response")
			}
		})
	}
}

// TestRegistryBlobDeleted: a layer blob deleted from the registry while
// mounted: reads of chunks not fetched yet fail promptly (404 is not
// retried for seconds), the log names the blob, the mount stays up and
// chunks already fetched still read.
func TestRegistryBlobDeleted(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	f := images(t)
	ref := refTree(t)
	reg.push(t, "oci:"+f.Dir+"/gzip:latest", "deleted/gzip:latest")
	src := reg.Host + "/deleted/gzip:latest"
	pushIndexes(t, nil, src)
	mnt, cache := remoteMount(t, nil, src)
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
		t.Fatalf("etc/hostname: %q, %v", b, err)
	}
	layer := statusOf(t, mnt).Layers[2].Digest
	req, _ := http.NewRequest(http.MethodDelete, "http://"+reg.Host+"/v2/deleted/gzip/blobs/"+layer, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE blob: %s", resp.Status)
	}
	start := time.Now()
	_, err = hashFile(filepath.Join(mnt, "data/random2.bin"))
	took := time.Since(start)
	t.Logf("read of the deleted layer: %v after %v", err, took.Round(time.Millisecond))
	if err == nil {
		t.Fatal("read of a deleted blob succeeded")
	}
	if !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("error %v, want EIO", err)
	}
	if took > 5*time.Second {
		t.Errorf("a 404 took %v to fail", took)
	}
	if log := readLog(cache); !strings.Contains(log, layer) {
		t.Errorf("no log line names %s; log:\n%s", layer, log)
	}
	if findMount(t, mnt) == nil {
		t.Fatal("mount went away")
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
		t.Errorf("etc/hostname after the delete: %q, %v", b, err)
	}
	if got, err := hashFile(filepath.Join(mnt, "data/seq.txt")); err != nil || got != ref.Nodes["data/seq.txt"].SHA256 {
		t.Errorf("data/seq.txt (another layer): %s, %v", got, err)
	}
}

// TestRegistryPlatform: a multi-platform image in a registry: the host's
// platform by default, --platform picks another, and indexes published
// for one platform's manifest are found when mounting that platform.
func TestRegistryPlatform(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg := sharedRegistry(t)
	dir := multiPlatformLayout(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "skopeo", "--insecure-policy", "copy", "--quiet", "--all", "--dest-tls-verify=false",
		"oci:"+dir+":multi", "docker://"+reg.Host+"/multi/image:latest").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy --all: %v\n%s", err, out)
	}
	src := reg.Host + "/multi/image:latest"
	arch := func(t *testing.T, mnt string) string {
		b, err := os.ReadFile(filepath.Join(mnt, "arch"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("default", func(t *testing.T) {
		mnt, _ := remoteMount(t, nil, src)
		if a := arch(t, mnt); a != runtime.GOARCH {
			t.Errorf("default platform picked %q, want %q", a, runtime.GOARCH)
		}
	})
	t.Run("arm64-published", func(t *testing.T) {
		pushIndexes(t, nil, src, "--platform", "linux/arm64")
		mnt, cache := remoteMount(t, nil, src, "--platform", "linux/arm64")
		if a := arch(t, mnt); a != "arm64" {
			t.Errorf("--platform linux/arm64 picked %q", a)
		}
		if !strings.Contains(readLog(cache), "using published layer indexes") {
			t.Errorf("indexes published for linux/arm64 not used; log:\n%s", readLog(cache))
		}
	})
	t.Run("absent", func(t *testing.T) {
		mnt := newMountpoint(t)
		r := run(t, time.Minute, "mount", "--cache-dir", t.TempDir(), "--platform", "linux/s390x", src, mnt)
		if r.code == 0 || !strings.Contains(r.stderr, "s390x") {
			t.Errorf("want failure naming linux/s390x: %s", r)
		}
		requireNoMount(t, mnt)
	})
}

// TestRegistryTokenExpiry: a mount outlives its bearer token (registries
// hand out tokens for minutes, mounts last hours): reads after the token
// expired get a new one and succeed.
func TestRegistryTokenExpiry(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	f := images(t)
	ref := refTree(t)
	// distribution accepts tokens up to a minute past "exp" (clock skew
	// leeway): issue tokens that are usable for a few seconds only.
	const validFor, leeway = 3 * time.Second, time.Minute
	reg := startRegistry(t, registryOpts{Token: true, User: "carol", Pass: "pw", TokenExp: validFor - leeway})
	reg.push(t, "oci:"+f.Dir+"/gzip:latest", "expiry/gzip:latest")
	src := reg.Host + "/expiry/gzip:latest"
	pushIndexes(t, isolatedEnv(t), src, "--creds", "carol:pw")
	mnt, cache := remoteMount(t, isolatedEnv(t), src, "--creds", "carol:pw")
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "ocimount-test\n" {
		t.Fatalf("etc/hostname: %q, %v", b, err)
	}
	before := reg.Token.count()
	time.Sleep(validFor + 2*time.Second)
	got, err := hashFile(filepath.Join(mnt, "data/random2.bin"))
	after := reg.Token.count()
	t.Logf("tokens issued: %d before the read, %d after", before, after)
	if err != nil || got != ref.Nodes["data/random2.bin"].SHA256 {
		t.Fatalf("read after the token expired: %s, %v\nlog:\n%s", got, err, readLog(cache))
	}
	if after == before {
		t.Errorf("no new token was fetched: the old one did not expire (test setup: leeway?)")
	}
}

// TestRegistrySharedCache: two mounts of one image share a cache dir and
// read the same uncached files at once (the range cache is written with
// temp files and renames): all readers get the right bytes, and a third
// mount then reads them from disk alone.
func TestRegistrySharedCache(t *testing.T) {
	requireIntegration(t, "docker-registry", "skopeo")
	reg, repo := indexedRepo(t)
	ref := refTree(t)
	cache := t.TempDir()
	mount := func() string {
		mnt := newMountpoint(t)
		if r := run(t, time.Minute, "mount", "--cache-dir", cache, reg.Host+"/"+repo, mnt); r.code != 0 {
			t.Fatalf("mount: %s", r)
		}
		return mnt
	}
	mnts := []string{mount(), mount()}
	files := []string{"data/seq.txt", "data/random2.bin"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mnt, file := mnts[i%2], files[(i/2)%2]
			got, err := hashFile(filepath.Join(mnt, file))
			if err != nil || got != ref.Nodes[file].SHA256 {
				mu.Lock()
				t.Errorf("%s via mount %d: sha256 %s, %v", file, i%2, got, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	third := mount()
	for _, file := range files {
		if got, err := hashFile(filepath.Join(third, file)); err != nil || got != ref.Nodes[file].SHA256 {
			t.Errorf("%s via the third mount: %s, %v", file, got, err)
		}
	}
	st := statusOf(t, third)
	if n := st.sum(func(l layerStatus) int64 { return l.Fetched }); n != 0 {
		t.Errorf("third mount fetched %d bytes although both files were read into the shared cache", n)
	}
	if b, _ := os.ReadFile(filepath.Join(cache, "ocimount.log")); strings.Contains(string(b), "damaged") {
		t.Errorf("range cache files were damaged:\n%s", b)
	}
}
