package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ocimount/ocimount/internal/tartest"
)

// TestContainerdSnapshotterCRI is the Kubernetes path: containerd's CRI
// plugin configured as the README says (snapshotter = "ocimount",
// disable_snapshot_annotations = false), driven by a CRI client as the
// kubelet drives it: pull an image, run a pod sandbox (host network, no
// CNI) and a container in it, read the container's log.
func TestContainerdSnapshotterCRI(t *testing.T) {
	requireIntegration(t, "containerd", "ctr", "runc", "docker-registry", "containerd-shim-runc-v2")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatal("/bin/busybox missing (package busybox-static)")
	}
	ocimountBin(t)
	snapshotterBin(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, registryOpts{})
	work := t.TempDir()
	pause := tartest.Image{
		Layers: []tartest.ImageLayer{{Compression: tartest.Gzip, Tar: tartest.Tar(t,
			tartest.Dir("bin/", 0o755), tartest.FileBytes("bin/busybox", bb, 0o755), tartest.Symlink("bin/sleep", "busybox"))}},
		Config: ocispec.ImageConfig{Entrypoint: []string{"/bin/sleep", "3600"}},
	}
	images := map[string]tartest.Image{"pause": pause, "app": snapImage(t, "marker-cri", 7, false)}
	infos := map[string]tartest.ImageInfo{}
	for name, img := range images {
		l := filepath.Join(work, name)
		infos[name] = tartest.WriteOCILayoutInfo(t, l, img)[0]
		if err := pushLayout(reg.Host, l, "cri/"+name+":v1"); err != nil {
			t.Fatal(err)
		}
		pushIndexes(t, isolatedEnv(t), "docker://"+reg.Host+"/cri/"+name+":v1")
	}
	proxy := startFaultProxy(t, reg.Host, nil)
	ref := func(name string) string { return proxy.Host + "/cri/" + name + ":v1" }

	e := newCtrEnvCRI(t, func(dir string) string {
		return fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # a pod sandbox asks for oom_score_adj -998, which this machine (no
  # CAP_SYS_RESOURCE) refuses: clamp to containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "ocimount"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%q]
    endpoint = [%q]
`, ref("pause"), filepath.Join(dir, "runc"), filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), proxy.Host, "http://"+proxy.Host)
	})
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fail := func(what string, err error) {
		t.Helper()
		t.Fatalf("%s: %v\nsnapshotter log:\n%s\ncontainerd log:\n%s", what, err, e.snapshotterLog(), e.containerdLog())
	}
	if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref("app")}}); err != nil {
		fail("CRI PullImage", err)
	}
	if n := len(e.remoteMounts()); n != 3 {
		t.Fatalf("%d remote snapshots after a CRI pull of 3 layers\n%s", n, e.snapshotterLog())
	}
	logDir := filepath.Join(e.dir, "pod-logs")
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "ocimount-pod", Uid: "ocimount-pod-uid", Namespace: "default"},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		fail("RunPodSandbox", err)
	}
	defer func() {
		rt.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
	}()
	c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId:  sb.PodSandboxId,
		SandboxConfig: sbCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: ref("app")},
			Command:  []string{"/bin/sh", "-c", snapCmd},
			LogPath:  "app.log",
		},
	})
	if err != nil {
		fail("CreateContainer", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		fail("StartContainer", err)
	}
	var st *runtimeapi.ContainerStatusResponse
	if !waitFor(30*time.Second, func() bool {
		st, err = rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.ContainerId})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	}) {
		fail("the container did not exit", err)
	}
	b, err := os.ReadFile(filepath.Join(logDir, "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	// CRI log lines: TIMESTAMP STREAM TAG TEXT
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 && f[1] == "stdout" {
			out.WriteString(f[3] + "\n")
		}
	}
	if st.Status.ExitCode != 0 {
		t.Fatalf("container exit code %d, log:\n%s", st.Status.ExitCode, b)
	}
	checkSnapOutput(t, out.String(), "marker-cri")
	content := e.contentDigests()
	for name, info := range infos {
		for i, l := range info.Layers {
			if strings.Contains(content, l.Digest.String()) {
				t.Errorf("%s: layer %d is in containerd's content store", name, i)
			}
			if _, whole, _ := proxy.counts(l.Digest.String()); whole != 0 {
				t.Errorf("%s: layer %d fetched whole %d times", name, i, whole)
			}
		}
	}
	if n := len(e.remoteMounts()); n != 4 {
		t.Errorf("%d remote snapshots with the sandbox image pulled too, want 4", n)
	}
}
