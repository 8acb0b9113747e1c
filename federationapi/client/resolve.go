package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
)

// Resolver is the DNS the discovery uses; *net.Resolver is one.
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Route is where the requests for a server name go.
type Route struct {
	// Addrs are the host:port pairs to try, in order; a host may be a DNS
	// name, resolved when a connection is made.
	Addrs []string
	// TLSServerName is the name the peer's certificate must cover (sent as
	// SNI unless it is an IP address).
	TLSServerName string
	// Host is the Host header of the requests.
	Host string
	// Via says how the route was found: "static", "ip", "port",
	// "well-known", "srv", "srv-deprecated" or "default".
	Via string
}

const (
	defaultPort = "8448"
	// wellKnownDefaultTTL, wellKnownMinTTL and wellKnownMaxTTL bound the
	// life of a /.well-known answer: the spec's 24 hours when the answer
	// has no cache headers, at most its 48 hours, and at least five
	// minutes so that a peer saying no-cache does not make every request
	// fetch it again.
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMinTTL     = 5 * time.Minute
	wellKnownMaxTTL     = 48 * time.Hour
	// wellKnownErrorTTL is how long a failed /.well-known is remembered.
	wellKnownErrorTTL = time.Hour
	// routeTTL is how long the SRV and default steps are trusted before
	// they are looked up again (DNS answers carry no TTL through Go's
	// resolver); a failed request forgets the route at once.
	routeTTL = 10 * time.Minute
	// wellKnownMaxBytes and wellKnownMaxRedirects limit the fetch.
	wellKnownMaxBytes     = 64 << 10
	wellKnownMaxRedirects = 5
	wellKnownTimeout      = 15 * time.Second
)

type wellKnownEntry struct {
	server  string // the delegated server name; "" when the lookup failed
	expires time.Time
}

type routeEntry struct {
	route   Route
	expires time.Time
}

// resolver finds the route to a server name and caches what it found.
type resolver struct {
	dns    Resolver
	now    func() time.Time
	log    logrus.FieldLogger
	static map[string]string // lower-cased server name → host:port
	// httpClient returns the client for /.well-known fetches, which may
	// reach internal addresses when allowPrivate is true.
	httpClient func(allowPrivate bool) *http.Client
	// wellKnownPort, when set, replaces 443 for /.well-known (tests).
	wellKnownPort string

	mu        sync.Mutex
	wellKnown map[string]wellKnownEntry // host → answer
	routes    map[string]routeEntry     // server name → route
}

// staticRoute returns the route of a server named in federation.servers.
func (r *resolver) staticRoute(serverName string) (Route, bool) {
	addr, ok := r.static[strings.ToLower(serverName)]
	if !ok {
		return Route{}, false
	}
	return Route{Addrs: []string{addr}, TLSServerName: config.HostOf(serverName), Host: serverName, Via: "static"}, true
}

// forget drops the cached route of a server (not its /.well-known answer),
// so that the next request looks up SRV and addresses again.
func (r *resolver) forget(serverName string) {
	r.mu.Lock()
	delete(r.routes, serverName)
	r.mu.Unlock()
}

// resolve follows the spec's "Resolving server names".
func (r *resolver) resolve(ctx context.Context, serverName string, allowPrivate bool) (Route, error) {
	if rt, ok := r.staticRoute(serverName); ok {
		return rt, nil
	}
	if !config.ValidServerName(serverName) {
		return Route{}, fmt.Errorf("resolve %q: not a server name", serverName)
	}
	host, port := splitServerName(serverName)
	// 1. An IP literal, with its port or 8448.
	if isIP(host) {
		return Route{Addrs: []string{net.JoinHostPort(host, orDefault(port))}, TLSServerName: host, Host: serverName, Via: "ip"}, nil
	}
	// 2. A host name with an explicit port.
	if port != "" {
		return Route{Addrs: []string{net.JoinHostPort(host, port)}, TLSServerName: host, Host: serverName, Via: "port"}, nil
	}
	now := r.now()
	r.mu.Lock()
	e, ok := r.routes[serverName]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.route, nil
	}
	// 3. /.well-known/matrix/server.
	delegated, wkExpires, err := r.lookupWellKnown(ctx, host, allowPrivate)
	if err != nil {
		return Route{}, err
	}
	var rt Route
	if delegated != "" {
		dhost, dport := splitServerName(delegated)
		switch {
		case isIP(dhost): // 3.1
			rt = Route{Addrs: []string{net.JoinHostPort(dhost, orDefault(dport))}, TLSServerName: dhost, Host: delegated, Via: "well-known"}
		case dport != "": // 3.2
			rt = Route{Addrs: []string{net.JoinHostPort(dhost, dport)}, TLSServerName: dhost, Host: delegated, Via: "well-known"}
		default: // 3.3 to 3.5: SRV on the delegated name, then 8448.
			if rt, err = r.srvOrDefault(ctx, dhost); err != nil {
				return Route{}, fmt.Errorf("resolve %s (delegated to %s): %w", serverName, delegated, err)
			}
		}
	} else if rt, err = r.srvOrDefault(ctx, host); err != nil { // 4 to 6
		return Route{}, fmt.Errorf("resolve %s: %w", serverName, err)
	}
	expires := now.Add(routeTTL)
	if wkExpires.Before(expires) {
		expires = wkExpires
	}
	r.mu.Lock()
	r.routes[serverName] = routeEntry{route: rt, expires: expires}
	r.mu.Unlock()
	r.log.WithFields(logrus.Fields{"server_name": serverName, "addrs": rt.Addrs, "tls_server_name": rt.TLSServerName, "via": rt.Via}).Debug("federation: resolved server")
	return rt, nil
}

