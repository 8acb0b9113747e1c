// Package keys is end-to-end encryption's server side: device keys,
// one-time and fallback keys, cross-signing keys and signatures, the device
// list stream, and the to-device message queue.
//
// Tables owned: device_keys, one_time_keys, fallback_keys,
// cross_signing_keys, key_signatures, device_list_changes, to_device,
// to_device_txns (storage/migrations/0002_keys.sql; to_device is in 0001),
// key_stream_positions (0007); one_time_keys.upload_seq (0013);
// remote_device_lists, remote_device_keys, remote_cross_signing_keys (0021,
// Remote); to_device_inbound (0022).
// It reads devices (owned by userapi) to know which devices exist: keys of a
// device that no longer exists are never handed out. userapi deletes a
// removed device's to_device rows in its own transaction and then calls
// DevicesChanged, which deletes the device's keys and signatures; Start
// removes whatever a crash between the two left behind.
//
// Device keys: re-uploading the stored ones changes nothing; other ones for
// the same device (new identity keys) replace them, are logged and are a
// device list change, as on Synapse.
//
// One-time keys are handed out oldest upload first (one_time_keys.upload_seq,
// migration 0013: each upload's keys get one more than the device's
// highest stored; within an upload, by key ID). They are claimed by
// DELETE ... RETURNING in write transactions
// of up to 100 devices each, so a key is handed out at most once even when
// claims race
// (on PostgreSQL, a statement that loses the race for a row tries the next
// key). When a device has none left its fallback key is handed out and
// marked used; it stays claimable until the device uploads another.
//
// Streams: to-device and device lists each take their positions from a
// stream.Sequencer. A to-device send allocates one position per target
// device, writes the rows and its transaction ID (to_device_txns, so a
// retried send, even after a restart, is not queued twice) in one
// transaction, and after the commit publishes one ToDeviceNotice on
// TopicToDevice. A device list change (device added or deleted, device
// keys uploaded or changed, cross-signing keys, signatures) upserts
// device_list_changes.pos in the transaction of the change and publishes a
// DeviceListNotice on TopicDeviceLists. Both transactions also record the
// highest position handed out in key_stream_positions, and New starts each
// stream above it: delivered to-device rows are deleted, yet clients' sync
// tokens still name their positions, so a restarted stream must never hand
// them out again. syncapi turns both into wake-ups and
// response sections; it acknowledges delivered to-device rows (AckToDevice)
// when the device syncs with a token past them, and the acknowledgements
// of 50 ms are deleted together in one transaction.
//
// Key counts (one-time keys per algorithm, unused fallback key algorithms)
// go into every /sync response, so they are cached per device in memory
// (bounded LRU); every change drops the entry here and, through
// TopicKeyCounts, in other processes.
//
// Cross-signing uploads need user-interactive auth except when the user has
// no master key yet or re-uploads exactly the stored keys (spec v1.11,
// MSC3967): UploadSigningKeys decides under the user's lock and returns
// ErrAuthNeeded, and the client API then runs the password stage.
//
// Other servers (remote.go, federation.go; with federation on). A device
// list change takes one position per device it names (DeviceListNotice:
// Devices, Prev, CrossSigning), so the m.device_list_update EDUs sent for
// it (OutboundUpdates; federationapi's DeviceListForwarder queues them to
// the servers sharing a room with the user) carry stream IDs that chain
// from the user's previous position, and the stream_id that
// LocalUserDevices (GET /user/devices) answers is the user's position on
// the device list stream. Remote keeps the lists of other servers' users
// who share a room with ours ("tracked"): filled by a /keys/query that
// asked their server (stream_id 0) or by a refetch (Resync, GET
// /user/devices), kept current by their m.device_list_update (applied
// when every prev_id is at or below the stored stream_id; otherwise the
// list is marked stale and refetched in the background, at most 4 at a
// time) and m.signing_key_update EDUs. An update of a user sharing a room
// but not tracked starts tracking them. Each applied update or refetch is
// a change on the device list stream, so /sync and /keys/changes report
// it like a local one. A leave or ban (the roomserver's room_events)
// ends tracking of whoever shares no room with ours any more, and Start
// checks every tracked user once. Remote.Query answers /keys/query: our
// users here, tracked users from the cache, the others from their servers
// in parallel (at most timeout, 10 s by default; a server that fails is
// in "failures"). Without federation, other servers are reported in
// "failures".
//
// To-device messages and one-time key claims across servers
// (todevice_remote.go; only with federation, Options.ToDeviceOut and
// Claimer, else other servers' users are skipped as before):
//   - A send's messages for other servers' users become one
//     m.direct_to_device EDU per server (split into EDUs of about
//     ToDeviceEDUBytes when larger), handed to the federation's durable
//     queue before the send returns and before the local rows are written:
//     a failure answers an error and records nothing, and the client's
//     retry queues again. Their message_id is derived from the sending
//     device (its ID and creation time) and the transaction ID, so a
//     retried send carries the same IDs; a send whose transaction ID is
//     recorded queues nothing. Users of a server outside the federation
//     allowlist (the queue answers ErrServerNotAllowed) are skipped.
//   - An inbound EDU (ReceiveToDevice) is delivered to our users' devices
//     ("*": all of them) exactly once: its origin and message_id go into
//     to_device_inbound in the transaction that queues the messages, and
//     an ID seen before is dropped. IDs are kept
//     InboundToDeviceRetention (7 days), far beyond an origin's retries;
//     deliveries delete older ones at most once an hour.
//   - ClaimKeys (client /keys/claim) asks each other server named, at the
//     same time (16 at most at once), within the request's timeout (10 s by
//     default); a server that fails or is late is named in "failures"
//     with a status and a message, and only the users and devices asked of
//     a server are kept from its answer. ClaimForServer serves other
//     servers' claims of our users' keys, as Claim.
//
// Goroutines: the acknowledgement deleter (stopped by Close, which deletes
// what is queued); the bus delivers TopicKeyCounts on NATS's. Remote: the
// refetches (stopped and waited for by Remote.Close), the start-up check,
// and one goroutine per server asked during a /keys/query. A /keys/claim
// asks other servers from at most 16 goroutines, ended by its timeout.
//
// Lock order: the per-user keyed lock (userLocks; also taken for other
// servers' users while their cached list changes), then the sequencers'
// locks; Remote.mu is a leaf; the cache's mutex is a leaf. Nothing waits for anything but the
// database while holding a lock.
package keys
