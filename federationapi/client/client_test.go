package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/testca"
)

func TestStaticMapRoutesToItsAddress(t *testing.T) {
	ca := testca.New(t)
	b := newPeer(t, ca, "b.example")
	dns := &fakeDNS{}
	c := newClient(t, config.Federation{CAFile: ca.File(), Servers: config.Map("b.example=127.0.0.1:" + b.port)}, dns)
	ctx := context.Background()

	keys, err := c.ServerKeys(ctx, "b.example")
	if err != nil {
		t.Fatal(err)
	}
	if keys.ServerName != "b.example" {
		t.Fatalf("keys of %q", keys.ServerName)
	}
	got := b.last(t)
	if got.host != "b.example" || got.sni != "b.example" || got.path != "/_matrix/key/v2/server" {
		t.Fatalf("peer saw %+v", got)
	}
	// A signed call of the typed client takes the same road, with X-Matrix.
	if _, err := c.Fed().LookupProfile(ctx, "a.example", "b.example", "@bob:b.example", ""); err != nil {
		t.Fatal(err)
	}
	if got := b.last(t); !strings.HasPrefix(got.auth, `X-Matrix origin="a.example",key="ed25519:test",sig=`) || !strings.Contains(got.auth, `destination="b.example"`) {
		t.Fatalf("authorization %q", got.auth)
	}
	if n := dns.lookups.Load(); n != 0 {
		t.Fatalf("%d DNS lookups for a server of the static map", n)
	}
	rt, err := c.Resolve(ctx, "B.example")
	if err != nil || rt.Via != "static" || rt.Addrs[0] != "127.0.0.1:"+b.port {
		t.Fatalf("route %+v, %v", rt, err)
	}
}

func TestAllowlistRefusesBeforeAnyNetwork(t *testing.T) {
	ca := testca.New(t)
	b := newPeer(t, ca, "b.example", "c.example")
	dns := &fakeDNS{hosts: map[string][]string{"d.example": {"127.0.0.1"}}}
	c := newClient(t, config.Federation{
		CAFile:         ca.File(),
		AllowedServers: "b.example",
		Servers:        config.Map("b.example=127.0.0.1:" + b.port + ",c.example=127.0.0.1:" + b.port),
	}, dns)
	ctx := context.Background()
	for _, server := range []string{"c.example", "d.example", "d.example:" + b.port, "127.0.0.1:" + b.port} {
		_, err := c.ServerKeys(ctx, server)
		if !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("%s: %v, want ErrNotAllowed", server, err)
		}
		if _, err := c.Resolve(ctx, server); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("Resolve %s: %v", server, err)
		}
	}
	if n, l := b.conns.Load(), dns.lookups.Load(); n != 0 || l != 0 {
		t.Fatalf("refused servers cost %d connections and %d lookups", n, l)
	}
	if _, err := c.ServerKeys(ctx, "B.EXAMPLE"); err != nil {
		t.Fatalf("allowed server: %v", err)
	}
}

