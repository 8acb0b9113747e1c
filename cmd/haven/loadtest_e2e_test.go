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

// TestLoadtestAgainstTheRealServer starts the built server binary and runs
// a tiny load through `haven loadtest`: 10 users in 2 rooms, 20 msg/s for
// 2 s, then an initial sync in 3 rooms. Nothing may be lost.
func TestLoadtestAgainstTheRealServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, metricsAddr := e2eFreeAddr(t), e2eFreeAddr(t)
	const secret = "loadtest-e2e-shared-secret"
	env := e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_METRICS_LISTEN="+metricsAddr, "HAVEN_DATA_DIR="+filepath.Join(dir, "data"),
		"HAVEN_RATE_LIMITS_ENABLED=false", "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_REGISTRATION_SHARED_SECRET="+secret,
		"HAVEN_LOGGING_LEVEL=warn")
	p := e2eServe(t, dir, addr, env)

	args := []string{"loadtest", "--hs", "http://" + addr, "--users", "10", "--rooms", "2", "--rate", "20", "--duration", "2s",
		"--shared-secret", secret, "--metrics", "http://" + metricsAddr, "--pid", strconv.Itoa(p.cmd.Process.Pid),
		"--initial-sync-rooms", "3", "--initial-sync-repeats", "3", "--json"}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("haven loadtest: exit code %d\nstderr:\n%s\nserver stderr:\n%s", code, stderr.String(), p.stderr)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, stdout.String())
	}
	l := rep.Load
	if l == nil {
		t.Fatalf("no load section:\n%s", stderr.String())
	}
	if rep.Setup.Registered != 10 || rep.Setup.RoomsCreated != 2 || rep.Setup.RoomSizeMin != 5 || rep.Setup.RoomSizeMax != 5 {
		t.Errorf("setup: %+v", rep.Setup)
	}
	if l.Sent != 40 || l.SendFailed != 0 || l.Skipped != 0 {
		t.Errorf("sent %d, failed %d (%v), skipped %d; want 40 sent", l.Sent, l.SendFailed, l.SendErrors, l.Skipped)
	}
	// Each message goes to the 4 other members of its room.
	if l.LostMessages != 0 || l.DeliveriesWanted != 160 || l.DeliveriesSeen != 160 || l.DeliveryLatency.Count != 160 {
		t.Errorf("lost %d, deliveries %d of %d (latencies %d)", l.LostMessages, l.DeliveriesSeen, l.DeliveriesWanted, l.DeliveryLatency.Count)
	}
	if l.SendLatency.Count != 40 || l.SendLatency.P50 <= 0 || l.DeliveryLatency.P99 < l.DeliveryLatency.P50 {
		t.Errorf("latencies: send %+v, delivery %+v", l.SendLatency, l.DeliveryLatency)
	}
	if len(l.SyncErrors) != 0 || l.LongPollsAtEnd != 10 {
		t.Errorf("sync errors %v, %d long-polls open at the end", l.SyncErrors, l.LongPollsAtEnd)
	}
	sv := rep.Server
	if sv == nil || sv.CPUSeconds == nil || sv.DBQueries == nil || sv.RSSPeakMiB == nil || sv.VmHWMMiB == nil || sv.CPUMsPerMessage == nil {
		t.Errorf("server figures missing: %+v", sv)
	}
	is := rep.InitialSync
	if is == nil || is.RoomsInResponse != 3 || is.Latency.Count != 3 || is.SizeMinBytes == 0 {
		t.Errorf("initial sync: %+v", is)
	}
	for _, want := range []string{"LOST MESSAGES 0", "delivery latency  p50", "Initial /sync of @lt-isync:localhost in 3 rooms"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, stderr.String())
		}
	}

	// A second run with the same prefix reuses the accounts and rooms.
	stdout.Reset()
	stderr.Reset()
	args = []string{"loadtest", "--hs", "http://" + addr, "--users", "10", "--rooms", "2", "--rate", "10", "--duration", "1s",
		"--shared-secret", secret, "--json"}
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("second run: exit code %d\n%s", code, stderr.String())
	}
	rep = loadtest.Report{}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Setup.LoggedIn != 10 || rep.Setup.RoomsReused != 2 || rep.Load.LostMessages != 0 || rep.Load.Sent != 10 {
		t.Errorf("second run: setup %+v, lost %d, sent %d", rep.Setup, rep.Load.LostMessages, rep.Load.Sent)
	}
	if testing.Verbose() {
		t.Log(stderr.String())
	}
}
