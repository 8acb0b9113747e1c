// Package federationapi serves the Server-Server API for federation between
// a company's sites (and other Matrix servers the admin allows). It is off
// by default (federation.enabled).
//
// Layout (arrows point federationapi → roomserver, never back):
//   - keys/: our key server (/_matrix/key/v2/server, the notary
//     /_matrix/key/v2/query), the store of other servers' keys, the
//     verification of X-Matrix signed requests.
//   - client/: the outbound side of the network: discovery (static map,
//     .well-known, SRV, 8448) with the spec's cache lifetimes, TLS (company
//     CA, mutual TLS), the allowlist and the private-address guard, and the
//     listener's certificate reloaded on SIGHUP.
//   - outbound/: one durable JetStream queue per destination, fed by the
//     committed events stream.
//   - this package: the route table, inbound transactions, joins, invites,
//     leaves and the read endpoints (event, state, backfill).
package federationapi
