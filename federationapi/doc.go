// Package federationapi serves the Server-Server API for federation between
// a company's sites (and other Matrix servers the admin allows). It is off
// by default (federation.enabled).
//
// Layout (arrows point federationapi → roomserver, never back):
//   - keys/: our key server (/_matrix/key/v2/server, the notary
//     /_matrix/key/v2/query), the store of other servers' keys (a
//     gomatrixserverlib.JSONVerifier), the X-Matrix request authentication
//     with the allowlist checked before any work.
//   - client/: the outbound side of the network: discovery (static map,
//     .well-known, SRV, 8448) with the spec's cache lifetimes, TLS (company
//     CA, mutual TLS), the allowlist and the private-address guard, and the
//     listener's certificate reloaded on SIGHUP.
//   - outbound/: one durable JetStream queue per destination, fed by the
//     committed events stream; EDUs (typing, receipts) beside them.
//   - history/: the read endpoints (event, state, state_ids, event_auth,
//     backfill, get_missing_events) with history visibility applied to the
//     asking server.
//   - this package: the inbound endpoints (api.go: /send with per-PDU
//     results and typing and receipt EDUs; members.go: make/send join,
//     leave and knock, invite v2; queries.go: profile, directory, OpenID),
//     Peers (peers.go: what the roomserver asks of other servers — invites,
//     joins with the room's state checked, knocks with the stripped state
//     answered kept where sane, leaves, remote aliases, missing events —
//     through the signed client) and the EDU forwarder (edus.go);
//     devicelists.go: /user/devices and /user/keys/query about our users,
//     the m.device_list_update and m.signing_key_update EDUs of /send
//     handed to the key service's remote device lists, Peers' UserDevices
//     and QueryKeys (keys.Fetcher: signed requests whose answers are kept
//     as the other server wrote them), and the DeviceListForwarder, which
//     queues our users' device list updates to every server sharing a room
//     with them.
//     send_knock answers the room's stripped state, as an invite carries.
//   - directory.go: /publicRooms (GET and POST) and /hierarchy/{roomId}
//     for other servers, and the Peers side of both (RemotePublicRooms
//     for the client's /publicRooms?server=, RemoteHierarchy for the
//     roomserver's space walk), signed requests decoded into Haven's
//     types and checked.
//
// Inbound events go through the roomserver's one input path
// (InputEventFrom): signatures and content hash here, then the auth rules
// against the event's own auth events, the state before it and the current
// state there. m.room.server_acl is enforced on PDUs, EDUs and the
// membership handshakes. A transaction ID seen from an origin before is
// answered as it was (kept in memory, 4,096 transactions).
package federationapi
