package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/internal/loader"
)

// viewFlags select a forensic view of the image for mount.
func viewFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "layers", Usage: "mount the image as it was after layer `..N` (0-based, as `ocimount inspect` numbers layers)"},
		&cli.IntFlag{Name: "layer", Value: -1, DefaultText: "none", Usage: "with --raw: mount layer `N` alone"}, // -1: not given
		&cli.BoolFlag{Name: "raw", Usage: "with --layer N: show the layer as its tar stores it (whiteout files visible as the empty files they are)"},
	}
}

// parseView reads --layers/--layer/--raw.
func parseView(c *cli.Context) (loader.View, error) {
	layers, raw := c.String("layers"), c.Bool("raw")
	layer := c.Int("layer")
	switch {
	case layers != "" && (raw || c.IsSet("layer")):
		return loader.View{}, fmt.Errorf("--layers and --layer/--raw are exclusive")
	case layers != "":
		n, err := parseLayerRange(layers)
		if err != nil {
			return loader.View{}, err
		}
		return loader.View{Kind: loader.ViewPrefix, Layer: n}, nil
	case raw && !c.IsSet("layer"):
		return loader.View{}, fmt.Errorf("--raw needs --layer N")
	case c.IsSet("layer") && !raw:
		return loader.View{}, fmt.Errorf("--layer N needs --raw (for the image after layer N use --layers ..N)")
	case raw:
		if layer < 0 {
			return loader.View{}, fmt.Errorf("--layer %d: layers are numbered from 0", layer)
		}
		return loader.View{Kind: loader.ViewRaw, Layer: layer}, nil
	}
	return loader.View{}, nil
}

// parseLayerRange parses "..N" (or "0..N"): the layers 0 to N.
func parseLayerRange(s string) (int, error) {
	from, to, ok := strings.Cut(s, "..")
	if !ok || (from != "" && from != "0") {
		return 0, fmt.Errorf("--layers %q: want ..N (layers 0 to N)", s)
	}
	n, err := strconv.Atoi(to)
	if err != nil || n < 0 || strings.HasPrefix(to, "+") {
		return 0, fmt.Errorf("--layers %q: want ..N with N a layer number from 0", s)
	}
	return n, nil
}
