package main

import (
	"context"
	"fmt"
	"io"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/server"
)

// runRotateKey replaces the server's signing key, straight in the
// configured database. The old key stays listed (old_verify_keys) so that
// what it signed can still be checked.
func runRotateKey(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("rotate-key", stderr)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	db, err := server.OpenDB(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "haven rotate-key:", err)
		return 1
	}
	defer db.Close()
	old, err := serverkey.Load(ctx, db)
	if err != nil {
		fmt.Fprintln(stderr, "haven rotate-key:", err)
		return 1
	}
	k, err := serverkey.Rotate(ctx, db)
	if err != nil {
		fmt.Fprintln(stderr, "haven rotate-key:", err)
		return 1
	}
	fmt.Fprintf(stdout, "new signing key %s (the previous key %s is now listed as expired)\n", k.ID, old.ID)
	fmt.Fprintln(stdout, "Restart every Haven process of this server now: until it restarts, a process keeps signing with the previous key.")
	return 0
}
