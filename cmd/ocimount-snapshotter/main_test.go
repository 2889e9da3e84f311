package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocimount/ocimount/internal/snapshotter"
)

func TestReadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good := write("good.json", `{"registries": {"r.example:5000": {"creds": "u:p", "tls_verify": false}, "plain.example": {"plain_http": true}}}`, 0o600)
	regs, err := readConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]snapshotter.Registry{"r.example:5000": {Creds: "u:p", Insecure: true}, "plain.example": {PlainHTTP: true}}
	if len(regs) != len(want) || regs["r.example:5000"] != want["r.example:5000"] || regs["plain.example"] != want["plain.example"] {
		t.Errorf("readConfig = %+v, want %+v", regs, want)
	}
	for name, c := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"misspelt": {`{"registries": {"h": {"tls_verfy": false}}}`, 0o600, "unknown field"},
		"readable": {`{"registries": {"h": {"creds": "u:p"}}}`, 0o644, "readable by others"},
		"bad host": {`{"registries": {"h/repo": {}}}`, 0o600, "not a registry host"},
		"trailing": {`{"registries": {}} {}`, 0o600, "after the JSON"},
		"not json": {`registries = 1`, 0o600, "invalid character"},
	} {
		p := write(strings.ReplaceAll(name, " ", "_")+".json", c.body, c.mode)
		if _, err := readConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