// srvOrDefault looks up _matrix-fed._tcp, then the deprecated _matrix._tcp,
// of host, and falls back to host:8448. The certificate and Host header are
// those of host, whatever the SRV target.
func (r *resolver) srvOrDefault(ctx context.Context, host string) (Route, error) {
	for _, svc := range []struct{ service, via string }{{"matrix-fed", "srv"}, {"matrix", "srv-deprecated"}} {
		_, srvs, err := r.dns.LookupSRV(ctx, svc.service, "tcp", host)
		var dnsErr *net.DNSError
		if err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
			return Route{}, fmt.Errorf("SRV _%s._tcp.%s: %w", svc.service, host, err)
		}
		if len(srvs) == 0 {
			continue
		}
		if len(srvs) == 1 && (srvs[0].Target == "." || srvs[0].Target == "") {
			return Route{}, fmt.Errorf("SRV _%s._tcp.%s says the service is not available", svc.service, host)
		}
		rt := Route{TLSServerName: host, Host: host, Via: svc.via}
		for _, s := range srvs { // already sorted by priority and weight
			if t := strings.TrimSuffix(s.Target, "."); t != "" {
				rt.Addrs = append(rt.Addrs, net.JoinHostPort(t, strconv.Itoa(int(s.Port))))
			}
		}
		return rt, nil
	}
	return Route{Addrs: []string{net.JoinHostPort(host, defaultPort)}, TLSServerName: host, Host: host, Via: "default"}, nil
}

// lookupWellKnown returns the m.server of host's /.well-known/matrix/server
// ("" when there is none or it is invalid) and until when that holds.
func (r *resolver) lookupWellKnown(ctx context.Context, host string, allowPrivate bool) (string, time.Time, error) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.wellKnown[host]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.server, e.expires, nil
	}
	server, ttl, err := r.fetchWellKnown(ctx, host, allowPrivate)
	if ctx.Err() != nil {
		// Our caller gave up: that says nothing about the peer.
		return "", time.Time{}, ctx.Err()
	}
	if err != nil {
		r.log.WithError(err).WithField("host", host).Debug("federation: no usable /.well-known/matrix/server")
		server, ttl = "", wellKnownErrorTTL
	}
	e = wellKnownEntry{server: server, expires: now.Add(ttl)}
	r.mu.Lock()
	r.wellKnown[host] = e
	r.mu.Unlock()
	return e.server, e.expires, nil
}

func (r *resolver) fetchWellKnown(ctx context.Context, host string, allowPrivate bool) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	authority := host
	if isIP(host) && strings.Contains(host, ":") {
		authority = "[" + host + "]"
	}
	if r.wellKnownPort != "" {
		authority = net.JoinHostPort(host, r.wellKnownPort)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+authority+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := r.httpClient(allowPrivate).Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("/.well-known/matrix/server answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil {
		return "", 0, err
	}
	if len(body) > wellKnownMaxBytes {
		return "", 0, fmt.Errorf("/.well-known/matrix/server is larger than %d bytes", wellKnownMaxBytes)
	}
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", 0, fmt.Errorf("/.well-known/matrix/server is not a JSON object with a string m.server: %w", err)
	}
	if doc.Server == nil || !config.ValidServerName(*doc.Server) {
		return "", 0, errors.New("/.well-known/matrix/server has no valid m.server")
	}
	return *doc.Server, cacheLifetime(resp.Header, r.now()), nil
}

// cacheLifetime is how long a /.well-known answer may be kept: its
// Cache-Control max-age, else its Expires (against its Date), else the
// default; bounded by wellKnownMinTTL and wellKnownMaxTTL.
func cacheLifetime(h http.Header, now time.Time) time.Duration {
	ttl, found := time.Duration(0), false
	for _, cc := range h.Values("Cache-Control") {
		for _, d := range strings.Split(cc, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				ttl, found = 0, true
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && n >= 0 && !found {
					ttl, found = time.Duration(min(n, int64(wellKnownMaxTTL/time.Second)))*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp := h.Get("Expires"); exp != "" {
			found = true // an invalid Expires means "already expired"
			if t, err := http.ParseTime(exp); err == nil {
				base := now
				if d, err := http.ParseTime(h.Get("Date")); err == nil {
					base = d
				}
				ttl = t.Sub(base)
			}
		}
	}
	if !found {
		return wellKnownDefaultTTL
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

// splitServerName splits a valid server name into its host (without the
// brackets of an IPv6 literal) and its port ("" when it has none).
func splitServerName(s string) (host, port string) {
	host = config.HostOf(s)
	if strings.HasPrefix(s, "[") {
		if end := strings.IndexByte(s, ']'); end >= 0 && strings.HasPrefix(s[end+1:], ":") {
			return host, s[end+2:]
		}
		return host, ""
	}
	if len(host) < len(s) {
		port = s[len(host)+1:]
	}
	return host, port
}

func isIP(host string) bool { return net.ParseIP(host) != nil }

func orDefault(port string) string {
	if port == "" {
		return defaultPort
	}
	return port
}
