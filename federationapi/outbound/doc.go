// Package outbound sends our room events and EDUs to the other servers of
// a federation: PUT /_matrix/federation/v1/send/{txnId} of the
// Server-Server API, one durable queue per destination.
//
// Feed (feed.go): one goroutine follows the committed events stream with a
// roomserver.Follower — every position once and in order, holes read back
// from the database — from the position stored in
// federation_outbound_positions (a first start begins at the current
// position: history is not sent). An event whose sender is one of our
// users goes to the servers with joined members in the room (its current
// state when the feed reaches the event, which live is the state after it;
// a room's servers are cached and re-read after each member event of the
// room), and, for a leave, kick or ban of a remote user, to that user's
// server, so that it learns of it; never to ourselves. Events of other
// servers' users, outliers and rejected events (not on the stream) are not
// sent. Redactions are events like others. The feed puts each event in the
// destination's queue, waits for JetStream to acknowledge it, and only then
// moves the stored position (at most every second, and at a stop): what
// was acknowledged to a client is sent even if Haven restarts or the
// destination is away for a day. A message is named by destination and
// event ID, so one queued twice (a crash before the position's write) is
// kept once.
//
// Queues (JetStream, work-queue retention, file storage):
//   - <ns>.fed.out.pdu.<dest>.<room>: the events queued for a destination,
//     one subject per room, by reference ({room_id, event_id}); the JSON is
//     read from the database when sent (an event redacted meanwhile goes
//     redacted; one purged meanwhile is left out), without its unsigned
//     data. Stream <NS>_FED_OUT_PDU, duplicate window 2 minutes.
//   - <ns>.fed.out.edu.<dest>: the EDUs given to QueueEDU (typing,
//     receipts, device lists, ...); durable like the events, dropped after
//     Options.EDUMaxAge (24 h). Stream <NS>_FED_OUT_EDU.
//   - <ns>.fed.out.tdv.<dest>: the m.direct_to_device EDUs given to
//     QueueToDevice (todevice.go), by the key service before it answers a
//     client's send. They carry room keys, so they are not dropped after
//     EDUMaxAge: they wait Options.ToDeviceMaxAge, by default until the
//     destination takes them (or the allowlist refuses it, which drops
//     every queue of the destination). Each is named by destination and
//     message_id (Nats-Msg-Id): queued again within two minutes (a
//     retried send) it is stored once; the destination's record of the
//     message IDs it delivered catches later repeats. Stream
//     <NS>_FED_OUT_TDV. A transaction carries at most half of MaxEDUs of
//     them (taken first), in the order they were queued.
//
// <dest> is destKey: the name's letters, digits and dashes and a hash;
// each message carries the name in its Haven-Destination header. Each
// destination has a durable consumer on each stream, named <dest>. At
// start every consumer is deleted, and one is made again, with a sender,
// for each destination the streams hold messages for: what the previous
// run had taken and not acknowledged comes first again, at once.
//
// Senders (worker.go), one goroutine per destination, keep one transaction
// in flight: up to MaxPDUs (50) events and MaxEDUs (100) EDUs taken from
// the queues, sent with a transaction ID unique per destination
// (<start epoch>_<n>) and retried under the same ID until the destination
// takes it — waits of RetryBase (1 s) doubling to RetryMax (1 h), ±20%;
// Queues.Retry ends a wait — and acknowledged (removed from the queues)
// only then. Other destinations are not held up. Errors the destination
// reports for single events are logged, not retried. An error that
// Options.Refused recognises (the allowlist refuses the destination) drops
// the transaction and the destination's whole queue instead of retrying;
// later events are tried again, once each. At a stop the transaction being
// sent is handed back to its queue (Nak) and sent first at the next start.
// A sender takes what its queues hold (no-wait pulls) and, when they are
// empty, waits for a nudge from the feed or QueueEDU; since a consumer
// learns of a stored message a moment after the publish is acknowledged,
// a queue that looks empty while messages were queued beyond the last
// taken is looked at again after a millisecond.
//
// Direct path (direct.go): a sender that found its queue empty (caught
// up, no failure since its last success) is handed the feed's next events
// for it in memory instead of through JetStream: no publish, fetch and
// acknowledgement per event while the destination keeps up. The database
// keeps them safe instead: the stored feed position never passes an event
// handed over and not yet taken by its destination, so after a crash or a
// stop the next start queues it again (the destination may get it twice;
// an event it knows is not stored twice). When a transaction carrying
// such events fails, the sender moves every event it holds into its
// JetStream queue, in order, before the feed queues anything newer there,
// and stays on the queue until it has caught up again; the transaction is
// retried under its ID, and once taken, the queued copies of its events
// are acknowledged unsent.
//
// Catch-up: when a destination comes back from failures (and at every
// start, when nobody knows how long it waited), before taking each next
// transaction and until its queue is empty, a room with more than
// CatchUpPDUs (50) events queued for it keeps only its newest CatchUpPDUs
// (a JetStream purge of the room's subject keeping the last ones): the
// destination gets the room's newest events and fetches the gap itself
// (/get_missing_events from their prev_events, or backfill). A
// 10,000-event outage thus costs a few transactions per room.
//
// Metrics: haven_federation_transactions_total{result}, _pdus_skipped_total
// (catch-up and refused destinations), haven_federation_queue_pdus
// {destination}, haven_federation_queue_to_device{destination}.
//
// Scale-out: one process (the one with the events writer role) runs the
// queues; two processes sending for the same destination would break the
// one-transaction-in-flight rule.
//
// Tables owned: federation_outbound_positions.
//
// Goroutines: the feed's and one sender per destination (started on first
// use), stopped by Close; bus deliveries (NATS's goroutines) hand the feed
// their notices through a channel; each transaction in flight has a
// goroutine that keeps its messages taken (InProgress).
//
// Locks: Queues.mu guards the senders' map only, and is never held while
// waiting on NATS or the network. The feed's state belongs to its
// goroutine, a sender's to its own.
package outbound
