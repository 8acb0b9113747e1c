// Package appservice serves application services (bridges and bots that
// act for many users), as the Matrix Application Service API defines them.
//
// Registration (registration.go): the files named by app_services are read
// and checked, alone and against each other, into config.Problems that
// `haven check-config` prints and that stop a start. Registry (registry.go)
// answers the namespace questions: which service a token is, which holds a
// user ID or alias exclusively, who may act as whom. Namespace expressions
// match from the start of an ID, as in Synapse.
//
// Queries (queries.go) asks the services, at once, what only they know:
// whether an unknown user (GET /_matrix/app/v1/users/{userId}, on profile
// lookups and invites) or alias (GET /_matrix/app/v1/rooms/{alias}, on
// alias resolution) of their namespaces exists — a 200 means the service
// made it, and the caller looks again —, the third-party lookups (merged
// over the services that declare the protocol) and the ping. It needs only
// the registrations, so the user API and the roomserver get it first (as
// userapi.AppServices and roomserver.AliasNamespaces).
//
// Service (service.go) authenticates the services' requests: an as_token
// is the service's sender, or with user_id a registered user of its
// namespaces (403 M_FORBIDDEN otherwise), with device_id one of that
// user's devices (400 M_UNKNOWN_DEVICE); the request's userapi.Device then
// carries the service's ID. At start it registers each service's sender.
//
// Transactions: the feed (feed.go, ephemeral.go) follows the committed
// events stream with a roomserver.Follower — every position once and in
// order, holes read back from the database —, after catching up from the
// lowest stored position. An event concerns a service when its sender or
// (membership events: invites) its target is the service's, or when the
// room is in a room namespace, has a joined user of the service (an
// in-memory index loaded at start and kept from the member events) or an
// alias of an alias namespace (room aliases cached ten seconds). For
// services that ask (receive_ephemeral, de.sorunome.msc2409.push_ephemeral)
// it also takes typing, receipts (not private ones) and presence from the
// bus; for those and org.matrix.msc3202 ones, their users' to-device
// messages, which are deleted from the devices' queues once queued; for
// org.matrix.msc3202 ones, device_lists.changed of the users who share a
// room with theirs (device_lists.left is not sent). What
// arrives together becomes one transaction per service (at most 100 events
// and 768 KiB), put in the service's JetStream work queue (a stream per
// service; an events transaction has a message ID from its positions, so
// that one queued twice is kept once); after that the services' positions
// are stored (appservice_positions). A restart therefore loses nothing, and
// repeats at most the transactions queued before a crash hid their
// position, under the same transaction ID.
//
// The senders (deliver.go), one per service with a URL, pull one message
// at a time from a consumer that lets one out at a time (MaxAckPending 1),
// PUT it to /_matrix/app/v1/transactions/{txnId} with the hs_token, and
// retry it in place (RetryBase doubling to RetryMax; a successful ping
// retries at once) until the service answers 2xx: transactions arrive in
// order. A 4xx other than 404 and 429 five times drops the transaction.
// Meanwhile the message is kept (InProgress); at a stop it is handed back.
//
// Tables owned: appservice_positions.
//
// Goroutines: the feed's and one sender per service with a URL, started by
// New and stopped by Close; the bus deliveries (NATS's goroutines) hand
// the feed their notices through a channel.
//
// Locks: none. The Registry never changes; the feed's state belongs to its
// goroutine.
package appservice
