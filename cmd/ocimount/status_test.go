package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ocimount/ocimount/blobs"
)

// Every field `ocimount status --json` prints is documented in the status
// section of docs/json-schema.md, so the page cannot fall behind.
func TestStatusJSONDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/json-schema.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## `ocimount status --json`")
	if i < 0 {
		t.Fatal("docs/json-schema.md has no section on ocimount status --json")
	}
	section := doc[i:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	for _, typ := range []reflect.Type{reflect.TypeOf(Status{}), reflect.TypeOf(LayerStatus{}), reflect.TypeOf(blobs.BlobStats{})} {
		for f := range typ.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue // embedded: its fields are checked on their own
			}
			if !strings.Contains(section, "`"+tag+"`") {
				t.Errorf("%s.%s (%q) is not in the status section of docs/json-schema.md", typ.Name(), f.Name, tag)
			}
		}
	}
}
