// Package reports stores what users report to the server's admins: single
// events (POST /rooms/{roomId}/report/{eventId}) and whole rooms
// (POST /rooms/{roomId}/report), with the reporter, the reason and, for
// events, the optional score. The client API checks that the reporter may
// see what they report before calling Add; the admin API lists the reports.
//
// Tables owned: content_reports (migration 0006_roomkeys.sql).
//
// Goroutines: none. Locks: none.
//
// Purged rooms (purge_room.go): PurgeRoomData, called by adminapi/rooms
// after an admin purged a room, deletes the reports of its events.
package reports
