package main

import (
	"context"
	"fmt"
	"io"
)

// adminCommands are the subcommands of `haven admin`. Each area keeps its
// commands in its own file (admin_*.go) and adds them here.
func adminCommands() []command {
	var out []command
	out = append(out, totpCommands()...)
	return out
}

// runAdmin dispatches `haven admin COMMAND [flags]`.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		adminUsage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range adminCommands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "haven admin: unknown command %q\n", args[0])
	adminUsage(stderr)
	return 2
}

func adminUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: haven admin COMMAND --config FILE [flags]")
	for _, c := range adminCommands() {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.usage)
	}
}
