// Package clientip derives the address of the client behind a request:
// the TCP peer, or, when the peer is one of the trusted reverse proxies
// (config trusted_proxies), the address the proxies recorded in
// X-Forwarded-For. Rate limits, the per-account login slowdown, devices'
// last-seen addresses and the audit log all use this one derivation.
//
// X-Forwarded-For is a list each proxy appends its own peer to, so only its
// right end can be believed: entries are read from the right, skipping
// those that are trusted proxies themselves, and the first other one is the
// client. Everything to its left was written by the client and may be
// forged. A request that did not come from a trusted proxy is the peer's,
// whatever its headers say.
//
// Tables: none. Goroutines: none. Locks: none (Trusted is immutable).
package clientip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Trusted is the set of reverse proxies whose X-Forwarded-For is believed.
// The zero value trusts nobody.
type Trusted struct {
	nets []netip.Prefix
}

// ParseItem reads one trusted_proxies item: an address (10.0.0.5, ::1) or
// a range in CIDR notation (10.0.0.0/24, fd00::/64).
func ParseItem(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address range", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// New builds the set from trusted_proxies items (config.Check has
// refused bad ones; New refuses them too).
func New(items []string) (Trusted, error) {
	var t Trusted
	for _, it := range items {
		p, err := ParseItem(it)
		if err != nil {
			return Trusted{}, err
		}
		t.nets = append(t.nets, p)
	}
	return t, nil
}

// Contains tells whether a is a trusted proxy.
func (t Trusted) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the client address of r as text (an IP address, without
// port or brackets).
func (t Trusted) Addr(r *http.Request) string {
	peer := peerAddr(r.RemoteAddr)
	pa, err := netip.ParseAddr(peer)
	if err != nil || len(t.nets) == 0 || !t.Contains(pa) {
		return peer
	}
	// Several X-Forwarded-For headers count as one list, in order.
	var entries []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		entries = append(entries, strings.Split(v, ",")...)
	}
	client := pa
	for i := len(entries) - 1; i >= 0; i-- {
		a, ok := parseEntry(entries[i])
		if !ok {
			// Garbage where a proxy would have written an address: the
			// list cannot be read past it, so the last good hop is the
			// client (at worst a trusted proxy, never a forged address).
			break
		}
		client = a
		if !t.Contains(a) {
			break
		}
	}
	return client.Unmap().String()
}

// peerAddr strips the port (and brackets) from a RemoteAddr.
func peerAddr(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	remote = strings.Trim(remote, "[]")
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return remote
}

// parseEntry reads one X-Forwarded-For entry: an address, possibly with a
// port or in brackets (some proxies write them).
func parseEntry(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// Network is the part of an address that stays the same for one
// client's network: the address itself for IPv4, its /64 for IPv6 (where
// a device's own address changes often, its /64 seldom). Text that is no
// address is returned as it is.
func Network(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}
