package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/forensics"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/overlay"
)

// forensicsCommand returns one of forensicsCommands by name.
func forensicsCommand(name string) *cli.Command {
	for _, c := range forensicsCommands() {
		if c.Name == name {
			action := c.Action
			c.Action = func(ctx *cli.Context) error {
				if _, moved := flagsFirst(ctx.Command, ctx.Args().Slice()); moved {
					// Run again with all of the command's flags (those
					// already parsed too) before its arguments.
					for i, a := range os.Args {
						if i > 0 && a == ctx.Command.Name {
							args, _ := flagsFirst(ctx.Command, os.Args[i+1:])
							return ctx.App.RunContext(ctx.Context, append(slices.Clone(os.Args[:i+1]), args...))
						}
					}
				}
				return action(ctx)
			}
			return c
		}
	}
	panic("no forensics command " + name)
}

// forensicsCommands answer questions about an image without mounting it
// (internal/forensics does the work; these only parse flags and load).
// One constructor and one action per command, as for the other commands.
func forensicsCommands() []*cli.Command {
	return []*cli.Command{
		inspectCommand(), lsCommand(), catCommand(), historyCommand(),
		diffCommand(), wasteCommand(), exportCommand(), exploreCommand(),
	}
}

// forensicsFlags are the flags every forensics command takes (the image
// is found and cached as for mount), then extra.
func forensicsFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` to pick from a multi-platform image"},
		&cli.StringFlag{Name: "cache-dir", Usage: "cache directory (default as for mount)"},
	}, append(remoteFlags(), extra...)...)
}

// jsonFlag is --json of the commands whose output has a schema.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "machine-readable output (schema: docs/json-schema.md)"}
}

// layersFlag is --layers of the commands that read a tree, which can be
// the image as it was after layer N; verb says what they do with it.
func layersFlag(verb string) cli.Flag {
	return &cli.StringFlag{Name: "layers", Usage: verb + " the image as it was after layer `..N`"}
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show manifest, config and one row per layer (with the history step that made it)",
		ArgsUsage: "SOURCE",
		Flags:     forensicsFlags(jsonFlag(), &cli.BoolFlag{Name: "waste", Usage: "also list the bytes shipped but not visible (as ocimount waste does)"}),
		Action:    inspectAction,
	}
}

func inspectAction(c *cli.Context) error {
	im, err := loadForensics(c, 1, true, loader.View{})
	if err != nil {
		return err
	}
	defer im.Close()
	fi := forensicsImage(im)
	r, err := forensics.Inspect(fi)
	if err != nil {
		return err
	}
	if err := forensics.WriteInspect(os.Stdout, r, c.Bool("json")); err != nil {
		return err
	}
	if !c.Bool("waste") {
		return nil
	}
	wr, err := forensics.Waste(fi.Layers, fi.Tree)
	if err != nil {
		return err
	}
	if !c.Bool("json") {
		fmt.Println()
	}
	return forensics.WriteWaste(os.Stdout, wr, c.Bool("json"), 20)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list the merged tree with the layer that provides each entry",
		ArgsUsage: "SOURCE [PATH]",
		Description: "Lists PATH's children (or PATH itself if it is not a directory); -R lists the whole\n" +
			"subtree depth-first, writing as it walks. The first column (last before the path with -l)\n" +
			"is the layer providing the entry, 0-based as in `ocimount inspect`; \"-\" marks a directory\n" +
			"no layer declares. Symlinks are not followed.",
		Flags: forensicsFlags(jsonFlag(),
			&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "mode, links, owner, size, mtime"},
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"R"}, Usage: "the whole subtree"},
			layersFlag("list")),
		Action: lsAction,
	}
}

func lsAction(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return fmt.Errorf("ls needs SOURCE [PATH]")
	}
	im, err := loadViewed(c, -1)
	if err != nil {
		return err
	}
	defer im.Close()
	p := "/"
	if c.NArg() == 2 {
		p = c.Args().Get(1)
	}
	return forensics.List(os.Stdout, im.Tree, p, forensics.ListOptions{Long: c.Bool("long"), Recursive: c.Bool("recursive"), JSON: c.Bool("json")})
}

func catCommand() *cli.Command {
	return &cli.Command{
		Name:      "cat",
		Usage:     "print a file of the merged tree (symlinks followed inside the image only)",
		ArgsUsage: "SOURCE PATH",
		Flags:     forensicsFlags(layersFlag("read")),
		Action:    catAction,
	}
}

func catAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("cat needs SOURCE and PATH")
	}
	im, err := loadViewed(c, 2)
	if err != nil {
		return err
	}
	defer im.Close()
	return forensics.Cat(os.Stdout, im.Tree, c.Args().Get(1))
}

func historyCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "what every layer did to PATH: added, modified, deleted (whiteout, opaque dir), re-added",
		ArgsUsage: "SOURCE PATH",
		Description: "Each version is shown with type, mode, owner, size, mtime and, for regular files,\n" +
			"the sha256 of its content: the bytes of that one file are read from each layer that\n" +
			"holds a version of it (nothing else). Parent symlinks are followed as the merge does.",
		Flags:  forensicsFlags(jsonFlag()),
		Action: historyAction,
	}
}

func historyAction(c *cli.Context) error {
	im, err := loadForensics(c, 2, true, loader.View{})
	if err != nil {
		return err
	}
	defer im.Close()
	r, err := forensics.History(im.Tree.Layers(), c.Args().Get(1))
	if err != nil {
		return err
	}
	return forensics.WriteHistory(os.Stdout, r, c.Bool("json"))
}

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "what layer N changed (--layer N), or how two images' merged trees differ",
		ArgsUsage: "SOURCE --layer N | SOURCE_A SOURCE_B",
		Description: "Lines: A added, D removed, M modified (type, size, content, link target or device;\n" +
			"metadata may have changed too), m metadata only (mode, owner, mtime, xattrs), with\n" +
			"what changed. Output is written while both trees are walked. Regular files of equal\n" +
			"size are compared by content only when they do not come from the same place of the\n" +
			"same layer: then both are read and hashed. --layer N compares the image after layer\n" +
			"N-1 with the image after layer N.",
		Flags: forensicsFlags(jsonFlag(),
			&cli.IntFlag{Name: "layer", Value: -1, DefaultText: "none", Usage: "the layer `N` to show the changes of (0-based)"}, // -1: not given
			&cli.BoolFlag{Name: "no-metadata", Usage: "leave metadata-only changes out (still counted)"}),
		Action: diffAction,
	}
}

func wasteCommand() *cli.Command {
	return &cli.Command{
		Name:      "waste",
		Usage:     "bytes shipped but not visible in the merged tree (overwritten or deleted later), largest first",
		ArgsUsage: "SOURCE",
		Description: "Every regular file a layer stores that no path of the merged tree shows, with the\n" +
			"layer that hid it and how: where \"deleted\" secrets still live. Reads no file content.",
		Flags:  forensicsFlags(jsonFlag(), &cli.IntFlag{Name: "limit", Value: 0, Usage: "show only the `N` largest (table only)"}),
		Action: wasteAction,
	}
}

func wasteAction(c *cli.Context) error {
	im, err := loadForensics(c, 1, true, loader.View{})
	if err != nil {
		return err
	}
	defer im.Close()
	r, err := forensics.Waste(im.Tree.Layers(), im.Tree)
	if err != nil {
		return err
	}
	return forensics.WriteWaste(os.Stdout, r, c.Bool("json"), c.Int("limit"))
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write the merged tree as one tar (hardlinks, xattrs, devices kept)",
		ArgsUsage: "SOURCE FILE.tar|-",
		Flags:     forensicsFlags(layersFlag("export")),
		Action:    exportAction,
	}
}

// exportAction writes to stdout for "-"; a file that Export fails on is
// removed, so that no partial tar is left to be mistaken for the image.
func exportAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("export needs SOURCE and FILE.tar (- for stdout)")
	}
	im, err := loadViewed(c, 2)
	if err != nil {
		return err
	}
	defer im.Close()
	out := c.Args().Get(1)
	if out == "-" {
		return forensics.Export(os.Stdout, im.Tree)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := forensics.Export(f, im.Tree); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	return f.Close()
}

// flagsFirst moves flags that follow the arguments (`diff SOURCE --layer
// 3`, `ls SOURCE PATH -l`: the issue's syntax) before them, which is
// where urfave/cli v2 looks for them; "--" ends flags as usual.
func flagsFirst(cmd *cli.Command, args []string) ([]string, bool) {
	takesValue := map[string]bool{}
	isFlag := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			isFlag[n] = true
			takesValue[n] = !isBool
		}
	}
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		if len(a) < 2 || a[0] != '-' || !isFlag[name] {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		if takesValue[name] && !hasValue && i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if len(flags) == 0 {
		return args, false
	}
	return append(flags, rest...), true
}

