package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/internal/testca"
)

// fakeDNS answers from maps and counts the lookups.
type fakeDNS struct {
	hosts   map[string][]string   // host → IPs
	srv     map[string][]*net.SRV // "_service._proto.name" → records
	lookups atomic.Int64
}

func (d *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	d.lookups.Add(1)
	key := "_" + service + "._" + proto + "." + name
	if recs, ok := d.srv[key]; ok {
		return key, recs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

func (d *fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	d.lookups.Add(1)
	ips, ok := d.hosts[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IPAddr
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
	}
	return out, nil
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// seen is what a peer saw of one request.
type seen struct {
	host, sni, path, auth, clientCN string
}

// peer is a TLS server on loopback that records its requests.
type peer struct {
	srv     *httptest.Server
	port    string
	conns   atomic.Int64
	mu      sync.Mutex
	reqs    []seen
	handler http.HandlerFunc // optional; the default answers server keys
}

func newPeer(t *testing.T, ca *testca.CA, names ...string) *peer {
	t.Helper()
	certFile, keyFile := ca.Issue(t, names...)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	p.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Config.ErrorLog = quietLog()
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	_, p.port, _ = net.SplitHostPort(p.srv.Listener.Addr().String())
	return p
}

func (p *peer) serve(w http.ResponseWriter, r *http.Request) {
	s := seen{host: r.Host, path: r.URL.Path, auth: r.Header.Get("Authorization")}
	if r.TLS != nil {
		s.sni = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 {
			s.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, s)
	p.mu.Unlock()
	if p.handler != nil {
		p.handler(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"server_name":"` + strings.Split(r.Host, ":")[0] + `","valid_until_ts":1,"verify_keys":{},"old_verify_keys":{}}`))
}

func (p *peer) last(t *testing.T) seen {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) == 0 {
		t.Fatal("the peer saw no request")
	}
	return p.reqs[len(p.reqs)-1]
}

func (p *peer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reqs)
}

func testKey() serverkey.Key {
	return serverkey.Key{ID: "ed25519:test", Private: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return l
}

func newClient(t *testing.T, cfg config.Federation, dns *fakeDNS, change ...func(*Options)) *Client {
	t.Helper()
	if dns == nil {
		dns = &fakeDNS{}
	}
	opts := Options{ServerName: "a.example", Key: testKey(), Cfg: cfg, Log: quietLogger(), Resolver: dns}
	for _, f := range change {
		f(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
