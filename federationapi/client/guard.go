package client

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrNotAllowed is returned for a destination that federation.allowed_servers
// does not list. Nothing was sent and no connection was made.
var ErrNotAllowed = errors.New("server not in federation.allowed_servers")

// ErrPrivateAddress is returned when a destination resolves to a loopback,
// private, link-local or other internal address and may not use one.
var ErrPrivateAddress = errors.New("address is private")

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// internalAddr reports whether ip is an address outbound federation must
// not reach unless the destination is trusted.
func internalAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || cgnat.Contains(ip) ||
		(ip.Is4() && ip.As4()[0] == 0) // 0.0.0.0/8 ("this network")
}

// guard is a net.Dialer Control function: it sees the address about to be
// connected to, after every DNS lookup, so no name can smuggle an internal
// address past it.
func guard(allowPrivate bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("dial %s: not an IP address and port", address)
		}
		if !allowPrivate && internalAddr(ap.Addr()) {
			return fmt.Errorf("%w: %s (name the server in federation.allowed_servers or federation.servers to allow it)", ErrPrivateAddress, address)
		}
		return nil
	}
}
