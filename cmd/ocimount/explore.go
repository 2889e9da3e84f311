package main

import (
	"errors"
	"fmt"
	"os"
	"sync"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/internal/explore"
	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/internal/loader"
)

// errNotTerminal: explore is for people; scripts have the other commands.
var errNotTerminal = errors.New("explore needs a terminal on stdin and stdout; without one use " +
	"`ocimount inspect`, `ls -R --layers ..N`, `diff --layer N`, `history SOURCE PATH` or `waste` (all take --json)")

// exploreCommand is a forensics command (same sources and flags, loaded
// the same way); internal/explore is the whole UI.
func exploreCommand() *cli.Command {
	return &cli.Command{
		Name:      "explore",
		Usage:     "interactive terminal explorer: layers, what each changed, details, waste",
		ArgsUsage: "SOURCE",
		Description: "A full-screen view of the image's layers (sizes, entries, the command that made each),\n" +
			"the tree after the selected layer with every path marked as that layer changed it\n" +
			"(A added, M modified, m metadata, D removed, U unchanged: the lines of `diff --layer N`),\n" +
			"a file's details (metadata, its history across layers, a quick look at its content) and\n" +
			"the waste. ? shows the keys. Needs a terminal; NO_COLOR is honoured.",
		Flags:  forensicsFlags(&cli.BoolFlag{Name: "no-color", Usage: "no colours (as NO_COLOR=1)"}),
		Action: exploreAction,
	}
}

func exploreAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("explore needs %s", c.Command.ArgsUsage)
	}
	if !isTerminal(os.Stdout) || !isTerminal(os.Stdin) {
		return errNotTerminal
	}
	// The first screen needs what `ls` needs (the cached tree, mapped);
	// the entry tables (layer changes, history, waste) load behind it.
	arg := c.Args().Get(0)
	im, err := loadSourceWith(c, arg, false, loader.View{}, true)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var tables *loader.Image
	closed := false
	entries := func() (*forensics.Image, error) {
		t, err := loadSource(c, arg, true, loader.View{})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if closed {
			t.Close()
			return nil, errors.New("explore has ended")
		}
		tables = t
		return forensicsImage(t), nil
	}
	m, err := explore.New(&explore.Image{Image: forensicsImage(im), Source: arg}, explore.Options{NoColor: c.Bool("no-color"), Entries: entries})
	if err != nil {
		im.Close()
		return err
	}
	// The alternate screen restores what the terminal showed on exit,
	// also after a panic or a signal (bubbletea restores the terminal
	// state it saved).
	_, err = tea.NewProgram(m, tea.WithAltScreen()).Run()
	// Close first: the background work still reading fails fast, then
	// nothing is left running.
	cerr := im.Close()
	mu.Lock()
	closed = true
	if tables != nil {
		cerr = errors.Join(cerr, tables.Close())
	}
	mu.Unlock()
	m.Wait()
	if err != nil {
		return err
	}
	return cerr
}
