// Package syncapi is the sync engine: /sync long-polling, /messages,
// /context, /event, /state and /members reads, receipts, typing, presence
// and read markers.
//
// It reads the roomserver's events and state tables (it never writes them)
// and owns the tables receipts and presence.
//
// Waking: the Notifier keeps, in memory, who is joined to which room, the
// latest position of every stream per user and per room, and the listeners
// of waiting /sync requests. It is fed in order from the bus (room_events,
// receipts, typing, presence, account_data). A /sync registers its listener,
// then asks the Notifier whether anything concerns the device after its
// token, and only then waits: a waiting /sync holds no database connection
// and runs no query. A commit in room R wakes only R's members.
//
// Parking: StartSync returns a Waiter when there is nothing to answer yet.
// The client API parks it (Waiter.Park): the HTTP connection is taken over
// and the request holds no goroutine and no server buffers while it waits
// (a few KiB each); the wake-up or the deadline answers it on a goroutine of
// its own and hands the connection back to the HTTP server.
//
// Caches: recently committed events per room, already rendered in the
// client format (so the ten members of a room who wake for a message build
// their responses without a query), rendered events by ID, and unread
// counts per member. All are bounded.
//
// Goroutines: the typing expiry ticker; bus deliveries run on NATS's own; a
// short-lived one per parked /sync when it is answered. At most a few
// responses are built at once (buildSlots).
//
// Lock order: Notifier.mu is a leaf lock; recentRoom.mu, typingState.mu
// and presenceState.mu are never held while taking another lock.
package syncapi
