// Package streams holds the sync engine's stream readers, one file per
// stream: each answers "what changed between positions A and B for this
// user (and device)" from a small interface of its own for its data
// source, and returns events (json.RawMessage) and lists, never a sync
// API's response types. /sync (syncapi) composes them into its response;
// sliding sync (MSC4186) composes the same readers into its lists, rooms
// and extensions, so that both share one copy of each datum.
//
//   - accountdata.go: global and per-room account data (the user API's).
//   - receipts.go: m.receipt per room (the table receipts).
//   - invites.go: the stripped state of invites and knocks.
//   - typing.go: who is typing where (memory only; positions from the
//     clock), its expiry, and the m.typing event.
//   - presence.go: every user's presence in memory, the window's changes
//     for a user's co-members, and the m.presence event.
//   - todevice.go: a device's queued to-device messages (at most
//     ToDeviceLimit a response) and their acknowledgement.
//   - devicelists.go: device_lists changed and left (device changes of
//     co-members, and joins and leaves that start or stop sharing a room).
//   - e2ee.go: a device's one-time key counts and unused fallback key types.
//   - counts.go: unread counts, the push service's (notifications,
//     highlights, per thread) or, without it, messages after the receipt.
//   - json.go: AppendString, the JSON string writer the renderers share.
//
// Tables: none of their own; they read those of syncapi (receipts), the
// roomserver (events, room_state) and the user API through their sources.
// Goroutines: none. Locks: each stream's own state lock is a leaf lock.
package streams
