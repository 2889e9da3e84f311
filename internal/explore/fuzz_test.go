package explore

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzEscape: whatever bytes an image holds, Escape gives valid UTF-8
// with nothing a terminal acts on (no C0/C1 control, DEL, format
// character such as a bidi override), keeps printable text as it is, and
// is injective enough to tell names apart (distinct inputs, distinct
// outputs). isText and textLines never panic on the same bytes.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "plain/name.txt", "nl\nx", "\x1b[31mred", "\xff\xfe", "bidi\u202e", `back\slash`, "tab\t", "\u0085", "日本語"} {
		f.Add(s, "other")
	}
	f.Fuzz(func(t *testing.T, s, other string) {
		e := Escape(s)
		if !utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q: invalid UTF-8", s, e)
		}
		for _, r := range e {
			if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || unicode.Is(unicode.Cf, r) || !unicode.IsPrint(r) && r != ' ' {
				t.Fatalf("Escape(%q) = %q keeps %U", s, e, r)
			}
		}
		if s != other && e == Escape(other) {
			t.Fatalf("Escape(%q) == Escape(%q) == %q", s, other, e)
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '\\' || unicode.Is(unicode.Cf, r) }) && e != s {
			t.Fatalf("Escape(%q) = %q changed printable text", s, e)
		}
		isText([]byte(s))
		for _, l := range textLines(s) {
			if strings.ContainsAny(l, "\n\r\x1b") {
				t.Fatalf("textLines(%q) has a raw control: %q", s, l)
			}
		}
	})
}
