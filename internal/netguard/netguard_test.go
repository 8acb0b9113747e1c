package netguard

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
)

func TestPolicyAllows(t *testing.T) {
	p := Policy{Allowed: MustPrefixes("10.1.2.3/32"), Denied: MustPrefixes("8.8.4.0/24")}
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "100.128.0.1": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "224.0.0.1": false, "::1": false, "::": false, "fe80::1": false,
		"fd00::1": false, "::ffff:127.0.0.1": false, "64:ff9b::a00:1": false,
		"10.1.2.3": true, "8.8.4.4": false,
	} {
		if got := p.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: allowed %v, want %v", addr, got, want)
		}
	}
	if !(Policy{AllowInternal: true}).Allows(netip.MustParseAddr("127.0.0.1")) {
		t.Error("AllowInternal refused loopback")
	}
}

// TestTransportChecksTheDialledAddress: a name resolving to loopback is
// refused when connecting, and nothing reaches the server.
func TestTransportChecksTheDialledAddress(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := &http.Client{Transport: Policy{Hint: "allow it with x"}.Transport(0)}
	_, err := c.Get("http://localhost:" + port + "/")
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("got %v, want ErrBlocked", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the server on loopback was reached")
	}
	c = &http.Client{Transport: Policy{Allowed: MustPrefixes("127.0.0.0/8", "::1")}.Transport(0)}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Fatal("the allowed server was not reached")
	}
}
