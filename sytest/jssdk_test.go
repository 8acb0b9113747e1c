package sytest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestJSSDK drives Haven with a real matrix-js-sdk client, the library
// Element Web is built on: sytest/js/smoke.mjs registers two users through
// the SDK's user-interactive auth, logs them in and starts their clients as
// Element does, and has them talk in a private room (invite, join, messages,
// typing, receipts, read markers, unread counts, a display name change,
// pagination back to the room's creation). It fails on any 5xx, any unrouted
// endpoint and any CORS answer a browser would refuse.
//
// It needs Node.js and sytest/js/node_modules (`npm ci` in sytest/js, which
// scripts/test.sh runs); it is skipped only when node is not installed.
func TestJSSDK(t *testing.T) { runJSScenario(t, "smoke") }

// TestJSSDKEncryption: sytest/js/e2ee.mjs with matrix-js-sdk's Rust crypto:
// two users in an encrypted room decrypt each other's messages; one
// bootstraps cross-signing, secret storage and a key backup, and her second
// login restores the backup and decrypts the room's history.
func TestJSSDKEncryption(t *testing.T) { runJSScenario(t, "e2ee") }

func runJSScenario(t *testing.T, scenario string) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the matrix-js-sdk test needs Node.js 20 or later")
	}
	jsDir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "matrix-js-sdk", "package.json")); err != nil {
		t.Fatalf("sytest/js/node_modules has no matrix-js-sdk (%v): run `npm ci` in sytest/js first (scripts/test.sh does this)", err)
	}
	eachDB(t, func(t *testing.T, s *server) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "smoke.mjs", s.URL, scenario)
		cmd.Dir = jsDir
		cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = 10 * time.Second
		start := time.Now()
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("matrix-js-sdk %s scenario did not finish within 5 minutes; its output:\n%s", scenario, out.String())
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("matrix-js-sdk %s scenario failed (exit code %d) against %s; its output:\n%s", scenario, exit.ExitCode(), s.URL, out.String())
		}
		if err != nil {
			t.Fatalf("run node smoke.mjs: %v\n%s", err, out.String())
		}
		t.Logf("matrix-js-sdk %s scenario passed in %s", scenario, time.Since(start).Round(time.Millisecond))
		if testing.Verbose() {
			t.Logf("its output:\n%s", out.String())
		}
	})
}
