// Package netguard keeps the connections Haven makes on a user's behalf
// (push gateways, URL previews) and to other servers (federation) away
// from this host and the company's internal network.
//
// The check runs as a net.Dialer Control function: it sees the address
// actually being connected to, after name resolution, for the first
// request and every redirect, so a name that resolves to a public address
// when asked and to an internal one when connected to gains nothing (DNS
// rebinding). It starts no goroutines and holds no locks.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrBlocked is returned (wrapped) for a connection refused because of
// its address. Nothing was sent.
var ErrBlocked = errors.New("address not allowed")

// special are the ranges that are not the public internet: this network
// and this host, private networks, carrier-grade NAT, link-local,
// multicast and broadcast, documentation and benchmarking ranges, and IPv6
// ranges that embed or translate to IPv4 ones (NAT64, 6to4, Teredo).
// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
var special = MustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
	"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16",
	"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

// MustPrefixes parses CIDR ranges; it panics on a malformed one (for
// literals in the code; configuration is parsed with ParsePrefixes).
func MustPrefixes(ss ...string) []netip.Prefix {
	out, err := ParsePrefixes(ss)
	if err != nil {
		panic(err)
	}
	return out
}

// ParsePrefixes parses CIDR ranges; a bare address is its own /32 or /128.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not an address range (CIDR, e.g. 10.1.0.0/16)", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Internal reports whether addr is loopback, private, link-local or
// otherwise not a public internet address.
func Internal(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return true
	}
	for _, p := range special {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Policy says which addresses a kind of connection may reach. The zero
// Policy allows public addresses only.
type Policy struct {
	// Allowed are exceptions: ranges reachable even though internal
	// (an intranet push gateway, say). They win over Denied.
	Allowed []netip.Prefix
	// Denied are ranges refused besides the internal ones.
	Denied []netip.Prefix
	// AllowInternal lets every internal address through (Denied still
	// applies).
	AllowInternal bool
	// Hint is added to the error of a refused connection: which setting
	// allows it.
	Hint string
}

// Allows tells whether a connection to addr may be made.
func (p Policy) Allows(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, r := range p.Allowed {
		if r.Contains(addr) {
			return true
		}
	}
	for _, r := range p.Denied {
		if r.Contains(addr) {
			return false
		}
	}
	return p.AllowInternal || !Internal(addr)
}

// Control is a net.Dialer Control function applying the policy to the
// address about to be connected to.
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s is not an IP address and port", ErrBlocked, address)
	}
	if !p.Allows(ap.Addr()) {
		if p.Hint != "" {
			return fmt.Errorf("%w: %s (%s)", ErrBlocked, address, p.Hint)
		}
		return fmt.Errorf("%w: %s", ErrBlocked, address)
	}
	return nil
}

// Dialer is a dialer that applies the policy.
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: p.Control}
}

// Transport is an HTTP transport that applies the policy to every
// connection. It uses no proxy: a proxy would connect on its behalf,
// unchecked.
func (p Policy) Transport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           p.Dialer(timeout).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}
