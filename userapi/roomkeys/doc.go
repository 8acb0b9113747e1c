// Package roomkeys is server-side key backup (/room_keys): a user's backup
// versions, each with its algorithm and auth_data, and the encrypted Megolm
// sessions backed up into them. The server never sees the keys in clear; it
// keeps, per session, the better of the uploads by the spec's rule (verified
// first, then the lower first_message_index, then the lower forwarded_count;
// see Better).
//
// Versions are decimal numbers counting up per user and never reused; the
// current version is the newest one not deleted. Writes of keys go to the
// current version only (else M_WRONG_ROOM_KEYS_VERSION with current_version);
// reads and deletes of keys may name any version that is not deleted. Every
// answer about keys carries count (the keys in the version) and etag (a
// counter that changes whenever the version's keys change).
//
// Tables owned: room_key_backups, room_keys (migration 0006_roomkeys.sql).
//
// Goroutines: none.
//
// Lock order: the per-user keyed lock (Service.users), then the database
// write transaction. Nothing else is held, and nothing is waited for but the
// database while the lock is held.
//
// Purged rooms (purge_room.go): PurgeRoomData, called by adminapi/rooms
// after an admin purged a room, deletes the room's keys from every backup
// and moves the etag of each backup that changed.
package roomkeys
