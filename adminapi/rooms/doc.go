// Package rooms runs the admin API's room shutdowns and history purges:
// the roomserver does the work (only it writes room data), this package
// runs it now (DELETE /_synapse/admin/v1/rooms/{roomId}) or in the
// background (DELETE /v2/rooms/{roomId}, POST /v1/purge_history/...),
// keeps each background job's status for a day so admin tools can poll
// it, and tells the sync engine's caches which events went (ForgetEvents),
// so purged history disappears from /messages and /sync at once.
//
// The statuses are kept in memory for this process's jobs and in the
// admin_room_jobs table (migration 0037) for everyone's, so delete_id and
// purge_id values still answer after a restart and from any process of a
// scale-out, for a day. A running job touches its row every 30 s; a job
// stopped by Close is stored as failed ("Interrupted: …"), and one whose
// process vanished (a crash) is reported failed once its row is 2 minutes
// old. Interrupted jobs are not resumed: the admin starts them again (a
// shutdown and a purge can be repeated; what was done stays done).
//
// After a room is purged, every other package that keeps rows of rooms is
// told (RoomDataPurger, implemented by the owner: the sync engine, userapi,
// push, room key backups, reports), so this package touches no other
// package's tables.
//
// Tables owned: admin_room_jobs (the roomserver owns room_blocks and the
// room tables).
//
// Goroutines: one per running job and its heartbeat, ended by Close (which
// cancels them and waits). Locks: Service.mu guards the job maps (a leaf;
// the roomserver's room locks are taken by the job's goroutine, never
// under mu; no database call is made under mu).
package rooms
