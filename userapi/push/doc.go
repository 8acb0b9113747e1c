// Package push evaluates push rules, keeps notification counts, stores
// notifications and pushers, and delivers pushes to HTTP push gateways
// (the Push Gateway API that Sygnal implements).
//
// It lives under userapi because push rules and pushers are per-user
// settings (userapi stores the rules and gives them compiled, once per
// version, through CompiledPushRules); it is a package of its own because
// it also reads the room side (events, current state) and runs a delivery
// queue, which the account code does not need.
//
// Evaluation: the sync engine calls OnRoomEvent for every committed event,
// in position order, before it wakes the room's members, so a /sync woken
// by an event already sees the counts that include it. The event is parsed
// once (its dotted fields, its lowered body) and each local joined member
// but the sender (and the target of an invite) is evaluated against their
// compiled rules: override, content, room, sender, underride, first match
// wins; the legacy mention rules are skipped for events with m.mentions.
// A pattern longer than 512 bytes or with more than 16 wildcards matches
// nothing (glob.go): it would cost seconds per event, for every event.
// The sync engine hands it every position of the events stream in order (a
// failed write's as a skip; what the bus lost it reads back from the
// database first, roomserver.Follower). At start, the events after the
// stored push_position are read from the database and evaluated, and so is
// any hole the notices still show (when that read fails, the notice is left
// too, and the next one tries again: nothing is skipped).
// Members, display names, the room name and power levels come from a
// per-room cache loaded once from the current state and kept up to date from
// the state events evaluated.
//
// Counts: every user's unread notifications are in memory, per room, each
// with its position, thread and highlight, so receipts clear exactly what
// they cover (unthreaded: every thread; "main": the main timeline; a thread
// root: that thread) and /sync counts without a query. A user's own message
// reads the notifications before it in its thread. Past 128 unread
// notifications in one room the oldest are folded into per-thread counters
// (a receipt reads a thread's folded ones when it covers the newest of them).
// An entry also tells whether it is a call invite (m.call.invite): the
// unread ones are the missed calls of the badge sent to push gateways.
//
// Storage: a writer goroutine stores one push_notified row per notifying
// event (the notified users and their actions), in batches of one
// transaction (a batch gathers for up to 100 ms, so that under load many
// events share one commit); evaluation never waits for it. /notifications
// flushes it first, then reads the rows newest first and keeps the user's.
// Every CheckpointEvery (2 s) the counts of the (user, room) pairs that
// changed are written to push_unread, with the events position and the
// receipts position they reflect (push_position ids 0 and 1); a checkpoint
// is written after the pushes of the events before it are queued. At start
// the counts are loaded from push_unread, the events after the checkpoint
// are evaluated again and the stored receipts after it applied again: after
// a crash nothing is lost, and pushes of the last seconds may be sent twice.
// Close writes a last checkpoint. (Migration 0004 stored one row per
// notified member; its rows are moved at the first start after 0008.)
//
// Delivery: after a batch is stored, its pushes go to a JetStream work-queue
// stream (DeliverTopic); a durable consumer sends them, at most eight at a
// time, to each http pusher's gateway, with the Push Gateway API's fields
// (the room's name and canonical alias come from the per-room cache; the
// counts are the rooms with unread notifications and the missed calls), or
// only the IDs, counts and priority for event_id_only pushers. Network
// errors, 5xx and 429 are retried with exponential backoff (RetryBase
// doubling to RetryMax, at most MaxAttempts), other 4xx drop the push, and
// pushkeys the gateway lists as rejected delete their pusher. Sending a message never waits for a gateway.
// Gateways are connected to through internal/netguard: never at loopback,
// private, link-local or other internal addresses unless
// Options.GatewayAllowed (push.gateway_allowed_ranges) lists the range;
// such a push is dropped, not retried. No redirects are followed.
//
// Email pushers (email.go): with Options.Mail set, a ticker (EmailEvery)
// looks for each email pusher's notifications that stayed unread for
// EmailDelay and sends one email about them, only to an address bound to
// the user (userapi's user_threepids), at most one per delay;
// email_pusher_progress keeps how far each pusher was told.
// A pusher belongs to the device that set it: DevicesDeleted (told by the
// user API on logout and device deletion) deletes it with the device.
//
// Tables owned: push_notified, push_unread, push_position, pushers,
// email_pusher_progress (and the emptied notifications of 0004). Email
// notifications read events, room_state (roomserver) and profiles,
// user_threepids (userapi).
//
// Notifications older than 30 days are deleted every 6 hours (by the
// writer); the unread counts stay.
//
// Goroutines: the writer; the checkpoint ticker; the email notifier's ticker (with Mail); the JetStream consumer's and one per push being
// sent (at most maxInFlight). Close stops them.
//
// Lock order: evalMu, then counts.mu or the writer's mu (leaves);
// pusherLocks (per user), then pusherIndex.mu (a leaf); the email
// notifier's mu is a leaf. The lru caches'
// locks are leaves.
//
// Purged rooms (purge_room.go): PurgeRoomData, called by adminapi/rooms
// after an admin purged a room, stops evaluating the room's events (under
// evalMu), waits for the queued notifications, drops the room's unread
// counts in memory and deletes its push_unread, push_notified and
// notifications rows.
package push
