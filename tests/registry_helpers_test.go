package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Registry test harness: Debian's docker-registry (distribution 2.8) on
// loopback, optionally with TLS (a CA made here), htpasswd or token auth
// (a token server in this process), fed with the fixture images by skopeo.

// exitHooks run at the end of TestMain (shared registries outlive tests).
var (
	exitMu    sync.Mutex
	exitHooks []func()
)

func atExit(f func()) {
	exitMu.Lock()
	exitHooks = append(exitHooks, f)
	exitMu.Unlock()
}

func runExitHooks() {
	exitMu.Lock()
	defer exitMu.Unlock()
	for i := len(exitHooks) - 1; i >= 0; i-- {
		exitHooks[i]()
	}
	exitHooks = nil
}

// registryOpts choose a registry's flavour.
type registryOpts struct {
	TLS        bool   // serve HTTPS with a certificate from a fresh test CA
	User, Pass string // htpasswd auth (needs TLS), or the token server's basic credentials
	Token      bool   // token auth with a token server in this process
	// TokenExp is added to the issue time for a token's "exp" claim
	// (0: 5 minutes).
	TokenExp time.Duration
}

// testRegistry is a running docker-registry.
type testRegistry struct {
	Host       string // 127.0.0.1:PORT
	Dir        string
	CAFile     string // PEM of the CA that signed the TLS certificate
	User, Pass string
	Token      *tokenServer
	cmd        *exec.Cmd
	log        string
	done       chan struct{}
}

