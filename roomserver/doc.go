// Package roomserver is the only writer of room data. Every event, local or
// (later) from federation, passes Input: one per-room serializer (a keyed
// lock), authorisation against the room's auth rules through
// gomatrixserverlib, state resolution where branches of the DAG meet, and one
// database transaction with all the event's rows. After the commit the event
// is published on the bus ("room_events") in stream order.
//
// Tables owned: rooms, events, room_extremities, room_state,
// state_snapshots, state_snapshot_entries, room_aliases,
// forgotten_rooms, event_search.
//
// Search index (search.go): the transaction that stores an event also adds
// its message body, or the room name or topic it sets, to event_search
// (rowid = the event's position; a PostgreSQL tsvector, an SQLite FTS5
// table — see storage/migrations/0005_search.sql); the transaction that
// redacts an event removes its row. syncapi reads it for /search.
//
// Goroutines: none of its own (bus deliveries run on NATS's goroutines).
//
// Room upgrades (upgrade.go) build the old room's tombstone and the new
// room's events in two drafts and commit the new room (with its moved
// aliases) before the old room's tombstone. The space hierarchy
// (hierarchy.go) reads current state only and takes no lock.
//
// Lock order: the per-room lock (keyed), then Service.mu (room cache), then
// the stream sequencer's locks. Never take a room lock while holding mu. An
// upgrade holds the old room's lock and then takes the new room's, which
// nobody else can know yet.
package roomserver
