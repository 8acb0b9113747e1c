package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/haven-chat/haven/loadtest"
)

// TestLoadtestScenariosAgainstTheRealServer runs each issue 3 scenario of
// `haven loadtest` for a second against the built server binary, with tiny
// sizes: nothing may be lost, duplicated or corrupted.
func TestLoadtestScenariosAgainstTheRealServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, metricsAddr := e2eFreeAddr(t), e2eFreeAddr(t)
	const secret = "loadtest-scenarios-e2e-shared-secret"
	env := e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_METRICS_LISTEN="+metricsAddr, "HAVEN_DATA_DIR="+filepath.Join(dir, "data"),
		"HAVEN_RATE_LIMITS_ENABLED=false", "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_REGISTRATION_SHARED_SECRET="+secret,
		"HAVEN_LOGGING_LEVEL=warn")
	p := e2eServe(t, dir, addr, env)
	common := []string{"loadtest", "--hs", "http://" + addr, "--shared-secret", secret, "--metrics", "http://" + metricsAddr,
		"--pid", strconv.Itoa(p.cmd.Process.Pid), "--json", "--duration", "1s"}
	run1 := func(t *testing.T, args ...string) *loadtest.Report {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), append(append([]string(nil), common...), args...), &stdout, &stderr); code != 0 {
			t.Fatalf("haven loadtest %v: exit code %d\nstderr:\n%s\nserver stderr:\n%s", args, code, stderr.String(), p.stderr)
		}
		var rep loadtest.Report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("JSON report: %v\n%s", err, stdout.String())
		}
		if testing.Verbose() {
			t.Log(stderr.String())
		}
		return &rep
	}

	t.Run("todevice", func(t *testing.T) {
		rep := run1(t, "--scenario", "todevice", "--prefix", "td", "--users", "6", "--rooms", "1", "--rate", "10")
		l := rep.Load
		if l == nil || l.Mode != "todevice" || l.Targets != 6 || l.Sent != 10 || l.LostMessages != 0 || l.DeliveriesSeen != 60 ||
			l.AllDelivered == nil || l.AllDelivered.Count != 10 {
			t.Errorf("todevice: %+v", l)
		}
		if sv := rep.Server; sv == nil || sv.Unit != "fan-out" || sv.CPUMsPerOp == nil || sv.CPUMsPerMessage != nil {
			t.Errorf("server figures: %+v", sv)
		}
	})
	t.Run("claim", func(t *testing.T) {
		rep := run1(t, "--scenario", "claim", "--prefix", "cl", "--users", "5", "--otks", "3", "--workers", "2")
		c := rep.Claim
		if c == nil || c.Claims.OK == 0 || c.Claims.Failed != 0 || c.Duplicates+c.WrongKeys+c.MissingKeys != 0 ||
			c.KeysClaimed != c.DistinctKeys || c.KeysClaimed < 5*c.Claims.OK || c.Rounds == 0 || c.InitialUploads.OK != 5 {
			t.Errorf("claim: %+v", c)
		}
	})
	t.Run("media", func(t *testing.T) {
		rep := run1(t, "--scenario", "media", "--prefix", "md", "--users", "1", "--workers", "2", "--media-bytes", "65536")
		m := rep.Media
		if m == nil || m.Upload.Requests.OK == 0 || m.Download.Requests.OK == 0 || m.Upload.Requests.Failed+m.Download.Requests.Failed != 0 ||
			m.Corrupt != 0 || m.Upload.MiBPerSecond <= 0 {
			t.Errorf("media: %+v", m)
		}
	})
	t.Run("search", func(t *testing.T) {
		rep := run1(t, "--scenario", "search", "--prefix", "se", "--users", "2", "--rooms", "1", "--messages", "2000")
		s := rep.Search
		if s == nil || s.Messages != 2000 || len(s.Cases) != 4 {
			t.Fatalf("search: %+v", s)
		}
		for _, c := range s.Cases {
			if c.Requests.OK == 0 || c.Requests.Failed != 0 || c.Count != c.Expected || c.Results != min(c.Expected, 10) {
				t.Errorf("case %s: %+v", c.Name, c)
			}
		}
	})
}
