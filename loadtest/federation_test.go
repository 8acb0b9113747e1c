package loadtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFederationFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{name: "defaults", args: nil, code: -1},
		{name: "both layouts", args: []string{"--layout", "split,local"}, code: -1},
		{name: "help", args: []string{"--help"}, code: 0},
		{name: "bad scenario", args: []string{"--scenario", "bulk"}, code: 2, want: "--scenario"},
		{name: "bad layout", args: []string{"--layout", "split,both"}, code: 2, want: "--layout"},
		{name: "one member", args: []string{"--members", "1"}, code: 2, want: "--members"},
		{name: "fewer messages than rooms", args: []string{"--scenario", "catchup", "--catchup-messages", "5"}, code: 2, want: "--catchup-messages"},
		{name: "site env", args: []string{"--site-env", "HAVEN_LOGGING_LEVEL=info"}, code: -1},
		{name: "site env not HAVEN", args: []string{"--site-env", "PATH=/"}, code: 2, want: "HAVEN_NAME=VALUE"},
		{name: "extra argument", args: []string{"now"}, code: 2, want: "unexpected argument"},
		{name: "todevice", args: []string{"--scenario", "todevice"}, code: -1},
		{name: "todevice without devices", args: []string{"--scenario", "todevice", "--todevice-devices", "0"}, code: 2, want: "--todevice-devices"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, code := parseFedFlags(tc.args, &stderr)
			if code != tc.code {
				t.Fatalf("code %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			if tc.want != "" && !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tc.want)
			}
			if code == -1 && (o.Rooms != 10 || o.Members != 10 || o.Rate != 100 || o.CatchupMessages != 10000 || o.JoinMembers != 1000 || o.ToDeviceDevices != 100) {
				t.Fatalf("defaults are not the targets' figures: %+v", o)
			}
		})
	}
}

func TestTrackerSplitsDeliveriesBySite(t *testing.T) {
	// Room of users 0 (site A), 1 (site B), 2 (site A).
	room := &ltRoom{Members: []int{0, 1, 2}, pos: map[int]int{0: 0, 1: 1, 2: 2}}
	onB := []bool{false, true, false}
	tr := newTracker([]*ltRoom{room})
	tr.remote = func(s, r int) bool { return onB[s] != onB[r] }
	start := tr.begin(1, 0, 0, true)
	tr.sent(1, true)
	tr.deliver(1, 0, 1, start.Add(30*time.Millisecond))
	tr.deliver(1, 0, 2, start.Add(5*time.Millisecond))
	tr.begin(2, 0, 1, true)
	tr.sent(2, true)
	// Message 2 reaches user 2 (other site) only: user 0 (other site too) misses it.
	tr.deliver(2, 0, 2, time.Now())
	res := tr.result()
	if len(res.RemoteLatencies) != 2 || len(res.LocalLatencies) != 1 {
		t.Fatalf("remote %v, local %v", res.RemoteLatencies, res.LocalLatencies)
	}
	if res.LocalLatencies[0] != 5*time.Millisecond {
		t.Fatalf("local latency %v", res.LocalLatencies[0])
	}
	if res.Lost != 1 || res.MissingRemote != 1 {
		t.Fatalf("lost %d, missing remote %d; want 1 and 1", res.Lost, res.MissingRemote)
	}
}

func TestWriteFedTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := writeFedTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(files.certFile, files.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(files.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("certificate for %s: %v", name, err)
		}
	}
}

func TestNewFedSitesAllowEachOther(t *testing.T) {
	t.Setenv("HAVEN_DATABASE", "postgres://elsewhere") // must not reach the sites
	a, b, err := newFedSites(t.TempDir(), "secret", []string{"HAVEN_LOGGING_LEVEL=info"})
	if err != nil {
		t.Fatal(err)
	}
	if a.name == b.name || a.clientURL == b.clientURL {
		t.Fatalf("sites share a name or port: %s %s", a.name, b.name)
	}
	for _, s := range []*fedSite{a, b} {
		env := strings.Join(s.env, "\n")
		for _, want := range []string{"HAVEN_SERVER_NAME=" + s.name, "HAVEN_FEDERATION_ALLOWED_SERVERS=" + a.name + "," + b.name, "HAVEN_LOGGING_LEVEL=info"} {
			if !strings.Contains(env, want) {
				t.Fatalf("site %s env lacks %s", s.label, want)
			}
		}
		if strings.Contains(env, "postgres://elsewhere") {
			t.Fatalf("site %s inherits HAVEN_DATABASE", s.label)
		}
	}
}
