// Command ocimount mounts OCI and Docker container images read-only through
// FUSE without extracting them.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:      "ocimount",
		Usage:     "mount container images read-only through FUSE, without extracting them",
		UsageText: "ocimount [global options] SOURCE MOUNTPOINT\n   ocimount command [command options] [arguments...]",
		Description: "SOURCE is oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],\n" +
			"or a path to an OCI layout directory or an image archive.\n" +
			"`ocimount SOURCE MOUNTPOINT` is short for `ocimount mount SOURCE MOUNTPOINT`.",
		Flags:           mountFlags(),
		HideHelpCommand: true,
		Commands: []*cli.Command{
			mountCommand(),
			umountCommand(),
			indexCommand(),
			cacheCommand(),
			statusCommand(),
			// Forensics, without FUSE (forensics.go).
			forensicsCommand("inspect"), forensicsCommand("ls"), forensicsCommand("cat"), forensicsCommand("history"),
			forensicsCommand("diff"), forensicsCommand("waste"), forensicsCommand("export"),
			bundleCommand(),
		},
		// The shorthand: two arguments and no command name mean mount.
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return cli.ShowAppHelp(c)
			}
			return mountAction(c)
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ocimount: %v\n", err)
		os.Exit(1)
	}
}
