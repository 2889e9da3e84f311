package bundle

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
+nisuser::::::
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
broken:x:notanumber:1:::
short:x:5
nogroup-user:x:1001:4242::/:/bin/sh
`

const testGroup = `root:x:0:
daemon:x:1:app
wheel:x:10:root,app
app:x:1000:
staff:x:50: app , other
audio:x:29:other
`

func imageFS(passwd, group string) fs.FS {
	m := fstest.MapFS{}
	if passwd != "" {
		m["etc/passwd"] = &fstest.MapFile{Data: []byte(passwd), Mode: 0o644}
	}
	if group != "" {
		m["etc/group"] = &fstest.MapFile{Data: []byte(group), Mode: 0o644}
	}
	return m
}

func TestResolveUser(t *testing.T) {
	root := imageFS(testPasswd, testGroup)
	cases := []struct {
		spec    string
		want    rspec.User
		wantErr string
	}{
		{"", rspec.User{UID: 0, GID: 0}, ""},
		{"0", rspec.User{UID: 0, GID: 0}, ""},
		{"1000", rspec.User{UID: 1000, GID: 1000}, ""},      // gid from passwd, no supplementary groups (numeric)
		{"4321", rspec.User{UID: 4321, GID: 0}, ""},         // unknown uid: allowed, gid 0
		{"1000:77", rspec.User{UID: 1000, GID: 77}, ""},     // numeric pair: verbatim
		{"5000:6000", rspec.User{UID: 5000, GID: 6000}, ""}, // verbatim even if unknown
		{"app", rspec.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1, 10, 50}}, ""},
		{"root", rspec.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 10}}, ""},
		{"daemon", rspec.User{UID: 1, GID: 1, AdditionalGids: []uint32{1}}, ""}, // member of nothing else
		{"app:wheel", rspec.User{UID: 1000, GID: 10}, ""},
		{"app:33", rspec.User{UID: 1000, GID: 33}, ""},
		{"1000:staff", rspec.User{UID: 1000, GID: 50}, ""},
		{"nogroup-user", rspec.User{UID: 1001, GID: 4242, AdditionalGids: []uint32{4242}}, ""},
		{"nobody", rspec.User{}, "not defined"},
		{"app:nogroup", rspec.User{}, "not defined"},
		{"+nisuser", rspec.User{}, "not defined"},
		{"broken", rspec.User{}, "not defined"},
		{"app:", rspec.User{}, "empty group"},
		{":0", rspec.User{}, "empty user"},
		{"4294967295", rspec.User{}, "out of range"},
		{"99999999999", rspec.User{}, "out of range"},
		{"0:4294967296", rspec.User{}, "out of range"},
	}
	for _, c := range cases {
		got, err := ResolveUser(c.spec, root)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ResolveUser(%q) = %+v, %v; want error containing %q", c.spec, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ResolveUser(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
	}
}

func TestResolveUserMissingFiles(t *testing.T) {
	empty := imageFS("", "")
	if u, err := ResolveUser("123:456", empty); err != nil || u.UID != 123 || u.GID != 456 {
		t.Errorf("numeric without files: %+v, %v", u, err)
	}
	if u, err := ResolveUser("", empty); err != nil || u.UID != 0 {
		t.Errorf("empty without files: %+v, %v", u, err)
	}
	if _, err := ResolveUser("app", empty); err == nil || !strings.Contains(err.Error(), "/etc/passwd") {
		t.Errorf("name without /etc/passwd: %v", err)
	}
	// No /etc/group: a named user simply has no supplementary groups, but
	// a named group cannot be resolved.
	noGroup := imageFS(testPasswd, "")
	if u, err := ResolveUser("app", noGroup); err != nil || u.UID != 1000 || !reflect.DeepEqual(u.AdditionalGids, []uint32{1000}) {
		t.Errorf("name without /etc/group: %+v, %v", u, err)
	}
	if _, err := ResolveUser("app:wheel", noGroup); err == nil || !strings.Contains(err.Error(), "/etc/group") {
		t.Errorf("group without /etc/group: %v", err)
	}
	// A directory where /etc/passwd should be is an error, not a crash.
	dir := fstest.MapFS{"etc/passwd/x": &fstest.MapFile{Data: []byte("x")}}
	if _, err := ResolveUser("app", dir); err == nil {
		t.Errorf("passwd is a directory: no error")
	}
}

func TestParseLongLine(t *testing.T) {
	long := strings.Repeat("a", maxLine+10)
	b := []byte(long + "\napp:x:1:2::/:/bin/sh\n" + long)
	got := ParsePasswd(b)
	if len(got) != 1 || got[0].Name != "app" || got[0].UID != 1 || got[0].GID != 2 {
		t.Fatalf("ParsePasswd with long lines = %+v", got)
	}
	g := ParseGroup([]byte("g:x:7:a,,b\r\n"))
	if len(g) != 1 || !reflect.DeepEqual(g[0].Members, []string{"a", "b"}) {
		t.Fatalf("ParseGroup = %+v", g)
	}
}

func FuzzParsePasswdGroup(f *testing.F) {
	f.Add([]byte(testPasswd), []byte(testGroup), "app")
	f.Add([]byte("a:b:c:d:e:f:g"), []byte("::::"), "a:b")
	f.Add([]byte("\x00:x:0:0::/:\n"), []byte("\xff:x:1:\xff"), "1:2")
	f.Fuzz(func(t *testing.T, passwd, group []byte, user string) {
		for _, p := range ParsePasswd(passwd) {
			if p.Name == "" || strings.ContainsAny(p.Name, ":\n") || p.UID == 1<<32-1 || p.GID == 1<<32-1 {
				t.Fatalf("bad entry %+v", p)
			}
		}
		for _, g := range ParseGroup(group) {
			if g.Name == "" || strings.ContainsAny(g.Name, ":\n") || g.GID == 1<<32-1 {
				t.Fatalf("bad entry %+v", g)
			}
			for _, m := range g.Members {
				if m == "" || strings.ContainsAny(m, ",\n") {
					t.Fatalf("bad member %q", m)
				}
			}
		}
		root := fstest.MapFS{
			"etc/passwd": &fstest.MapFile{Data: passwd},
			"etc/group":  &fstest.MapFile{Data: group},
		}
		u, err := ResolveUser(user, root)
		if err == nil && (u.UID == 1<<32-1 || u.GID == 1<<32-1) {
			t.Fatalf("ResolveUser(%q) gave the invalid id: %+v", user, u)
		}
	})
}

func testImage() ocispec.Image {
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	img := ocispec.Image{
		Created: &created,
		Author:  "someone",
		Platform: ocispec.Platform{
			OS: "linux", Architecture: "amd64", Variant: "v3",
		},
		Config: ocispec.ImageConfig{
			User:         "app",
			Entrypoint:   []string{"/bin/entry", "-x"},
			Cmd:          []string{"serve", "--port=80"},
			Env:          []string{"FOO=bar", "PATH=/custom/bin"},
			WorkingDir:   "/srv",
			StopSignal:   "SIGQUIT",
			ExposedPorts: map[string]struct{}{"80/tcp": {}, "53/udp": {}},
			Labels: map[string]string{
				"com.example.x":                   "1",
				"org.opencontainers.image.author": "label-wins",
			},
		},
	}
	return img
}

func TestGenerate(t *testing.T) {
	root := imageFS(testPasswd, testGroup)
	type tc struct {
		name    string
		edit    func(*ocispec.Image)
		opts    Options
		check   func(t *testing.T, s *rspec.Spec)
		wantErr error
		errText string
	}
	cases := []tc{
		{name: "full", check: func(t *testing.T, s *rspec.Spec) {
			p := s.Process
			if want := []string{"/bin/entry", "-x", "serve", "--port=80"}; !reflect.DeepEqual(p.Args, want) {
				t.Errorf("args %q, want %q", p.Args, want)
			}
			if want := []string{"FOO=bar", "PATH=/custom/bin"}; !reflect.DeepEqual(p.Env, want) {
				t.Errorf("env %q, want %q (image PATH kept, nothing added)", p.Env, want)
			}
			if p.Cwd != "/srv" {
				t.Errorf("cwd %q", p.Cwd)
			}
			if want := (rspec.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1, 10, 50}}); !reflect.DeepEqual(p.User, want) {
				t.Errorf("user %+v, want %+v", p.User, want)
			}
			if !s.Root.Readonly || s.Root.Path != "rootfs" {
				t.Errorf("root %+v", s.Root)
			}
			want := map[string]string{
				AnnotationOS: "linux", AnnotationArchitecture: "amd64", AnnotationVariant: "v3",
				AnnotationAuthor: "label-wins", AnnotationCreated: "2024-05-06T07:08:09Z",
				AnnotationStopSignal: "SIGQUIT", AnnotationExposedPorts: "53/udp,80/tcp",
				"com.example.x": "1",
			}
			if !reflect.DeepEqual(s.Annotations, want) {
				t.Errorf("annotations %v, want %v", s.Annotations, want)
			}
			if p.Terminal {
				t.Errorf("terminal set")
			}
		}},
		{name: "args-replace-cmd", opts: Options{Args: []string{"echo", "hi"}}, check: func(t *testing.T, s *rspec.Spec) {
			if want := []string{"/bin/entry", "-x", "echo", "hi"}; !reflect.DeepEqual(s.Process.Args, want) {
				t.Errorf("args %q, want %q", s.Process.Args, want)
			}
		}},
		{name: "cmd-only", edit: func(i *ocispec.Image) { i.Config.Entrypoint = nil }, check: func(t *testing.T, s *rspec.Spec) {
			if want := []string{"serve", "--port=80"}; !reflect.DeepEqual(s.Process.Args, want) {
				t.Errorf("args %q", s.Process.Args)
			}
		}},
		{name: "entrypoint-only", edit: func(i *ocispec.Image) { i.Config.Cmd = nil }, check: func(t *testing.T, s *rspec.Spec) {
			if want := []string{"/bin/entry", "-x"}; !reflect.DeepEqual(s.Process.Args, want) {
				t.Errorf("args %q", s.Process.Args)
			}
		}},
		{name: "args-without-image-command", edit: func(i *ocispec.Image) { i.Config.Cmd, i.Config.Entrypoint = nil, nil },
			opts: Options{Args: []string{"sh"}}, check: func(t *testing.T, s *rspec.Spec) {
				if want := []string{"sh"}; !reflect.DeepEqual(s.Process.Args, want) {
					t.Errorf("args %q", s.Process.Args)
				}
			}},
		{name: "no-command", edit: func(i *ocispec.Image) { i.Config.Cmd, i.Config.Entrypoint = nil, nil }, wantErr: ErrNoCommand},
		{name: "empty-command", edit: func(i *ocispec.Image) { i.Config.Cmd, i.Config.Entrypoint = []string{""}, nil }, errText: "empty string"},
		{name: "defaults", edit: func(i *ocispec.Image) {
			i.Config.Env, i.Config.WorkingDir, i.Config.User, i.Config.Labels = nil, "", "", nil
			i.Config.StopSignal, i.Config.ExposedPorts, i.Author, i.Created = "", nil, "", nil
			i.Platform = ocispec.Platform{}
		}, check: func(t *testing.T, s *rspec.Spec) {
			if want := []string{DefaultPath}; !reflect.DeepEqual(s.Process.Env, want) {
				t.Errorf("env %q", s.Process.Env)
			}
			if s.Process.Cwd != "/" || s.Process.User.UID != 0 || s.Process.User.GID != 0 {
				t.Errorf("cwd %q user %+v", s.Process.Cwd, s.Process.User)
			}
			if s.Annotations != nil {
				t.Errorf("annotations %v", s.Annotations)
			}
		}},
		{name: "relative-workdir", edit: func(i *ocispec.Image) { i.Config.WorkingDir = "work/../data" }, check: func(t *testing.T, s *rspec.Spec) {
			if s.Process.Cwd != "/data" {
				t.Errorf("cwd %q", s.Process.Cwd)
			}
		}},
		{name: "unknown-user", edit: func(i *ocispec.Image) { i.Config.User = "ghost" }, wantErr: ErrUnknownUser},
		{name: "writable", opts: Options{Writable: true}, check: func(t *testing.T, s *rspec.Spec) {
			if s.Root.Readonly {
				t.Errorf("writable bundle has a read-only root")
			}
		}},
		{name: "rootless-nonroot-user", opts: Options{Rootless: true, HostUID: 1000, HostGID: 1000}, errText: "rootless"},
		{name: "rootless-root-by-name", edit: func(i *ocispec.Image) { i.Config.User = "root" }, opts: Options{Rootless: true},
			check: func(t *testing.T, s *rspec.Spec) {
				if want := (rspec.User{}); !reflect.DeepEqual(s.Process.User, want) {
					t.Errorf("user %+v, want %+v (no additionalGids in a user namespace)", s.Process.User, want)
				}
			}},
		{name: "rootless", edit: func(i *ocispec.Image) { i.Config.User = "" }, opts: Options{Rootless: true, HostUID: 1234, HostGID: 5678},
			check: func(t *testing.T, s *rspec.Spec) {
				l := s.Linux
				if want := []rspec.LinuxIDMapping{{ContainerID: 0, HostID: 1234, Size: 1}}; !reflect.DeepEqual(l.UIDMappings, want) {
					t.Errorf("uid mappings %+v", l.UIDMappings)
				}
				if want := []rspec.LinuxIDMapping{{ContainerID: 0, HostID: 5678, Size: 1}}; !reflect.DeepEqual(l.GIDMappings, want) {
					t.Errorf("gid mappings %+v", l.GIDMappings)
				}
				var types []rspec.LinuxNamespaceType
				for _, n := range l.Namespaces {
					types = append(types, n.Type)
				}
				if want := []rspec.LinuxNamespaceType{"pid", "ipc", "uts", "mount", "user"}; !reflect.DeepEqual(types, want) {
					t.Errorf("namespaces %v", types)
				}
				if l.Resources != nil {
					t.Errorf("resources %+v", l.Resources)
				}
				for _, m := range s.Mounts {
					for _, o := range m.Options {
						if strings.HasPrefix(o, "gid=") {
							t.Errorf("mount %s keeps %s", m.Destination, o)
						}
					}
					if m.Destination == "/sys" && (m.Type != "none" || m.Source != "/sys" || m.Options[0] != "rbind") {
						t.Errorf("/sys mount %+v", m)
					}
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := testImage()
			if c.edit != nil {
				c.edit(&img)
			}
			s, err := Generate(img, root, c.opts)
			switch {
			case c.wantErr != nil:
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			case c.errText != "":
				if err == nil || !strings.Contains(err.Error(), c.errText) {
					t.Fatalf("err = %v, want one containing %q", err, c.errText)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

// TestDefaultsMatchRunc compares everything but process/root/annotations
// with what the installed runc's `runc spec` (and `--rootless`) writes, so
// that the defaults stay "what runc spec would give". Skipped without runc.
func TestDefaultsMatchRunc(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc not installed")
	}
	for _, rootless := range []bool{false, true} {
		dir := t.TempDir()
		args := []string{"spec"}
		if rootless {
			args = append(args, "--rootless")
		}
		cmd := exec.Command(runc, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("runc spec: %v: %s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var want rspec.Spec
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		img := testImage()
		img.Config.User = ""
		o := Options{Rootless: rootless}
		if rootless && len(want.Linux.UIDMappings) == 1 {
			o.HostUID, o.HostGID = want.Linux.UIDMappings[0].HostID, want.Linux.GIDMappings[0].HostID
		}
		got, err := Generate(img, imageFS("", ""), o)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Mounts, want.Mounts) {
			t.Errorf("rootless=%v mounts differ from runc spec:\ngot  %+v\nwant %+v", rootless, got.Mounts, want.Mounts)
		}
		if !reflect.DeepEqual(got.Linux, want.Linux) {
			gj, _ := json.Marshal(got.Linux)
			wj, _ := json.Marshal(want.Linux)
			t.Errorf("rootless=%v linux differs from runc spec:\ngot  %s\nwant %s", rootless, gj, wj)
		}
		if !reflect.DeepEqual(got.Process.Capabilities, want.Process.Capabilities) ||
			!reflect.DeepEqual(got.Process.Rlimits, want.Process.Rlimits) ||
			got.Process.NoNewPrivileges != want.Process.NoNewPrivileges {
			t.Errorf("rootless=%v process defaults differ from runc spec", rootless)
		}
	}
}

func TestMissingMountpoints(t *testing.T) {
	img := testImage()
	img.Config.User = ""
	s, err := Generate(img, imageFS("", ""), Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := fstest.MapFS{
		"proc":     &fstest.MapFile{Mode: fs.ModeDir | 0o555},
		"dev":      &fstest.MapFile{Mode: fs.ModeDir | 0o755},
		"sys":      &fstest.MapFile{Data: []byte("a file, not a dir")},
		"srv/x":    &fstest.MapFile{Data: []byte("x")},
		"etc/motd": &fstest.MapFile{},
	}
	// /dev/pts etc. live in the /dev tmpfs and /sys/fs/cgroup in sysfs:
	// only the top-level destinations and the cwd must be in the image.
	if got, want := MissingMountpoints(s, root), []string{"/sys"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MissingMountpoints = %v, want %v", got, want)
	}
	s.Process.Cwd = "/nope"
	if got, want := MissingMountpoints(s, root), []string{"/sys", "/nope"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MissingMountpoints = %v, want %v", got, want)
	}
}

// TestCheckMountpoints: the refusal of a read-only bundle names, for each
// path, the first thing in the way, and there is none when nothing is.
func TestCheckMountpoints(t *testing.T) {
	img := testImage()
	img.Config.User = ""
	s, err := Generate(img, imageFS("", ""), Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := fstest.MapFS{
		"proc": &fstest.MapFile{Mode: fs.ModeDir | 0o555},
		"dev":  &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte("/elsewhere")},
		"sys":  &fstest.MapFile{Data: []byte("a file, not a dir")},
		"srv":  &fstest.MapFile{Mode: fs.ModeDir | 0o755}, // the cwd
	}
	err = CheckMountpoints(s, root)
	for _, want := range []string{
		`/dev (/dev is a symlink to "/elsewhere", not followed to add directories)`,
		"/sys (/sys is a regular file in the image)",
		"with --writable the runtime gets to try",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckMountpoints = %v, want it to say %q", err, want)
		}
	}
	root["dev"] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
	root["sys"] = &fstest.MapFile{Mode: fs.ModeDir | 0o555}
	if err := CheckMountpoints(s, root); err != nil {
		t.Errorf("CheckMountpoints with every directory there: %v", err)
	}
}

// TestMountpoints: what a read-only bundle must show as directories — the
// top-level mount destinations of runc spec's list (also rootless, where
// /sys is a bind mount) and the cwd — not what lies inside another mount.
func TestMountpoints(t *testing.T) {
	img := testImage()
	img.Config.User = ""
	img.Config.WorkingDir = "/srv/app"
	for _, rootless := range []bool{false, true} {
		s, err := Generate(img, imageFS("", ""), Options{Rootless: rootless})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := Mountpoints(s), []string{"/proc", "/dev", "/sys", "/srv/app"}; !reflect.DeepEqual(got, want) {
			t.Errorf("rootless=%v: Mountpoints = %q, want %q", rootless, got, want)
		}
	}
}
