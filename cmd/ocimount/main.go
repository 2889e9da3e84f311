// Command ocimount mounts OCI and Docker container images read-only through
// FUSE without extracting them.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// sourceHelp is the one description of SOURCE that --help shows: every form
// blobs.ParseSource accepts, registry references included.
const sourceHelp = "SOURCE is one of\n" +
	"  oci:DIR[:REF]                  an OCI image layout (REF: the ref.name annotation)\n" +
	"  oci-archive:FILE[:REF]         a tar of an OCI image layout, read in place\n" +
	"  docker-archive:FILE[:REF|:@N]  `docker save` output (REF: a RepoTag; @N: image N, from 0)\n" +
	"  docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]\n" +
	"                                 an image in a registry, fetched lazily\n" +
	"  DIR or FILE                    an existing path: one of the local forms above, detected\n" +
	"  REPO[:TAG][@DIGEST]            anything else: a registry image (alpine:3.20,\n" +
	"                                 registry.example:5000/team/app@sha256:...)\n" +
	"\n" +
	"`ocimount SOURCE MOUNTPOINT` is short for `ocimount mount SOURCE MOUNTPOINT`."

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ocimount: %v\n", err)
		os.Exit(1)
	}
}

// newApp builds the command tree; tests render its help.
func newApp() *cli.App {
	app := &cli.App{
		Name:            "ocimount",
		Usage:           "mount container images read-only through FUSE, without extracting them",
		UsageText:       "ocimount [global options] SOURCE MOUNTPOINT\nocimount command [command options] [arguments...]",
		Description:     sourceHelp,
		Version:         versionLine(),
		Flags:           mountFlags(),
		HideHelpCommand: true,

		// Completion candidates come from the command tree itself
		// (--generate-bash-completion); the scripts that ask for them are
		// printed by `ocimount completion bash|zsh` (completion.go).
		EnableBashCompletion: true,
		BashComplete:         completer(nil),

		Commands: []*cli.Command{
			mountCommand(),
			umountCommand(),
			indexCommand(),
			cacheCommand(),
			statusCommand(),
			// Forensics, without FUSE (forensics.go).
			forensicsCommand("inspect"), forensicsCommand("ls"), forensicsCommand("cat"), forensicsCommand("history"),
			forensicsCommand("diff"), forensicsCommand("waste"), forensicsCommand("export"), forensicsCommand("explore"),
			bundleCommand(),
			versionCommand(),
			completionCommand(),
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
	completeAll(app.Commands)
	app.OnUsageError = oneLineUsageError
	usageErrorsOnOneLine(app.Commands)
	return app
}

// oneLineUsageError reports a bad flag or value in one line, not followed
// by the whole help text (eight mounts started at once with a typo made
// eight interleaved help dumps).
func oneLineUsageError(c *cli.Context, err error, _ bool) error {
	name := "ocimount"
	if c.Command != nil && c.Command.Name != "" {
		name = "ocimount " + c.Command.FullName()
	}
	return fmt.Errorf("%v (see %s --help)", err, name)
}

func usageErrorsOnOneLine(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = oneLineUsageError
		usageErrorsOnOneLine(c.Subcommands)
	}
}