func diffAction(c *cli.Context) error {
	o := forensics.DiffOptions{JSON: c.Bool("json"), NoMetadata: c.Bool("no-metadata")}
	if c.IsSet("layer") {
		if c.NArg() != 1 {
			return fmt.Errorf("diff --layer N needs exactly one SOURCE")
		}
		n := c.Int("layer")
		if n < 0 {
			return fmt.Errorf("--layer %d: layers are numbered from 0", n)
		}
		after, err := loadForensics(c, 1, false, loader.View{Kind: loader.ViewPrefix, Layer: n})
		if err != nil {
			return err
		}
		defer after.Close()
		var before *overlay.Tree
		if n == 0 {
			// Layer 0 is compared with the empty image.
			if before, err = overlay.Merge(nil); err != nil {
				return err
			}
		} else {
			b, err := loadForensics(c, 1, false, loader.View{Kind: loader.ViewPrefix, Layer: n - 1})
			if err != nil {
				return err
			}
			defer b.Close()
			before = b.Tree
		}
		_, err = forensics.DiffTrees(os.Stdout, before, after.Tree, o)
		return err
	}
	if c.NArg() != 2 {
		return fmt.Errorf("diff needs SOURCE --layer N, or SOURCE_A SOURCE_B")
	}
	a, err := loadSource(c, c.Args().Get(0), false, loader.View{})
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := loadSource(c, c.Args().Get(1), false, loader.View{})
	if err != nil {
		return err
	}
	defer b.Close()
	_, err = forensics.DiffTrees(os.Stdout, a.Tree, b.Tree, o)
	return err
}

