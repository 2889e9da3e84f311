package main

import (
	_ "embed"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// urfave/cli v2 answers `ocimount ... --generate-bash-completion` with the
// candidates for the next word, but ships the shell side only in its
// repository, not in the module; these scripts are ours, and ask the
// binary they complete for its own candidates.
var (
	//go:embed completion/ocimount.bash
	bashCompletion string
	//go:embed completion/ocimount.zsh
	zshCompletion string
)

func completionCommand() *cli.Command {
	script := func(name, text string) *cli.Command {
		return &cli.Command{
			Name:  name,
			Usage: "print the " + name + " completion script; to use it: source <(ocimount completion " + name + ")",
			Action: func(c *cli.Context) error {
				_, err := fmt.Fprint(c.App.Writer, text)
				return err
			},
		}
	}
	return &cli.Command{
		Name:  "completion",
		Usage: "print a shell completion script to source: bash or zsh",
		Subcommands: []*cli.Command{
			script("bash", bashCompletion),
			script("zsh", zshCompletion),
		},
	}
}

// completer answers --generate-bash-completion for the app (cmd nil) or
// for one command: the flags that fit when the word being completed starts
// with "-", else the subcommands, but nothing once a positional argument
// is there (SOURCE, MOUNTPOINT, PATH: names for the shell to complete).
// urfave's default offers its "help" subcommand on every command, leaves
// included, so `ocimount mount <TAB>` would offer "help h" and no files.
func completer(cmd *cli.Command) cli.BashCompleteFunc {
	flags := cli.DefaultCompleteWithFlags(cmd)
	return func(c *cli.Context) {
		// urfave too reads the word from os.Args: the one before
		// --generate-bash-completion.
		if n := len(os.Args); n > 2 && strings.HasPrefix(os.Args[n-2], "-") {
			flags(c)
			return
		}
		if c.NArg() > 0 {
			return
		}
		subs := c.App.Commands
		if cmd != nil {
			subs = cmd.Subcommands
		}
		for _, sc := range subs {
			if sc.Hidden || sc.Name == "help" {
				continue
			}
			for _, name := range sc.Names() {
				fmt.Fprintln(c.App.Writer, name)
			}
		}
	}
}

// completeAll gives every command in the tree its completer.
func completeAll(cmds []*cli.Command) {
	for _, c := range cmds {
		c.BashComplete = completer(c)
		completeAll(c.Subcommands)
	}
}
