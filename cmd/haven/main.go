// Command haven is the Haven Matrix homeserver. With no arguments it serves;
// subcommands: serve, check-config, generate-config, create-user, migrate,
// admin, backup, restore, rotate-key, loadtest, loadtest-federation, version. Wiring only: the work is done by the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/haven-chat/haven/loadtest"
)

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "start the server (the default)", runServe},
		{"check-config", "check the configuration, the database, NATS, ports and folders; print every problem with its fix", runCheckConfig},
		{"generate-config", "print a fully commented configuration file", runGenerateConfig},
		{"admin", "administration: users, rooms, tokens, media, stats (through the admin API), audit, totp-enroll, totp-reset (haven admin help lists them)", runAdmin},
		{"create-user", "create an account: --user NAME [--admin] (the password is asked for, or read from standard input); uses the running server's configuration unless --config is given", runCreateUser},
		{"migrate", "apply pending database migrations and exit", runMigrate},
		{"health", "check the database, the running server, the disk and the federation certificate; one Nagios/Zabbix line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", runHealth},
		{"backup", backupUsage, runBackup},
		{"restore", "restore a backup into an empty data folder or database: --from DIR [--force]", runRestore},
		{"rotate-key", "replace the server's signing key (the old one stays published as expired); restart afterwards", runRotateKey},
		{"loadtest", loadtest.Usage, loadtest.Run},
		{"loadtest-federation", loadtest.FederationUsage, loadtest.RunFederation},
		{"version", "print the version (also --version)", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return runVersion(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args, stdout, stderr)
		}
	}
	if name == "help" || name == "-h" || name == "--help" {
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "haven: unknown command %q\n", name)
	usage(stderr)
	return 2
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, "haven", version())
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: haven [command] [--config FILE] [flags]")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.usage)
	}
}

// flagSet returns a FlagSet with --config, printing errors to stderr.
func flagSet(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (optional; HAVEN_* variables override it)")
	return fs, cfgPath
}

func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "haven %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	return -1
}
