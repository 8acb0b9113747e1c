package client

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/haven-chat/haven/internal/netguard"
)

// ErrNotAllowed is returned for a destination that federation.allowed_servers
// does not list. Nothing was sent and no connection was made.
var ErrNotAllowed = errors.New("server not in federation.allowed_servers")

// ErrPrivateAddress is returned when a destination resolves to a loopback,
// private, link-local or other internal address and may not use one.
var ErrPrivateAddress = errors.New("address is private")

// guard is a net.Dialer Control function: it sees the address about to be
// connected to, after every DNS lookup, so no name can smuggle an internal
// address past it. The ranges are the shared ones of internal/netguard.
func guard(allowPrivate bool) func(network, address string, _ syscall.RawConn) error {
	p := netguard.Policy{AllowInternal: allowPrivate}
	return func(network, address string, c syscall.RawConn) error {
		if err := p.Control(network, address, c); err != nil {
			return fmt.Errorf("%w: %s (name the server in federation.allowed_servers or federation.servers to allow it)", ErrPrivateAddress, address)
		}
		return nil
	}
}
