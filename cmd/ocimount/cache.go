package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/internal/cache"
)

func cacheCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "cache-dir", Usage: "cache directory (default as for mount)"}
	dirOf := func(c *cli.Context) cache.Dir {
		d := c.String("cache-dir")
		if d == "" {
			d = defaultCacheDir()
		}
		return cache.Dir{Root: d}
	}
	return &cli.Command{
		Name:  "cache",
		Usage: "show or trim the cache of layer indexes and decoded layers",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list cached items, least recently used first",
				Flags: []cli.Flag{dirFlag},
				Action: func(c *cli.Context) error {
					d := dirOf(c)
					es, err := d.List()
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "KIND\tDIGEST\tSIZE\tLAST USED")
					var total int64
					for _, e := range es {
						total += e.Size
						what := string(e.Digest)
						if e.Kind == "temp" {
							// Temp files have no digest: say where they are and whose.
							what = e.Path + " (left behind)"
							if e.InUse {
								what = e.Path + " (being written)"
							}
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Kind, what, humanSize(e.Size), e.LastUse.Format(time.DateTime))
					}
					fmt.Fprintf(tw, "total\t%d items in %s\t%s\t\n", len(es), d.Root, humanSize(total))
					return tw.Flush()
				},
			},
			{
				Name:  "prune",
				Usage: "remove least recently used items until the cache is at most --max-size",
				Flags: []cli.Flag{dirFlag,
					&cli.StringFlag{Name: "max-size", Value: "0", Usage: "size to trim to, e.g. 500M, 10G (0 empties the cache)"},
				},
				Action: func(c *cli.Context) error {
					max, err := parseSize(c.String("max-size"))
					if err != nil {
						return err
					}
					removed, err := dirOf(c).Prune(max)
					var freed int64
					for _, e := range removed {
						freed += e.Size
					}
					fmt.Printf("removed %d items, %s\n", len(removed), humanSize(freed))
					return err
				},
			},
		},
	}
}
