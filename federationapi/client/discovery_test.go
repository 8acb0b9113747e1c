package client

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/testca"
)

// discoveryWorld is a /.well-known server and a peer behind names that a
// fake DNS sends to loopback.
type discoveryWorld struct {
	wk, b *peer
	dns   *fakeDNS
	clock *fakeClock
	c     *Client
	mu    sync.Mutex
	hits  map[string]int // /.well-known fetches per host
}

func newDiscoveryWorld(t *testing.T) *discoveryWorld {
	ca := testca.New(t)
	w := &discoveryWorld{hits: map[string]int{}, clock: newClock()}
	wkNames := []string{"wk.example", "wkip.example", "wksrv.example", "nowk.example", "old.example", "redir.example", "loop.example", "big.example", "badjson.example", "tohttp.example"}
	w.wk = newPeer(t, ca, wkNames...)
	w.b = newPeer(t, ca, "deleg.example", "127.0.0.1", "deleg2.example", "nowk.example", "old.example")
	pb := w.b.port
	w.wk.handler = func(rw http.ResponseWriter, r *http.Request) {
		host := config.HostOf(r.Host)
		w.mu.Lock()
		w.hits[host]++
		w.mu.Unlock()
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(rw, r)
			return
		}
		switch host {
		case "wk.example":
			rw.Header().Set("Cache-Control", "max-age=600")
			fmt.Fprintf(rw, `{"m.server": "deleg.example:%s"}`, pb)
		case "wkip.example":
			fmt.Fprintf(rw, `{"m.server": "127.0.0.1:%s"}`, pb)
		case "wksrv.example":
			fmt.Fprint(rw, `{"m.server": "deleg2.example"}`)
		case "redir.example":
			http.Redirect(rw, r, "https://wk.example:"+w.wk.port+"/.well-known/matrix/server", http.StatusFound)
		case "loop.example":
			http.Redirect(rw, r, r.URL.String(), http.StatusFound)
		case "tohttp.example":
			http.Redirect(rw, r, "http://wk.example:"+w.wk.port+"/.well-known/matrix/server", http.StatusFound)
		case "big.example":
			fmt.Fprintf(rw, `{"m.server": "deleg.example:%s", "pad": "%s"}`, pb, strings.Repeat("x", 100<<10))
		case "badjson.example":
			fmt.Fprint(rw, `{"m.server": 5}`)
		default:
			http.NotFound(rw, r)
		}
	}
	w.dns = &fakeDNS{
		hosts: map[string][]string{"tgt.example": {"127.0.0.1"}, "deleg.example": {"127.0.0.1"}},
		srv: map[string][]*net.SRV{
			"_matrix-fed._tcp.deleg2.example": {{Target: "tgt.example.", Port: portOf(t, pb)}},
			"_matrix-fed._tcp.nowk.example":   {{Target: "tgt.example.", Port: portOf(t, pb)}},
			"_matrix._tcp.old.example":        {{Target: "tgt.example.", Port: portOf(t, pb)}},
			"_matrix-fed._tcp.redir.example":  {{Target: "tgt.example.", Port: portOf(t, pb)}},
			"_matrix-fed._tcp.loop.example":   {{Target: "tgt.example.", Port: portOf(t, pb)}},
		},
	}
	for _, n := range wkNames {
		w.dns.hosts[n] = []string{"127.0.0.1"}
	}
	w.c = newClient(t, config.Federation{CAFile: ca.File(), AllowPrivateAddresses: true}, w.dns, func(o *Options) {
		o.Now = w.clock.Now
		o.wellKnownPort = w.wk.port
	})
	return w
}

