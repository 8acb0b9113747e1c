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
//     results, and the typing, receipt and presence EDUs in ephemeral.go;
//     members.go: make/send join,
//     leave and knock, invite v2; queries.go: profile, directory, OpenID),
//     Peers (peers.go: what the roomserver asks of other servers — invites,
//     joins with the room's state checked, knocks with the stripped state
//     answered kept where sane, leaves, remote aliases, missing events —
//     through the signed client) and the EDU forwarder (edus.go: typing
//     and receipts; presence.go: presence, with presence enabled);
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
//   - media.go and mediafetch.go: our media for other servers
//     (/v1/media/download and /v1/media/thumbnail, multipart/mixed: a JSON
//     metadata part, then the bytes; only our own media, never fetched from
//     a third server), and the MediaFetcher the media repository uses for
//     other servers' media: the signed federation endpoint, its multipart
//     answer taken apart with mime/multipart (a Location part handed back
//     to be followed), and for servers without it the legacy
//     /_matrix/media/v3/download?allow_remote=false; their errors mapped
//     to Matrix ones (404 passed on, 502 unreachable or nonsense, 504 no
//     answer in time, 403 outside the allowlist).
//
// Inbound events go through the roomserver's one input path
// (InputEventFrom): signatures and content hash here, then the auth rules
// against the event's own auth events, the state before it and the current
// state there. m.room.server_acl is enforced on PDUs, EDUs and the
// membership handshakes. A transaction ID seen from an origin before is
// answered as it was (kept in memory, 4,096 transactions); one sent again
// while the first request still processes it waits for that request's
// answer (txnonce.go), so that it is processed once.
//
// Ephemeral EDUs (ephemeral.go, edus.go, presence.go). Inbound, a server
// speaks only for its own users; each malformed or foreign entry is dropped
// on its own. m.typing goes to the sync engine with a 60-second timeout
// (remoteTypingTimeout: the EDU has none; the origin sends the stop).
// m.receipt: several rooms, users and events, m.read only, with the
// origin's ts and thread_id. m.presence: the push list, stored by the sync
// engine for users in one of our rooms (ignored with presence disabled).
// Outbound, the EDUForwarder follows the sync engine's notices: typing
// (repeated every typingRefresh, 20 s, while a user types; the stop sent
// when they stop or their timeout passes), public receipts, and with
// presence enabled the presence changes of our users, to the servers
// sharing a room with them, and the current presence of the users
// concerned when a server starts sharing a room (a join of ours, or the
// first of a server's users).
//
// End-to-end encryption's messages (todevice.go, keyclaim.go):
// m.direct_to_device EDUs whose sender is a user of the origin go to the
// key service (ToDeviceInbox), which delivers each origin's message ID
// once. One that could not be stored (a database error, not a malformed
// EDU) fails the whole transaction with 503 and is not remembered as
// answered: the origin sends it again. POST /v1/user/keys/claim hands out
// our users' one-time keys (then fallback keys); Peers.ClaimKeys asks
// another server for its users' (the key service's KeyClaimer).
//
// Goroutines: the forwarder's typing ticker (one, every second); bus
// deliveries on NATS's own. Locks: EDUForwarder.mu and txnFlights.mu are
// leaf locks.
package federationapi
