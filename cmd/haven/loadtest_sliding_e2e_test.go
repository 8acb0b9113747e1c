package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/haven-chat/haven/loadtest"
)

// TestLoadtestSlidingAgainstTheRealServer: `haven loadtest --sync
// sliding` holds sliding sync long-polls instead of /sync, and every
// message reaches every other member of its room through them.
func TestLoadtestSlidingAgainstTheRealServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, metricsAddr := e2eFreeAddr(t), e2eFreeAddr(t)
	const secret = "loadtest-sliding-e2e-shared-secret"
	env := e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_METRICS_LISTEN="+metricsAddr, "HAVEN_DATA_DIR="+filepath.Join(dir, "data"),
		"HAVEN_RATE_LIMITS_ENABLED=false", "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_REGISTRATION_SHARED_SECRET="+secret,
		"HAVEN_LOGGING_LEVEL=warn")
	p := e2eServe(t, dir, addr, env)

	args := []string{"loadtest", "--hs", "http://" + addr, "--users", "10", "--rooms", "2", "--rate", "20", "--duration", "2s",
		"--shared-secret", secret, "--metrics", "http://" + metricsAddr, "--pid", strconv.Itoa(p.cmd.Process.Pid),
		"--sync", "sliding", "--timeline-limit", "5", "--json"}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("haven loadtest: exit code %d\nstderr:\n%s\nserver stderr:\n%s", code, stderr.String(), p.stderr)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Config.Sync != "sliding" || rep.Config.TimelineLimit != 5 {
		t.Errorf("config: sync %q, timeline limit %d", rep.Config.Sync, rep.Config.TimelineLimit)
	}
	l := rep.Load
	if l == nil {
		t.Fatalf("no load section:\n%s", stderr.String())
	}
	// Each of the 40 messages goes to the 4 other members of its room.
	if l.Sent != 40 || l.LostMessages != 0 || l.DeliveriesWanted != 160 || l.DeliveriesSeen != 160 || l.DeliveryLatency.Count != 160 {
		t.Errorf("sent %d, lost %d, deliveries %d of %d (latencies %d)", l.Sent, l.LostMessages, l.DeliveriesSeen, l.DeliveriesWanted, l.DeliveryLatency.Count)
	}
	if len(l.SyncErrors) != 0 || l.LongPollsAtEnd != 10 {
		t.Errorf("sync errors %v, %d long-polls open at the end", l.SyncErrors, l.LongPollsAtEnd)
	}
	if !strings.Contains(stderr.String(), "each user holds a sliding sync long-poll") {
		t.Errorf("text report does not say sliding sync:\n%s", stderr.String())
	}
}
