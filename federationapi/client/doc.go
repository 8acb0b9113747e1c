// Package client is the network side of outbound federation: it turns the
// matrix:// URLs of gomatrixserverlib's fclient into HTTPS connections, and
// builds the TLS configuration of the federation listener.
//
// A request for a server passes, in order:
//  1. the allowlist (federation.allowed_servers): a server not on a
//     non-empty list is refused with ErrNotAllowed before any lookup or
//     connection;
//  2. the static map (federation.servers), which gives the address
//     directly;
//  3. otherwise the spec's server discovery: IP literal, explicit port,
//     /.well-known/matrix/server (cached per its Cache-Control or Expires,
//     24 hours without them, at least 5 minutes and at most 48 hours; a
//     failure for an hour), SRV _matrix-fed._tcp then _matrix._tcp, then
//     port 8448;
//  4. the private-address guard (internal/netguard, shared with push
//     gateways and URL previews): the address actually dialled (after DNS)
//     may not be loopback, private, link-local, unspecified, multicast or
//     another special range
//     unless the server is named in allowed_servers or servers, or
//     allow_private_addresses is set (ErrPrivateAddress);
//  5. TLS against the system roots or federation.ca_file, presenting our
//     certificate when mutual_tls is on.
//
// Tables: none. Goroutines: none, except the one OnSIGHUP starts (until its
// context ends). Locks: resolver.mu (the discovery caches) and
// transport.mu (the pool of HTTP transports) are never held together nor
// across network I/O.
package client
