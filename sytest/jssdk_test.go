package sytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// TestJSSDKEncryptionAcrossSites: sytest/js/e2ee-federation.mjs with
// matrix-js-sdk's Rust crypto on two federating sites (the first on
// SQLite, the second on PostgreSQL): an encrypted room of site A joined by
// a user of site B, each decrypting the other's messages; site B stopped
// in the middle of the conversation while A's user goes on writing, and
// everything arriving and decrypting once B is back; a new device of B's
// user verified with cross-signing (and seen so from site A) restoring the
// history from the key backup.
//
// The clients talk to their own site's client API, which is plain HTTP on
// loopback: only the servers speak TLS (with the test's CA) to each other.
func TestJSSDKEncryptionAcrossSites(t *testing.T) {
	jsDir := jsSDKDir(t)
	a, b := startSites(t)
	// The script asks for B's stop and start on its standard output; each
	// is done here, in the test's goroutine, and acknowledged on its input.
	control := map[string]func(){
		"stop B":  b.stop,
		"start B": b.start,
	}
	runNode(t, jsDir, "e2ee-federation", []string{a.URL, b.URL}, control)
}

func runJSScenario(t *testing.T, scenario string) {
	jsDir := jsSDKDir(t)
	eachDB(t, func(t *testing.T, s *server) {
		runNode(t, jsDir, scenario, []string{s.URL}, nil)
	})
}

// jsSDKDir is sytest/js with its node_modules; the test is skipped only
// when node is not installed.
func jsSDKDir(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the matrix-js-sdk test needs Node.js 20 or later")
	}
	jsDir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "matrix-js-sdk", "package.json")); err != nil {
		t.Fatalf("sytest/js/node_modules has no matrix-js-sdk (%v): run `npm ci` in sytest/js first (scripts/test.sh does this)", err)
	}
	return jsDir
}

// controlPrefix starts a line of the script asking the test to act on a
// server; the test answers "ok <request>" (or "failed <request>: why") on
// the script's standard input.
const controlPrefix = "@@control "

// lockedBuffer collects the script's output from two writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runNode runs `node smoke.mjs URL scenario [URL2 ...]` and fails the test
// with the script's output if the scenario fails. control holds the
// actions the script may ask for (nil: none).
func runNode(t *testing.T, jsDir, scenario string, urls []string, control map[string]func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"smoke.mjs", urls[0], scenario}, urls[1:]...)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	if control != nil {
		cmd.Env = append(cmd.Env, "SMOKE_CONTROL=1")
	}
	out := &lockedBuffer{}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node smoke.mjs: %v", err)
	}
	// Read the output here, in the test's goroutine, so that the actions
	// asked for (which stop and start servers) may fail the test.
	lines := bufio.NewReader(stdout)
	for {
		line, err := lines.ReadString('\n')
		out.Write([]byte(line))
		if req, ok := strings.CutPrefix(strings.TrimSpace(line), controlPrefix); ok {
			act := control[req]
			answer := "ok " + req
			if act == nil {
				answer = fmt.Sprintf("failed %s: the test has no such action", req)
			} else {
				t.Logf("the %s scenario asks: %s (after %s)", scenario, req, time.Since(start).Round(time.Millisecond))
				act()
			}
			if _, err := io.WriteString(stdin, answer+"\n"); err != nil {
				t.Errorf("answer the script's %q: %v", req, err)
			}
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("matrix-js-sdk %s scenario did not finish within 5 minutes; its output:\n%s", scenario, out.String())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("matrix-js-sdk %s scenario failed (exit code %d) against %s; its output:\n%s", scenario, exit.ExitCode(), strings.Join(urls, " and "), out.String())
	}
	if err != nil {
		t.Fatalf("run node smoke.mjs: %v\n%s", err, out.String())
	}
	t.Logf("matrix-js-sdk %s scenario passed in %s", scenario, time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("its output:\n%s", out.String())
	}
}
