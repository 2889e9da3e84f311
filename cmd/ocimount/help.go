package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

func init() {
	cli.FlagStringer = oneDefault(cli.FlagStringer)
}

// oneDefault wraps urfave/cli's rendering of a flag's help line so that a
// default is stated once. urfave appends "(default: V)" from the flag's
// value; where that value says nothing useful (false for --suid means
// nosuid; 0 for a size means the built-in bound) the Usage states the
// default in words, and urfave's suffix would repeat it, wrongly worded.
// Flags whose value is the default they show set DefaultText instead.
func oneDefault(render cli.FlagStringFunc) cli.FlagStringFunc {
	return func(f cli.Flag) string {
		s := render(f)
		df, ok := f.(cli.DocGenerationFlag)
		if !ok || !strings.Contains(df.GetUsage(), "(default") || df.GetDefaultText() == "" {
			return s
		}
		auto := " (default: " + df.GetDefaultText() + ")"
		if i := strings.LastIndex(s, auto); i >= 0 {
			s = s[:i] + s[i+len(auto):]
		}
		return s
	}
}
