// Package rooms runs the admin API's room shutdowns and history purges:
// the roomserver does the work (only it writes room data), this package
// runs it now (DELETE /_synapse/admin/v1/rooms/{roomId}) or in the
// background (DELETE /v2/rooms/{roomId}, POST /v1/purge_history/...),
// keeps each background job's status for a day so admin tools can poll
// it, and tells the sync engine's caches which events went (ForgetEvents),
// so purged history disappears from /messages and /sync at once.
//
// The statuses live in memory, as in Synapse: after a restart, earlier
// delete_id and purge_id values are unknown (404). At most 1,000 finished
// jobs are kept; the oldest go first.
//
// Tables owned: none (the roomserver owns room_blocks and the room tables).
//
// Goroutines: one per running job, ended by Close (which cancels them and
// waits). Locks: Service.mu guards the job map (a leaf; the roomserver's
// room locks are taken by the job's goroutine, never under mu).
package rooms
