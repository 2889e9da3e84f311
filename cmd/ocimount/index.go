package main

import (
	"bytes"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/ocimount/ocimount/blobs"
	"github.com/ocimount/ocimount/internal/cache"
	"github.com/ocimount/ocimount/internal/loader"
	"github.com/ocimount/ocimount/layerindex"
)

func indexCommand() *cli.Command {
	return &cli.Command{
		Name:      "index",
		Usage:     "build (or with --verify, recheck) the cached layer indexes of an image without mounting it",
		ArgsUsage: "SOURCE",
		Description: "Indexes every layer not yet in the cache (one verifying pass per layer, in parallel),\n" +
			"so that a later mount is ready without reading any layer data. With --verify, every\n" +
			"layer is read again, its digests checked, and its cached index compared and rewritten.\n" +
			"With --push (registry sources), the indexes are then published in the image's repository\n" +
			"as an artifact whose subject is the image manifest (media types in docs/DESIGN.md).",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` to pick from a multi-platform image"},
			&cli.StringFlag{Name: "cache-dir", Usage: "cache directory (default as for mount)"},
			&cli.BoolFlag{Name: "verify", Usage: "re-read every layer, check digests and the cached index"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
			&cli.BoolFlag{Name: "push", Usage: "registry images: publish the layer indexes as an OCI artifact referring to the image, so other machines mount it without indexing"},
		}, remoteFlags()...),
		Action: indexAction,
	}
}

func indexAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("index needs SOURCE")
	}
	src, err := blobs.ParseSource(c.Args().Get(0))
	if err != nil {
		return err
	}
	bo, dir, err := imageOptions(c)
	if err != nil {
		return err
	}
	verify := c.Bool("verify")
	quiet := c.Bool("quiet")
	push := c.Bool("push")
	if push && src.Transport != blobs.TransportDocker {
		return fmt.Errorf("%s: --push needs a registry image", src)
	}
	bo.Remote.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, "ocimount: "+f+"\n", a...) }

	// With --verify, remember what the cache held, to compare with what a
	// fresh pass over the layer produces.
	var before map[string][]byte
	if verify {
		before = map[string][]byte{}
		im, err := blobs.OpenImage(c.Context, src, bo)
		if err != nil {
			return err
		}
		for _, l := range im.Layers {
			if ix, err := (cache.Dir{Root: dir}).LoadIndex(l.Descriptor.Digest); err == nil {
				before[string(l.Descriptor.Digest)], _ = ix.MarshalBinary()
			} else if l.Descriptor.Digest != "" {
				before[string(l.Descriptor.Digest)] = nil
			}
		}
		im.Close()
	}
	lo := loader.Options{CacheDir: dir, Rebuild: verify, KeepEntries: true, NoTOC: true, NoRemoteIndex: c.Bool("no-remote-index"), Logf: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "ocimount: "+f+"\n", a...)
	}}
	var pg *progress
	if !quiet && isTerminal(os.Stderr) {
		pg = newProgress(os.Stderr, 0)
		lo.Progress = pg.update
	}
	im, err := loader.Load(c.Context, src, bo, lo)
	if pg != nil {
		pg.finish()
	}
	if err != nil {
		return err
	}
	defer im.Close()
	var pushed string
	if push {
		order := make([]digest.Digest, len(im.Indexes))
		data := map[digest.Digest][]byte{}
		for i, ix := range im.Indexes {
			// Coarser than the local index: see layerindex.Published.
			b, err := ix.Published().MarshalBinary()
			if err != nil {
				return err
			}
			order[i] = im.Image.Layers[i].Descriptor.Digest
			data[order[i]] = b
		}
		art, err := im.Image.Remote.PushIndexes(c.Context, order, data)
		if err != nil {
			return fmt.Errorf("%s: publishing indexes: %w", src, err)
		}
		pushed = string(art)
	}
	if quiet {
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tDIGEST\tFORMAT\tCOMPRESSED\tUNCOMPRESSED\tENTRIES\tSPANS\tINDEX")
	for i, ix := range im.Indexes {
		state := "built"
		if im.FromCache[i] {
			state = "cached"
		}
		if verify {
			old, had := before[string(ix.Digest)]
			now, _ := ix.MarshalBinary()
			switch {
			case !had || old == nil:
				state = "verified (was not cached)"
			case bytes.Equal(old, now):
				state = "verified"
			default:
				state = "verified (cached index differed; rewritten)"
			}
		}
		spans := 1
		if ix.Checkpoints != nil {
			spans = ix.Checkpoints.NumSpans()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", i, short(string(ix.Digest)), compName(ix.Compression),
			ix.CompressedSize, ix.UncompressedSize, len(ix.Entries), spans, state)
	}
	fmt.Fprintf(tw, "image %s: %d layers, %d entries in the merged tree\n", im.Image.ManifestDigest, len(im.Indexes), im.Tree.Len())
	if pushed != "" {
		fmt.Fprintf(tw, "published the layer indexes as %s (artifact of %s)\n", pushed, im.Image.ManifestDigest)
	}
	return tw.Flush()
}

func compName(c layerindex.Compression) string {
	if c == layerindex.None {
		return "tar"
	}
	return "tar+" + c.String()
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
