package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"context"
)

const (
	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	idleConnTimeout     = 90 * time.Second
	// transportIdle is how long an unused per-name transport is kept.
	transportIdle = 10 * time.Minute
)

// transport is the http.RoundTripper behind fclient: it takes matrix://
// (or matrix-federation://) URLs whose host is a server name.
type transport struct {
	allowed      map[string]bool // lower-cased; empty: any server
	named        map[string]bool // allowed ∪ the static map's names
	allowPrivate bool            // federation.allow_private_addresses
	skipVerify   bool
	roots        *x509.CertPool // nil: the system roots
	clientCert   *keyPair       // nil unless mutual_tls
	sessions     *sessionCache
	dns          Resolver
	res          *resolver
	now          func() time.Time

	mu   sync.Mutex
	pool map[poolKey]*pooled
}

// poolKey separates connections by the certificate name they were verified
// for and by whether they may reach internal addresses, so that a pooled
// connection of a trusted server is never reused for an untrusted one.
type poolKey struct {
	tlsName      string
	allowPrivate bool
}

type pooled struct {
	tr       *http.Transport
	lastUsed time.Time
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

// mayPrivate reports whether requests to serverName may reach internal
// addresses.
func (t *transport) mayPrivate(serverName string) bool {
	return t.allowPrivate || t.named[strings.ToLower(serverName)]
}

// permitted applies federation.allowed_servers.
func (t *transport) permitted(serverName string) error {
	if len(t.allowed) > 0 && !t.allowed[strings.ToLower(serverName)] {
		return fmt.Errorf("%w: %s", ErrNotAllowed, serverName)
	}
	return nil
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix" && req.URL.Scheme != "matrix-federation" {
		closeBody(req)
		return nil, fmt.Errorf("federation transport: unsupported URL scheme %q (only matrix:// server names)", req.URL.Scheme)
	}
	server := req.URL.Host
	if err := t.permitted(server); err != nil {
		closeBody(req)
		return nil, err
	}
	private := t.mayPrivate(server)
	rt, err := t.res.resolve(req.Context(), server, private)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	var errs []error
	for i, addr := range rt.Addrs {
		r := req.Clone(req.Context())
		if i > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				break // the body is spent and cannot be made again
			}
			body, err := req.GetBody()
			if err != nil {
				break
			}
			r.Body = body
		}
		r.URL.Scheme = "https"
		r.URL.Host = addr
		r.Host = rt.Host
		resp, err := t.httpTransport(rt.TLSServerName, private).RoundTrip(r)
		if err == nil {
			resp.Body = &cappedBody{rc: resp.Body, left: MaxResponseBytes + 1}
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if req.Context().Err() != nil {
			break
		}
	}
	t.res.forget(server)
	return nil, fmt.Errorf("federation request to %s: %w", server, errors.Join(errs...))
}

// httpTransport returns the transport for connections verified against
// tlsName ("" derives it from the URL, for /.well-known).
func (t *transport) httpTransport(tlsName string, allowPrivate bool) *http.Transport {
	key := poolKey{tlsName, allowPrivate}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.pool[key]; ok {
		p.lastUsed = now
		return p.tr
	}
	for k, p := range t.pool {
		if now.Sub(p.lastUsed) > transportIdle {
			p.tr.CloseIdleConnections()
			delete(t.pool, k)
		}
	}
	tr := &http.Transport{
		Proxy:                 nil, // the guard must see the peer's address
		DialContext:           t.dialContext(allowPrivate),
		TLSClientConfig:       t.tlsConfig(tlsName),
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
	}
	t.pool[key] = &pooled{tr: tr, lastUsed: now}
	return tr
}

func (t *transport) tlsConfig(tlsName string) *tls.Config {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         tlsName,
		RootCAs:            t.roots,
		InsecureSkipVerify: t.skipVerify,
		ClientSessionCache: t.sessions,
	}
	if t.clientCert != nil {
		kp := t.clientCert
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return kp.get(), nil
		}
	}
	return c
}

// dialContext resolves a host with our Resolver and connects to its
// addresses in turn, each checked by the guard.
func (t *transport) dialContext(allowPrivate bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: guard(allowPrivate)}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var ips []string
		if ip := net.ParseIP(host); ip != nil {
			ips = []string{host}
		} else {
			found, err := t.dns.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("look up %s: %w", host, err)
			}
			for _, a := range found {
				ips = append(ips, a.String())
			}
			if len(ips) == 0 {
				return nil, fmt.Errorf("look up %s: no addresses", host)
			}
		}
		var errs []error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip, port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// wellKnownClient fetches /.well-known/matrix/server: HTTPS only, a few
// redirects at most, through the same guard and certificates.
func (t *transport) wellKnownClient(allowPrivate bool) *http.Client {
	return &http.Client{
		Transport: t.httpTransport("", allowPrivate),
		Timeout:   wellKnownTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= wellKnownMaxRedirects {
				return fmt.Errorf("more than %d redirects", wellKnownMaxRedirects)
			}
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
			}
			return nil
		},
	}
}

// sessionCache is a TLS session cache that Reload empties: a resumed
// session would carry the old client certificate.
type sessionCache struct {
	cur atomic.Pointer[tls.ClientSessionCache]
}

func newSessionCache() *sessionCache {
	c := &sessionCache{}
	c.reset()
	return c
}

func (c *sessionCache) reset() {
	lru := tls.NewLRUClientSessionCache(256)
	c.cur.Store(&lru)
}

func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return (*c.cur.Load()).Get(key)
}
func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) { (*c.cur.Load()).Put(key, cs) }

// closeIdle closes every idle connection.
func (t *transport) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pool {
		p.tr.CloseIdleConnections()
	}
}

// MaxResponseBytes bounds the body of one answer from another server: the
// largest expected are the state and auth chain of a big room's send_join,
// a few hundred megabytes at worst. A server that sends more is cut off
// (the read fails) instead of filling our memory.
const MaxResponseBytes = 512 << 20

// errResponseTooLarge ends the read of an answer beyond MaxResponseBytes.
var errResponseTooLarge = fmt.Errorf("federation response larger than %d bytes", MaxResponseBytes)

// cappedBody is a response body that fails when it reaches left bytes
// (made MaxResponseBytes+1: a body of exactly the maximum is read whole).
type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left <= 0 {
		return n, errResponseTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
