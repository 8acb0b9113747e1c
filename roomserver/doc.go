// Package roomserver is the only writer of room data. Every event, local or
// (later) from federation, passes Input: one per-room serializer (a keyed
// lock), authorisation against the room's auth rules through
// gomatrixserverlib, state resolution where branches of the DAG meet, and one
// database transaction with all the event's rows. After the commit the event
// is published on the bus ("room_events") in stream order.
//
// Tables owned: rooms, events, room_extremities, room_state,
// state_snapshots, state_snapshot_entries, room_aliases,
// forgotten_rooms.
//
// Goroutines: none of its own (bus deliveries run on NATS's goroutines).
//
// Lock order: the per-room lock (keyed), then Service.mu (room cache), then
// the stream sequencer's locks. Never take a room lock while holding mu.
package roomserver