func TestPrivateAddressGuard(t *testing.T) {
	ca := testca.New(t)
	b := newPeer(t, ca, "localhost", "evil.example", "named.example")
	dns := &fakeDNS{hosts: map[string][]string{"evil.example": {"127.0.0.1"}, "named.example": {"127.0.0.1"}}}
	ipName := "127.0.0.1:" + b.port
	for _, tc := range []struct {
		name    string
		cfg     config.Federation
		server  string
		refused bool
	}{
		{name: "IP literal, unnamed", server: ipName, refused: true},
		{name: "a name that resolves to loopback", server: "evil.example:" + b.port, refused: true},
		{name: "IP literal in the allowlist", cfg: config.Federation{AllowedServers: config.List(ipName)}, server: ipName},
		{name: "name in the allowlist", cfg: config.Federation{AllowedServers: config.List("named.example:" + b.port)}, server: "named.example:" + b.port},
		{name: "static map to loopback", cfg: config.Federation{Servers: config.Map("named.example=127.0.0.1:" + b.port)}, server: "named.example"},
		{name: "private addresses allowed", cfg: config.Federation{AllowPrivateAddresses: true}, server: "evil.example:" + b.port},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.conns.Load()
			tc.cfg.CAFile = ca.File()
			c := newClient(t, tc.cfg, dns)
			_, err := c.ServerKeys(context.Background(), tc.server)
			if tc.refused {
				if !errors.Is(err, ErrPrivateAddress) {
					t.Fatalf("got %v, want ErrPrivateAddress", err)
				}
				if n := b.conns.Load() - before; n != 0 {
					t.Fatalf("%d connections reached the peer", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, ip := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "0.0.0.0", "100.64.0.1", "::1", "fe80::1", "fd00::1", "::", "::ffff:127.0.0.1", "224.0.0.1", "ff02::1"} {
		if err := guard(false)("tcp", net.JoinHostPort(ip, "8448"), nil); !errors.Is(err, ErrPrivateAddress) {
			t.Errorf("%s: %v", ip, err)
		}
		if err := guard(true)("tcp", net.JoinHostPort(ip, "8448"), nil); err != nil {
			t.Errorf("%s with private allowed: %v", ip, err)
		}
	}
	for _, ip := range []string{"8.8.8.8", "2001:4860:4860::8888", "100.128.0.1"} {
		if err := guard(false)("tcp", net.JoinHostPort(ip, "8448"), nil); err != nil {
			t.Errorf("%s: %v", ip, err)
		}
	}
}

func TestCAFileTrust(t *testing.T) {
	ours, theirs := testca.New(t), testca.New(t)
	good := newPeer(t, ours, "good.example")
	bad := newPeer(t, theirs, "bad.example")
	servers := config.Map("good.example=127.0.0.1:" + good.port + ",bad.example=127.0.0.1:" + bad.port)
	ctx := context.Background()

	c := newClient(t, config.Federation{CAFile: ours.File(), Servers: servers}, nil)
	if _, err := c.ServerKeys(ctx, "good.example"); err != nil {
		t.Fatalf("certificate of our CA: %v", err)
	}
	if _, err := c.ServerKeys(ctx, "bad.example"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("certificate of another CA: %v", err)
	}
	if bad.count() != 0 {
		t.Fatal("a request reached the peer with the untrusted certificate")
	}
	// A certificate of our CA for another name is refused too.
	wrong := newPeer(t, ours, "other.example")
	c = newClient(t, config.Federation{CAFile: ours.File(), Servers: config.Map("good.example=127.0.0.1:" + wrong.port)}, nil)
	if _, err := c.ServerKeys(ctx, "good.example"); err == nil {
		t.Fatal("a certificate for another name was accepted")
	}
	// The system roots do not know our CA.
	c = newClient(t, config.Federation{Servers: servers}, nil)
	if _, err := c.ServerKeys(ctx, "good.example"); err == nil {
		t.Fatal("a test CA's certificate was accepted against the system roots")
	}
	c = newClient(t, config.Federation{InsecureSkipTLSVerify: true, Servers: servers}, nil)
	if _, err := c.ServerKeys(ctx, "bad.example"); err != nil {
		t.Fatalf("insecure_skip_tls_verify: %v", err)
	}
}

func TestUnsupportedSchemeAndBadNames(t *testing.T) {
	c := newClient(t, config.Federation{}, nil)
	req, _ := http.NewRequest(http.MethodGet, "https://b.example/x", nil)
	if _, err := c.RoundTripper().RoundTrip(req); err == nil {
		t.Fatal("an https:// URL was sent")
	}
	if _, err := c.Resolve(context.Background(), "bad name"); err == nil {
		t.Fatal("resolved a bad server name")
	}
	if _, err := New(Options{ServerName: "a.example"}); err == nil {
		t.Fatal("New without a key")
	}
	if _, err := New(Options{ServerName: "a.example", Key: testKey(), Cfg: config.Federation{CAFile: "/nonexistent"}}); err == nil {
		t.Fatal("New with a missing CA file")
	}
	if _, err := New(Options{ServerName: "a.example", Key: testKey(), Cfg: config.Federation{MutualTLS: true}}); err == nil {
		t.Fatal("New with mutual TLS and no certificate")
	}
}

func TestCacheLifetime(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Add(-time.Hour).Format(http.TimeFormat) // a server whose clock is an hour behind
	for _, tc := range []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 24 * time.Hour},
		{"max-age", http.Header{"Cache-Control": {"public, max-age=3600"}}, time.Hour},
		{"max-age over the cap", http.Header{"Cache-Control": {"max-age=9999999999999"}}, 48 * time.Hour},
		{"max-age under the floor", http.Header{"Cache-Control": {"max-age=10"}}, 5 * time.Minute},
		{"no-cache", http.Header{"Cache-Control": {"no-cache"}}, 5 * time.Minute},
		{"no-store beats max-age", http.Header{"Cache-Control": {"max-age=3600, no-store"}}, 5 * time.Minute},
		{"max-age beats Expires", http.Header{"Cache-Control": {"max-age=7200"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 2 * time.Hour},
		{"Expires", http.Header{"Expires": {now.Add(3 * time.Hour).Format(http.TimeFormat)}}, 3 * time.Hour},
		{"Expires against Date", http.Header{"Date": {date}, "Expires": {now.Format(http.TimeFormat)}}, time.Hour},
		{"invalid Expires", http.Header{"Expires": {"0"}}, 5 * time.Minute},
		{"Expires far away", http.Header{"Expires": {now.Add(100 * 24 * time.Hour).Format(http.TimeFormat)}}, 48 * time.Hour},
	} {
		if got := cacheLifetime(tc.header, now); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestSplitServerName(t *testing.T) {
	for in, want := range map[string][2]string{
		"example.com": {"example.com", ""}, "example.com:8448": {"example.com", "8448"}, "1.2.3.4": {"1.2.3.4", ""},
		"1.2.3.4:5": {"1.2.3.4", "5"}, "[::1]": {"::1", ""}, "[::1]:8448": {"::1", "8448"},
	} {
		if h, p := splitServerName(in); h != want[0] || p != want[1] {
			t.Errorf("%s: %q %q", in, h, p)
		}
	}
}