func portOf(t *testing.T, p string) uint16 {
	var n uint16
	if _, err := fmt.Sscan(p, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (w *discoveryWorld) wkHits(host string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[host]
}

func TestDiscoverySteps(t *testing.T) {
	w := newDiscoveryWorld(t)
	pb := w.b.port
	for _, tc := range []struct {
		server, via, host, sni string
		addrs                  []string
	}{
		{server: "127.0.0.1:" + pb, via: "ip", host: "127.0.0.1:" + pb, sni: "", addrs: []string{"127.0.0.1:" + pb}},
		{server: "deleg.example:" + pb, via: "port", host: "deleg.example:" + pb, sni: "deleg.example", addrs: []string{"deleg.example:" + pb}},
		{server: "wk.example", via: "well-known", host: "deleg.example:" + pb, sni: "deleg.example", addrs: []string{"deleg.example:" + pb}},
		{server: "wkip.example", via: "well-known", host: "127.0.0.1:" + pb, sni: "", addrs: []string{"127.0.0.1:" + pb}},
		{server: "wksrv.example", via: "srv", host: "deleg2.example", sni: "deleg2.example", addrs: []string{"tgt.example:" + pb}},
		{server: "nowk.example", via: "srv", host: "nowk.example", sni: "nowk.example", addrs: []string{"tgt.example:" + pb}},
		{server: "old.example", via: "srv-deprecated", host: "old.example", sni: "old.example", addrs: []string{"tgt.example:" + pb}},
		{server: "redir.example", via: "well-known", host: "deleg.example:" + pb, sni: "deleg.example", addrs: []string{"deleg.example:" + pb}},
		// Invalid answers fall through to SRV on the server name, as the spec says.
		{server: "loop.example", via: "srv", addrs: []string{"tgt.example:" + pb}},
		{server: "big.example", via: "default", addrs: []string{"big.example:8448"}},
		{server: "badjson.example", via: "default", addrs: []string{"badjson.example:8448"}},
		{server: "tohttp.example", via: "default", addrs: []string{"tohttp.example:8448"}},
		{server: "plain.example", via: "default", addrs: []string{"plain.example:8448"}},
		{server: "[::1]", via: "ip", addrs: []string{"[::1]:8448"}},
	} {
		t.Run(tc.server, func(t *testing.T) {
			rt, err := w.c.Resolve(context.Background(), tc.server)
			if err != nil {
				t.Fatal(err)
			}
			if rt.Via != tc.via || strings.Join(rt.Addrs, " ") != strings.Join(tc.addrs, " ") {
				t.Fatalf("route %+v, want via %s to %v", rt, tc.via, tc.addrs)
			}
			if tc.host == "" {
				return
			}
			if _, err := w.c.ServerKeys(context.Background(), tc.server); err != nil {
				t.Fatal(err)
			}
			if got := w.b.last(t); got.host != tc.host || got.sni != tc.sni {
				t.Fatalf("peer saw Host %q SNI %q, want %q %q", got.host, got.sni, tc.host, tc.sni)
			}
		})
	}
}

func TestWellKnownCachedPerCacheControl(t *testing.T) {
	w := newDiscoveryWorld(t)
	ctx := context.Background()
	get := func() {
		t.Helper()
		if _, err := w.c.ServerKeys(ctx, "wk.example"); err != nil {
			t.Fatal(err)
		}
	}
	get()
	get()
	if n := w.wkHits("wk.example"); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	w.clock.Advance(9 * time.Minute) // max-age=600
	get()
	if n := w.wkHits("wk.example"); n != 1 {
		t.Fatalf("%d fetches within max-age, want 1", n)
	}
	w.clock.Advance(2 * time.Minute)
	get()
	if n := w.wkHits("wk.example"); n != 2 {
		t.Fatalf("%d fetches after max-age, want 2", n)
	}
}

func TestFailedWellKnownCachedForAnHour(t *testing.T) {
	w := newDiscoveryWorld(t)
	ctx := context.Background()
	get := func() {
		t.Helper()
		if _, err := w.c.ServerKeys(ctx, "nowk.example"); err != nil {
			t.Fatal(err)
		}
	}
	get()
	lookups := w.dns.lookups.Load()
	w.clock.Advance(30 * time.Minute)
	get()
	if n := w.wkHits("nowk.example"); n != 1 {
		t.Fatalf("%d fetches within the hour, want 1", n)
	}
	if w.dns.lookups.Load() == lookups {
		t.Fatal("the SRV route was not looked up again after its lifetime")
	}
	w.clock.Advance(31 * time.Minute)
	get()
	if n := w.wkHits("nowk.example"); n != 2 {
		t.Fatalf("%d fetches after the hour, want 2", n)
	}
}

// A failed request forgets the route, so that the next one looks again.
func TestFailedRequestForgetsRoute(t *testing.T) {
	w := newDiscoveryWorld(t)
	ctx := context.Background()
	if _, err := w.c.ServerKeys(ctx, "nowk.example"); err != nil {
		t.Fatal(err)
	}
	w.dns.srv["_matrix-fed._tcp.nowk.example"] = []*net.SRV{{Target: "nowhere.example.", Port: 1}}
	w.c.CloseIdleConnections()
	if _, err := w.c.ServerKeys(ctx, "nowk.example"); err != nil {
		t.Fatalf("the cached route was not used: %v", err)
	}
	w.b.srv.CloseClientConnections()
	w.c.CloseIdleConnections()
	w.b.srv.Close()
	if _, err := w.c.ServerKeys(ctx, "nowk.example"); err == nil {
		t.Fatal("request to a closed server worked")
	}
	rt, err := w.c.Resolve(ctx, "nowk.example")
	if err != nil || rt.Addrs[0] != "nowhere.example:1" {
		t.Fatalf("route after a failure: %+v %v", rt, err)
	}
}
