// Package stats answers the admin API's statistics: media use per user
// (GET /_synapse/admin/v1/statistics/users/media), the rooms that take the
// most room in the database (GET /_synapse/admin/v1/statistics/database/rooms)
// and Haven's own server overview (GET /_synapse/admin/v1/statistics/server:
// users, rooms, messages per day, daily and monthly active users, media and
// the database's size).
//
// It only reads, with one SQL text for both databases, the tables of other
// packages: accounts, devices and profiles (userapi), rooms, room_state and
// events (roomserver), media (mediaapi). These are reports for an admin:
// nothing here is on a hot path, and every query is a count or a sum over
// indexed columns or one pass over a table.
//
// Tables owned: none. Goroutines: none. Locks: none.
package stats
