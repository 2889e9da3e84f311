package main

import "testing"

func TestParseLayerRange(t *testing.T) {
	for in, want := range map[string]int{"..0": 0, "..7": 7, "0..3": 3} {
		if got, err := parseLayerRange(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "3", "..", "..-1", "1..3", "..+2", "..x", "...3", "..3..4"} {
		if got, err := parseLayerRange(in); err == nil {
			t.Errorf("%q: accepted as %d", in, got)
		}
	}
}

func FuzzParseLayerRange(f *testing.F) {
	for _, s := range []string{"..0", "0..12", "..", "..-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseLayerRange(s)
		if err == nil && n < 0 {
			t.Fatalf("%q gave layer %d", s, n)
		}
	})
}