// freePort asks the kernel for an unused loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry starts a registry and stops it when t ends.
func startRegistry(t *testing.T, o registryOpts) *testRegistry {
	t.Helper()
	r, err := launchRegistry(t, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func launchRegistry(t testing.TB, dir string, o registryOpts) (*testRegistry, error) {
	r := &testRegistry{Dir: dir, User: o.User, Pass: o.Pass, log: filepath.Join(dir, "registry.log"), done: make(chan struct{})}
	var cfg strings.Builder
	port := freePort(t)
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)
	fmt.Fprintf(&cfg, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: ocimount-test-secret
`, filepath.Join(dir, "storage"), r.Host)
	if o.TLS {
		ca, err := newTestCA(dir)
		if err != nil {
			return nil, err
		}
		r.CAFile = ca.file
		cert, key, err := ca.issue(dir, "registry", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	switch {
	case o.Token:
		ts, err := startTokenServer(dir, o.User, o.Pass, o.TokenExp)
		if err != nil {
			return nil, err
		}
		r.Token = ts
		fmt.Fprintf(&cfg, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			ts.Realm, ts.Service, ts.Issuer, ts.CertFile)
	case o.User != "":
		hp := filepath.Join(dir, "htpasswd")
		out, err := exec.Command("htpasswd", "-Bbc", hp, o.User, o.Pass).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("htpasswd: %v\n%s", err, out)
		}
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: ocimount-test\n    path: %s\n", hp)
	}
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	logF, err := os.Create(r.log)
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command("docker-registry", "serve", cfgFile)
	r.cmd.Stdout, r.cmd.Stderr = logF, logF
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logF.Close()
		return nil, err
	}
	go func() { r.cmd.Wait(); logF.Close(); close(r.done) }()
	// Wait for /v2/ to answer (200 anonymous, 401 with auth).
	scheme := "http"
	client := &http.Client{Timeout: 2 * time.Second}
	if o.TLS {
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(scheme + "://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || resp.StatusCode == 401 {
				return r, nil
			}
		}
		select {
		case <-r.done:
			b, _ := os.ReadFile(r.log)
			return nil, fmt.Errorf("docker-registry exited early:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			b, _ := os.ReadFile(r.log)
			return nil, fmt.Errorf("docker-registry on %s did not answer /v2/ in 20 s (last: %v):\n%s", r.Host, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *testRegistry) stop() {
	if r.Token != nil {
		r.Token.srv.Close()
	}
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

// push copies an image (skopeo transport:ref) into repo[:tag] of r.
func (r *testRegistry) push(t *testing.T, src, dest string) {
	t.Helper()
	args := []string{"--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"}

	if r.User != "" {
		args = append(args, "--dest-creds", r.User+":"+r.Pass)
	}
	args = append(args, src, "docker://"+r.Host+"/"+dest)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pushLayout uploads an OCI layout's blobs and its first manifest as is,
// to a plain anonymous registry. skopeo cannot be used for uncompressed
// images: it compresses layers for registries and, even with
// --dest-decompress, substitutes compressed blobs it knows from its blob
// info cache.
func pushLayout(host, layout, dest string) error {
	repo, tag, _ := strings.Cut(dest, ":")
	var idx struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) == 0 {
		return fmt.Errorf("%s/index.json: %v", layout, err)
	}
	ents, err := os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
	if err != nil {
		return err
	}
	base := "http://" + host + "/v2/" + repo
	for _, e := range ents {
		dg := "sha256:" + e.Name()
		if "sha256:"+e.Name() == idx.Manifests[0].Digest {
			continue
		}
		resp, err := http.Post(base+"/blobs/uploads/", "", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			return fmt.Errorf("start upload: %s", resp.Status)
		}
		if !strings.HasPrefix(loc, "http") {
			loc = "http://" + host + loc
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		f, err := os.Open(filepath.Join(layout, "blobs", "sha256", e.Name()))
		if err != nil {
			return err
		}
		st, _ := f.Stat()
		req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+dg, f)
		req.ContentLength = st.Size()
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		f.Close()
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("upload %s: %s", dg, resp.Status)
		}
	}
	m := idx.Manifests[0]
	data, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:")))
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/manifests/"+tag, strings.NewReader(string(data)))
	req.Header.Set("Content-Type", m.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("put manifest: %s", resp.Status)
	}
	return nil
}

// manifestDigest asks the registry for dest's manifest digest (anonymous,
// plain registries only).
func (r *testRegistry) manifestDigest(t *testing.T, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+r.Host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d := resp.Header.Get("Docker-Content-Digest")
	if resp.StatusCode != 200 || !strings.HasPrefix(d, "sha256:") {
		t.Fatalf("HEAD manifest %s:%s: %s, digest %q", repo, tag, resp.Status, d)
	}
	return d
}

// sharedReg is one plain registry per test run with the fixture pushed as
// fixture/gzip, fixture/zstd and fixture/tar (:latest). Tests must not
// change these repositories (push indexes to their own copies).
var (
	sharedOnce sync.Once
	sharedReg  *testRegistry
	sharedErr  error
)

func sharedRegistry(t *testing.T) *testRegistry {
	t.Helper()
	f := images(t)
	sharedOnce.Do(func() {
		dir := filepath.Join(scratch, "registry")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			sharedErr = err
			return
		}
		r, err := launchRegistry(t, dir, registryOpts{})
		if err != nil {
			sharedErr = err
			return
		}
		atExit(r.stop)
		start := time.Now()
		for _, v := range []string{"gzip", "zstd"} {
			r.push(t, "oci:"+f.Dir+"/"+v+":latest", "fixture/"+v+":latest")
		}
		if err := pushLayout(r.Host, f.Dir+"/tar", "fixture/tar:latest"); err != nil {
			sharedErr = err
			return
		}
		t.Logf("pushed the fixture images in %v", time.Since(start).Round(time.Millisecond))
		sharedReg = r
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	if sharedReg == nil {
		t.Fatal("shared registry failed to start in an earlier test")
	}
	return sharedReg
}

// runEnv runs ocimount with env added to (or replacing keys of) the
// test's environment; a "KEY=" entry with no value removes KEY.
func runEnv(t *testing.T, env []string, timeout time.Duration, args ...string) result {
	t.Helper()
	return runWith(t, "", env, timeout, args...)
}

func mergeEnv(base, extra []string) []string {
	drop := map[string]bool{}
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		drop[k] = true
	}
	var out []string
	for _, e := range base {
		k, _, _ := strings.Cut(e, "=")
		if !drop[k] {
			out = append(out, e)
		}
	}
	for _, e := range extra {
		if !strings.HasSuffix(e, "=") { // "KEY=" only removes KEY
			out = append(out, e)
		}
	}
	return out
}

// isolatedEnv keeps the user's real credentials and CA settings out of a
// test: HOME, DOCKER_CONFIG, XDG dirs point at empty directories.
func isolatedEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, "docker"), "XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "REGISTRY_AUTH_FILE=", "SSL_CERT_FILE=", "SSL_CERT_DIR=", "OCIMOUNT_CREDS="}
	return append(env, extra...)
}

// remoteMount mounts ref with a cache dir of its own (returned) and fails
// the test if that does not work.
func remoteMount(t *testing.T, env []string, ref string, flags ...string) (mnt, cacheDir string) {
	t.Helper()
	// Cleanups run last-registered first: the mount comes down, then its
	// server is waited for (it logs into the cache dir as it exits, and
	// was seen to do so while the cache dir was being removed), then the
	// cache dir goes.
	cacheDir = t.TempDir()
	t.Cleanup(func() {
		if mnt != "" && !waitFor(10*time.Second, func() bool { return len(serverPIDs(t, mnt)) == 0 }) {
			t.Errorf("server of %s still running 10 s after the unmount", mnt)
		}
	})
	mnt = newMountpoint(t)
	args := append([]string{"mount", "--cache-dir", cacheDir}, flags...)
	r := runEnv(t, env, 2*time.Minute, append(args, ref, mnt)...)
	if r.code != 0 {
		b, _ := os.ReadFile(filepath.Join(cacheDir, "ocimount.log"))
		t.Fatalf("mount failed: %s\nlog:\n%s", r, b)
	}
	if findMount(t, mnt) == nil {
		t.Fatalf("mount exited 0 but nothing is mounted at %s: %s", mnt, r)
	}
	return mnt, cacheDir
}

// requireNoMount checks that a failed mount left nothing behind.
func requireNoMount(t *testing.T, mnt string) {
	t.Helper()
	if findMount(t, mnt) != nil {
		t.Errorf("failed mount left %s mounted", mnt)
	}
	if waitFor(3*time.Second, func() bool { return len(serverPIDs(t, mnt)) == 0 }) {
		return
	}
	t.Errorf("failed mount left server processes %v", serverPIDs(t, mnt))
}

// layerStatus mirrors the JSON of `ocimount status --json` (cmd/ocimount/status.go).
type layerStatus struct {
	Index       int    `json:"index"`
	Digest      string `json:"digest"`
	Format      string `json:"format"`
	Size        int64  `json:"size"`
	Remote      bool   `json:"remote"`
	FullyLocal  bool   `json:"fully_local"`
	Fetched     int64  `json:"fetched"`
	Served      int64  `json:"served"`
	Requests    int64  `json:"requests"`
	Retries     int64  `json:"retries"`
	ChunkHits   int64  `json:"chunk_hits"`
	ChunkMisses int64  `json:"chunk_misses"`
	Rejected    int64  `json:"rejected"`
	FailedFast  int64  `json:"failed_fast"`
	// FailingChunks: chunks that just failed and fail reads at once.
	FailingChunks int `json:"failing_chunks"`
	Chunks        int `json:"chunks"`
	Local         int `json:"local_chunks"`
}

type mountStatus struct {
	Mountpoint string        `json:"mountpoint"`
	Source     string        `json:"source"`
	Manifest   string        `json:"manifest"`
	Layers     []layerStatus `json:"layers"`
}

func (s mountStatus) sum(f func(layerStatus) int64) int64 {
	var n int64
	for _, l := range s.Layers {
		n += f(l)
	}
	return n
}

func statusOf(t *testing.T, mnt string) mountStatus {
	t.Helper()
	r := run(t, 30*time.Second, "status", "--json", mnt)
	if r.code != 0 {
		t.Fatalf("status: %s", r)
	}
	var st mountStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// readLog returns the mount server's log in cacheDir.
func readLog(cacheDir string) string {
	b, _ := os.ReadFile(filepath.Join(cacheDir, "ocimount.log"))
	return string(b)
}

// pushIndexes runs `ocimount index --push` for ref (directly against the
// registry) with a throwaway cache.
func pushIndexes(t *testing.T, env []string, ref string, flags ...string) {
	t.Helper()
	args := append([]string{"index", "--push", "--quiet", "--cache-dir", t.TempDir()}, flags...)
	r := runEnv(t, env, 3*time.Minute, append(args, ref)...)
	if r.code != 0 {
		t.Fatalf("index --push: %s", r)
	}
}

// --- certificates -----------------------------------------------------------

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(dir string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ocimount test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, file: file}, nil
}

// issue writes NAME.pem and NAME.key for a server certificate.
func (ca *testCA) issue(dir, name string, dns []string, ips []net.IP) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: dns[0]},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// --- token server -------------------------------------------------------------

// tokenServer issues ES256 JWTs in the format distribution 2.8 verifies
// (header x5c = the signing certificate, which is the registry's
// rootcertbundle), for any scope asked. With User set it requires those
// basic credentials.
type tokenServer struct {
	Realm, Service, Issuer, CertFile string
	User, Pass                       string
	exp                              time.Duration
	key                              *ecdsa.PrivateKey
	certDER                          []byte
	srv                              *http.Server
	mu                               sync.Mutex
	issued                           int
}

func startTokenServer(dir, user, pass string, exp time.Duration) (*tokenServer, error) {
	if exp == 0 {
		exp = 5 * time.Minute
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "ocimount test token signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ts := &tokenServer{Service: "ocimount-test-registry", Issuer: "ocimount-test-issuer", User: user, Pass: pass, exp: exp, key: key, certDER: der,
		CertFile: filepath.Join(dir, "token-signer.pem")}
	if err := os.WriteFile(ts.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// go-containerregistry refuses a realm on a private IP literal that
	// is not the registry itself: name the host.
	ts.Realm = fmt.Sprintf("http://localhost:%d/token", l.Addr().(*net.TCPAddr).Port)
	ts.srv = &http.Server{Handler: http.HandlerFunc(ts.serve)}
	go ts.srv.Serve(l)
	return ts, nil
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" || (r.Method != http.MethodGet) {
		http.NotFound(w, r)
		return
	}
	if ts.User != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != ts.User || p != ts.Pass {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
	}
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, s := range r.URL.Query()["scope"] {
		// repository:NAME:ACTIONS (NAME has no colon in these tests).
		parts := strings.Split(s, ":")
		if len(parts) != 3 {
			continue
		}
		grants = append(grants, access{Type: parts[0], Name: parts[1], Actions: strings.Split(parts[2], ",")})
	}
	now := time.Now()
	claims := map[string]any{
		"iss": ts.Issuer, "sub": "tester", "aud": r.URL.Query().Get("service"),
		"exp": now.Add(ts.exp).Unix(), "nbf": now.Add(-2 * time.Minute).Unix(), "iat": now.Add(-2 * time.Minute).Unix(),
		"jti": fmt.Sprint(now.UnixNano()), "access": grants,
	}
	tok, err := ts.sign(claims)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	ts.mu.Lock()
	ts.issued++
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": max(int(ts.exp/time.Second), 1), "issued_at": now.UTC().Format(time.RFC3339)})
}

func (ts *tokenServer) sign(claims map[string]any) (string, error) {
	hdr, _ := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)}})
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(hdr) + "." + enc.EncodeToString(body)
	h := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, h[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued
}
