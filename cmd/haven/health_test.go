package main

import (
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/testca"
)

func TestHealthCertificate(t *testing.T) {
	ca := testca.New(t)
	now := time.Now()
	for _, tc := range []struct {
		left  time.Duration
		state int
		text  string
	}{
		{-time.Hour, stateCritical, "expired"},
		{2 * 24 * time.Hour, stateCritical, "expires in"},
		{10 * 24 * time.Hour, stateWarning, "expires in"},
		{30 * 24 * time.Hour, stateOK, "valid"},
	} {
		cert, _ := ca.IssueValid(t, now.Add(-48*time.Hour), now.Add(tc.left), "localhost")
		got := checkCertificate(cert, now)
		if got.state != tc.state || !strings.Contains(got.text, tc.text) || !strings.HasPrefix(got.perf, "certificate_days=") {
			t.Errorf("%v left: %+v", tc.left, got)
		}
	}
	if got := checkCertificate("/nonexistent.pem", now); got.state != stateCritical {
		t.Errorf("missing file: %+v", got)
	}
}

// TestHealthCommand: one line in the plugin format, and the exit code of
// the worst check — a server that is not running is CRITICAL.
func TestHealthCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv("HAVEN_LISTEN=" + e2eFreeAddr(t))
	if _, stderr, code := e2eRun(t, dir, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s", stderr)
	}
	stdout, _, code := e2eRun(t, dir, env, "health")
	if code != stateCritical || !strings.HasPrefix(stdout, "HAVEN CRITICAL - database ok; server at ") ||
		!strings.Contains(stdout, "does not answer") || !strings.Contains(stdout, "| database_seconds=") {
		t.Fatalf("health with no server running: exit %d, %q", code, stdout)
	}
}