// loadViewed loads the tree the command's --layers flag selects (the
// whole image without it), for the commands that only read the tree.
func loadViewed(c *cli.Context, nargs int) (*loader.Image, error) {
	view, err := parseView(c)
	if err != nil {
		return nil, err
	}
	return loadForensics(c, nargs, false, view)
}

// loadForensics checks the argument count (nargs < 0: one or two) and
// loads the first argument.
func loadForensics(c *cli.Context, nargs int, entries bool, view loader.View) (*loader.Image, error) {
	if nargs > 0 && c.NArg() != nargs || c.NArg() == 0 {
		return nil, fmt.Errorf("%s needs %s", c.Command.Name, c.Command.ArgsUsage)
	}
	return loadSource(c, c.Args().Get(0), entries, view)
}

// loadSource loads an image through the layer cache, so a second command
// on the same image reads no layer bytes. entries keeps the layers' entry
// tables (inspect, history, waste need them; the cached tree has none).
func loadSource(c *cli.Context, arg string, entries bool, view loader.View) (*loader.Image, error) {
	return loadSourceWith(c, arg, entries, view, false)
}

// loadSourceWith is loadSource, drawing indexing progress on stderr when
// asked and stderr is a terminal (explore: a first open indexes layers).
func loadSourceWith(c *cli.Context, arg string, entries bool, view loader.View, showProgress bool) (*loader.Image, error) {
	src, err := blobs.ParseSource(arg)
	if err != nil {
		return nil, err
	}
	bo, dir, err := imageOptions(c)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		dir = "" // unwritable cache: still answer, just slower next time
		bo.Remote.ChunkDir = ""
	}
	ctx := c.Context
	if ctx == nil {
		ctx = context.Background()
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "ocimount: "+f+"\n", a...) }
	bo.Remote.Logf = logf
	lo := loader.Options{CacheDir: dir, KeepEntries: entries, View: view, NoRemoteIndex: c.Bool("no-remote-index"), NoTOC: c.Bool("no-toc"), Logf: logf}
	if showProgress && isTerminal(os.Stderr) {
		pg := newProgress(os.Stderr, 0)
		lo.Progress = pg.update
		defer pg.finish()
	}
	return loader.Load(ctx, src, bo, lo)
}

func forensicsImage(im *loader.Image) *forensics.Image {
	fi := &forensics.Image{Meta: im.Image, Layers: im.Tree.Layers(), Tree: im.Tree}
	for _, s := range im.Sources {
		fi.Sources = append(fi.Sources, string(s))
	}
	return fi
}
