// Package bundle makes and removes OCI runtime bundles for `ocimount
// bundle`, everything but the command line and the background server.
//
// The config half (spec.go, user.go, passwd.go) turns an OCI image config
// into an OCI runtime config (config.json), following the image-spec's
// conversion document, with the defaults `runc spec` (and `runc spec
// --rootless`) would write. It is pure: the image's files come in as an
// fs.FS, nothing touches the host, so it is tested without mounts.
//
// The directory half (dir.go) is the bundle directory's lifecycle on the
// host: Prepare claims DIR and records in a state file everything that
// may be made there before anything is, so that Remove, Unmount and Undo
// take down exactly that, also after the server or the runtime died.
package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// Options are the caller's inputs on top of the image config.
type Options struct {
	// Args, when non-empty, replace the image's Cmd (the Entrypoint is
	// kept), like arguments after the image name in `docker run`.
	Args []string
	// Writable makes root.readonly false (the rootfs is an overlay).
	Writable bool
	// Rootless writes a config for a runtime run by an unprivileged user:
	// a user namespace mapping container root to HostUID/HostGID, no
	// network namespace, /sys bind-mounted, no device cgroup rules.
	Rootless         bool
	HostUID, HostGID uint32
}

// DefaultPath is added to process.env when the image sets no PATH, as
// runc spec and Docker do; a PATH from the image is never changed.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SpecVersion is the ociVersion written. Not the Go module's (1.2.x):
// crun 1.8 refuses any version but 1.0.x ("unknown version specified"),
// and nothing written here needs a later one.
const SpecVersion = "1.0.2"

// ErrNoCommand: the image has neither Entrypoint nor Cmd and no arguments
// were given, so there is nothing to run.
var ErrNoCommand = errors.New("the image has no Entrypoint or Cmd; give the command after --")

// Annotation keys from the image-spec conversion document.
const (
	AnnotationOS           = "org.opencontainers.image.os"
	AnnotationArchitecture = "org.opencontainers.image.architecture"
	AnnotationVariant      = "org.opencontainers.image.variant"
	AnnotationOSVersion    = "org.opencontainers.image.os.version"
	AnnotationOSFeatures   = "org.opencontainers.image.os.features"
	AnnotationAuthor       = "org.opencontainers.image.author"
	AnnotationCreated      = "org.opencontainers.image.created"
	AnnotationStopSignal   = "org.opencontainers.image.stopSignal"
	AnnotationExposedPorts = "org.opencontainers.image.exposedPorts"
)

