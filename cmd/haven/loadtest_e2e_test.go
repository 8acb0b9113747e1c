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

// e2eLoadServer is a served binary with a shared secret, for `haven
// loadtest` runs against it.
type e2eLoadServer struct {
	t                 *testing.T
	p                 *e2eProc
	addr, metricsAddr string
}

const e2eLoadSecret = "loadtest-e2e-shared-secret"

func startLoadServer(t *testing.T) *e2eLoadServer {
	t.Helper()
	dir := t.TempDir()
	s := &e2eLoadServer{t: t, addr: e2eFreeAddr(t), metricsAddr: e2eFreeAddr(t)}
	env := e2eEnv("HAVEN_LISTEN="+s.addr, "HAVEN_METRICS_LISTEN="+s.metricsAddr, "HAVEN_DATA_DIR="+filepath.Join(dir, "data"),
		"HAVEN_RATE_LIMITS_ENABLED=false", "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_REGISTRATION_SHARED_SECRET="+e2eLoadSecret,
		"HAVEN_LOGGING_LEVEL=warn")
	s.p = e2eServe(t, dir, s.addr, env)
	return s
}

// load runs `haven loadtest --json` against the server with args (the
// address and the shared secret given; withMetrics: its metrics and PID
// too) and returns the report and the text report.
func (s *e2eLoadServer) load(withMetrics bool, args ...string) (loadtest.Report, string) {
	s.t.Helper()
	all := []string{"loadtest", "--hs", "http://" + s.addr, "--shared-secret", e2eLoadSecret, "--json"}
	if withMetrics {
		all = append(all, "--metrics", "http://"+s.metricsAddr, "--pid", strconv.Itoa(s.p.cmd.Process.Pid))
	}
	var stdout, stderr bytes.Buffer
	if code := run(s.t.Context(), append(all, args...), &stdout, &stderr); code != 0 {
		s.t.Fatalf("haven loadtest: exit code %d\nstderr:\n%s\nserver stderr:\n%s", code, stderr.String(), s.p.stderr)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		s.t.Fatalf("JSON report: %v\n%s", err, stdout.String())
	}
	return rep, stderr.String()
}

// TestLoadtestAgainstTheRealServer starts the built server binary and runs
// a tiny load through `haven loadtest`: 10 users in 2 rooms, 20 msg/s for
// 2 s, then an initial sync in 3 rooms. Nothing may be lost.
func TestLoadtestAgainstTheRealServer(t *testing.T) {
	t.Parallel()
	srv := startLoadServer(t)
	rep, text := srv.load(true, "--users", "10", "--rooms", "2", "--rate", "20", "--duration", "2s",
		"--initial-sync-rooms", "3", "--initial-sync-repeats", "3")
	l := rep.Load
	if l == nil {
		t.Fatalf("no load section:\n%s", text)
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
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}

	// A second run with the same prefix reuses the accounts and rooms.
	rep, text = srv.load(false, "--users", "10", "--rooms", "2", "--rate", "10", "--duration", "1s")
	if rep.Setup.LoggedIn != 10 || rep.Setup.RoomsReused != 2 || rep.Load.LostMessages != 0 || rep.Load.Sent != 10 {
		t.Errorf("second run: setup %+v, lost %d, sent %d", rep.Setup, rep.Load.LostMessages, rep.Load.Sent)
	}
	if testing.Verbose() {
		t.Log(text)
	}
}