// Generate builds the runtime config for img, resolving its User in root
// (the image's merged tree). root.path is "rootfs", as in a bundle.
func Generate(img ocispec.Image, root fs.FS, o Options) (*rspec.Spec, error) {
	c := img.Config
	args := append([]string{}, c.Entrypoint...)
	if len(o.Args) > 0 {
		args = append(args, o.Args...)
	} else {
		args = append(args, c.Cmd...)
	}
	if len(args) == 0 {
		return nil, ErrNoCommand
	}
	if args[0] == "" {
		return nil, fmt.Errorf("the command is an empty string (args %q)", args)
	}
	user, err := ResolveUser(c.User, root)
	if err != nil {
		return nil, err
	}
	if o.Rootless {
		if user.UID != 0 || user.GID != 0 {
			return nil, fmt.Errorf("image user %q is %d:%d, but a rootless bundle maps only container root to the calling user; run as root or use an image whose user is root", c.User, user.UID, user.GID)
		}
		// An unprivileged user namespace cannot setgroups(2), and the
		// other groups are not mapped anyway: runc refuses them.
		user.AdditionalGids = nil
	}
	env := append([]string{}, c.Env...)
	if !hasVar(env, "PATH") {
		env = append([]string{DefaultPath}, env...)
	}
	cwd := "/"
	if c.WorkingDir != "" {
		cwd = path.Join("/", c.WorkingDir)
	}

	s := &rspec.Spec{
		Version: SpecVersion,
		Process: &rspec.Process{
			User:            user,
			Args:            args,
			Env:             env,
			Cwd:             cwd,
			Capabilities:    defaultCaps(),
			Rlimits:         []rspec.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:        &rspec.Root{Path: "rootfs", Readonly: !o.Writable},
		Hostname:    "ocimount",
		Mounts:      defaultMounts(),
		Annotations: annotations(img),
		Linux: &rspec.Linux{
			Resources: &rspec.LinuxResources{
				Devices: []rspec.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Namespaces: []rspec.LinuxNamespace{
				{Type: rspec.PIDNamespace},
				{Type: rspec.NetworkNamespace},
				{Type: rspec.IPCNamespace},
				{Type: rspec.UTSNamespace},
				{Type: rspec.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				"/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	if o.Rootless {
		toRootless(s, o.HostUID, o.HostGID)
	}
	return s, nil
}

func hasVar(env []string, name string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == name {
			return true
		}
	}
	return false
}

// defaultCaps: runc spec's set.
func defaultCaps() *rspec.LinuxCapabilities {
	caps := func() []string { return []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"} }
	return &rspec.LinuxCapabilities{
		Bounding: caps(), Effective: caps(), Permitted: caps(), Ambient: caps(),
	}
}

// defaultMounts: runc spec's list, in its order (later mounts sit on top of
// earlier ones, so /dev must precede /dev/pts).
func defaultMounts() []rspec.Mount {
	return []rspec.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

// toRootless makes the changes `runc spec --rootless` makes: a user
// namespace with the caller mapped to root, no network namespace (an
// unprivileged user cannot configure one), no gid= on devpts (gid 5 is not
// mapped), /sys bind-mounted from the host (sysfs cannot be mounted without
// owning the network namespace), and no device cgroup rules (an
// unprivileged user cannot set them).
func toRootless(s *rspec.Spec, uid, gid uint32) {
	var ns []rspec.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != rspec.NetworkNamespace && n.Type != rspec.UserNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = append(ns, rspec.LinuxNamespace{Type: rspec.UserNamespace})
	s.Linux.UIDMappings = []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uid, Size: 1}}
	s.Linux.GIDMappings = []rspec.LinuxIDMapping{{ContainerID: 0, HostID: gid, Size: 1}}
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if m.Destination == "/sys" {
			m.Type, m.Source = "none", "/sys"
			m.Options = []string{"rbind", "nosuid", "noexec", "nodev", "ro"}
			continue
		}
		var opts []string
		for _, op := range m.Options {
			if !strings.HasPrefix(op, "gid=") {
				opts = append(opts, op)
			}
		}
		m.Options = opts
	}
	s.Linux.Resources = nil
}

// annotations: the implicit ones of the conversion document, then the
// image's labels, which win on conflict.
func annotations(img ocispec.Image) map[string]string {
	a := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(AnnotationOS, img.OS)
	set(AnnotationArchitecture, img.Architecture)
	set(AnnotationVariant, img.Variant)
	set(AnnotationOSVersion, img.OSVersion)
	set(AnnotationOSFeatures, strings.Join(img.OSFeatures, ","))
	set(AnnotationAuthor, img.Author)
	if img.Created != nil {
		set(AnnotationCreated, img.Created.UTC().Format(time.RFC3339Nano))
	}
	set(AnnotationStopSignal, img.Config.StopSignal)
	if len(img.Config.ExposedPorts) > 0 {
		ports := make([]string, 0, len(img.Config.ExposedPorts))
		for p := range img.Config.ExposedPorts {
			ports = append(ports, p)
		}
		sort.Strings(ports)
		set(AnnotationExposedPorts, strings.Join(ports, ","))
	}
	for k, v := range img.Config.Labels {
		a[k] = v
	}
	if len(a) == 0 {
		return nil
	}
	return a
}

// Mountpoints lists the directories the container needs in its rootfs:
// the mount destinations of s that are not below an earlier mount (/dev/pts
// lies in the /dev tmpfs, sysfs brings its own fs/cgroup: those are not the
// image's business) and process.cwd. A runtime creates missing ones in the
// rootfs (runc MkdirAll's them 0755), which a read-only rootfs cannot let
// it do, so a read-only bundle shows them itself (overlay.Tree.WithDirs).
func Mountpoints(s *rspec.Spec) []string {
	var out []string
	for i, m := range s.Mounts {
		below := false
		for _, up := range s.Mounts[:i] {
			if strings.HasPrefix(path.Clean(m.Destination)+"/", path.Clean(up.Destination)+"/") {
				below = true
			}
		}
		if !below {
			out = append(out, m.Destination)
		}
	}
	if s.Process != nil {
		out = append(out, s.Process.Cwd)
	}
	return out
}

// MissingMountpoints lists the paths of Mountpoints(s) that are not
// directories in root (following symlinks, as a runtime does), so that a
// container that cannot start says so before anything is mounted.
func MissingMountpoints(s *rspec.Spec, root fs.FS) []string {
	var missing []string
	for _, p := range Mountpoints(s) {
		rel := strings.TrimPrefix(path.Clean(p), "/")
		if rel == "" {
			continue
		}
		if fi, err := fs.Stat(root, rel); err != nil || !fi.IsDir() {
			missing = append(missing, p)
		}
	}
	return missing
}

// CheckMountpoints is MissingMountpoints as the error a read-only bundle
// is refused with (nil if none is missing), naming for each path what is
// in the way: the missing directories were added to the served tree, so
// what is left is something else where the container needs a directory,
// which only the runtime could deal with, and only in a writable rootfs
// (a symlink it follows and creates the target of; a file is an error
// there too).
func CheckMountpoints(s *rspec.Spec, root fs.FS) error {
	paths := MissingMountpoints(s, root)
	if len(paths) == 0 {
		return nil
	}
	var what []string
	for _, p := range paths {
		what = append(what, p+" ("+obstacle(root, strings.TrimPrefix(path.Clean(p), "/"))+")")
	}
	return fmt.Errorf("the container needs directories at %s; a read-only rootfs cannot replace what the image has there (with --writable the runtime gets to try)",
		strings.Join(what, ", "))
}

// obstacle describes the first component of rel that is not a directory.
func obstacle(fsys fs.FS, rel string) string {
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := fs.Lstat(fsys, p)
		if err != nil {
			return "/" + p + " is missing"
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := fs.ReadLink(fsys, p)
			return fmt.Sprintf("/%s is a symlink to %q, not followed to add directories", p, target)
		case !fi.IsDir():
			return fmt.Sprintf("/%s is a %s in the image", p, kindName(fi.Mode()))
		}
	}
	return "not a directory"
}

func kindName(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	}
	return "non-directory"
}
