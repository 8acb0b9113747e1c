// Package syncapi is the sync engine: /sync long-polling, /messages,
// /context, /event, /state and /members reads, receipts, typing, presence
// and read markers.
//
// It reads the roomserver's events and state tables (it never writes them)
// and owns the tables receipts, presence and peeks.
//
// Structure: one engine, shared by every sync API (/sync, GET /events,
// and sliding sync, MSC4186), with one copy of each datum:
//
//   - synctoken/: the sync token, one position per stream (Pos here is an
//     alias of synctoken.Pos).
//   - notifier/: the in-memory indexes (memberships, latest positions per
//     user, device and room, known unread counts) and the listeners of
//     waiting long-polls; Listen, then sample (HasNews, Current), then
//     wait (Listener.Wake), and the Waiter that runs that loop for any
//     long-poll (Wait holds a goroutine, Park none).
//   - streams/: one file per stream, each answering "what changed between
//     positions A and B for this user (and device)" from a small interface
//     of its own for its data source: account data, receipts, typing,
//     presence, to-device, device lists, E2EE key counts, invites and
//     knocks (stripped state), unread counts. The readers return events
//     (json.RawMessage) and lists, never /sync's response types, so that
//     another sync API renders them its own way.
//   - this package: the Service (it writes the streams it owns: receipts,
//     presence, peeks; it feeds the notifier and the stream state from the
//     bus, in order); the rooms stream (timeline.go: a room's timeline and
//     state block, with roomstate.go and visibility.go), which reads
//     events through the rendered-event caches that /messages, /context,
//     /relations and /search share (events.go, recent.go, format.go), and
//     so stays beside them; and the /sync handler (sync.go: StartSync,
//     syncPoll, build), which composes the streams into the /sync response
//     (format.go, encode.go: the wire format).
//
// Other servers' users (remote.go): the federation API hands over their
// receipts (SetRemoteReceipt: m.read only, the sender's ts and thread_id;
// of the events named, the newest known here, or the last named when none
// has arrived yet) and presence (SetRemotePresence, ignored with presence
// off or for a user in none of our rooms; currently_active stored as their
// server said it — the presence column currently_active, NULL for our
// users, whose currently_active is worked out from last_active). Both take
// the same streams, notices and wake-ups as our users', so they reach
// /sync exactly as local ones do.
//
// /sync's invite and knock sections show the stripped state the user's
// invite or knock event carries (unsigned invite_room_state,
// knock_room_state: the roomserver's at a local event, the room's server's
// for a room elsewhere) closed by that event; a knock let in (invite,
// join) or turned away (leave) moves to that section, as the membership
// does.
//
// Search (search.go, search_sql.go): /search reads the full-text index
// event_search that the roomserver fills as events commit, over the rooms
// the user is or was in, and keeps only what the user may see (history
// visibility and their membership at the time, as /messages does). The
// engines' query texts differ and sit side by side in search_sql.go:
// PostgreSQL to_tsquery('simple', ...) with ts_rank_cd, SQLite FTS5 MATCH
// with bm25; every word of the term must occur, as a word or a prefix.
// order_by rank ranks the newest 500 hits (rankWindow): ranking costs
// time per hit, and a word found in most messages has tens of thousands;
// order_by recent (what Element asks for) pages through all of them. A
// full page always carries next_batch (the page after the last hit is empty
// and has none), as Synapse's does.
// /user_directory/search (userdir.go) is two queries over room_state:
// members with a profile in userapi's profiles table (this server's
// users), and members without one (other servers' users) by the display
// name and avatar of their member events.
//
// Relations (relations.go, threads.go): /relations and /threads read the
// events' relates_to and rel_type columns. Every event served to a client
// (/sync, /messages, /context, /event, /search, /relations, /threads)
// carries unsigned."m.relations" when it has children (m.thread, m.replace,
// m.reference). The aggregate of a parent is shared by all readers and
// cached (relCache, bounded), "no relations" included; the per-reader parts
// (the latest thread event rendered for the device, and
// current_user_participated) are computed when the event is served; a
// reader not joined now gets the m.thread part only if they may see the
// thread's latest reply (history visibility, as /messages). A
// child's notice, or the redaction of a child, drops the parent's entry;
// a loader stores what it read only if no child notice arrived meanwhile.
//
// Membership at each event (readermembership.go): every event served in a
// timeline (the endpoints above) carries unsigned.membership, the reader's
// membership right after it (spec v1.11). The Notifier's current
// membership and its position answer for every event at or after the
// reader's latest membership change (on /sync, a joined room's timeline
// after the join, with no query); events reaching further back read the
// reader's membership history, one query per list of events served.
//
// Timelines and state (timeline.go selectTimeline, roomstate.go): a room's
// timeline is the newest events its filter accepts and history visibility
// shows (events of the room's current state always show), looking past
// the rejected ones up to scanBudget events. The state block is the state
// at the timeline's start, corrected by the window's state events the
// timeline leaves out, less what the client had at its token; with
// lazy-loaded members, only the senders' member events the device was not
// sent yet (lazySent, bounded, per device and room) and the membership
// changes in the gap.
//
// History (messages.go): /sync's timeline is in stream order (what
// arrived), /messages and /context are in topological order: by (topo,
// pos), the event's topological depth (roomserver.Event.Topo), then its
// position, so that events received late from other servers (backfill,
// gaps) show where they belong in the DAG, never as the newest. Their
// tokens are "t<topo>_<pos>" (token.go); a stream token ("t<pos>", /sync's
// prev_batch) or a sync token is read as the greatest key among the room's
// events at or before its position, so that paging from it leaves out
// nothing it covers. Visibility stays by position (the reader's
// membership when the event arrived). Relations, threads and /search
// context page by position; of a history token they take the position.
//
// Legacy endpoints (legacy.go): GET /events is a /sync from its token
// (the same listener, sample and wait) flattened into one list, without
// to-device messages, device lists or key counts; GET /initialSync and
// GET /rooms/{roomId}/initialSync are the /messages and /state builders
// per room; GET /events/{eventId} is /event once the event's room is known.
//
// Peeking (peek.go, MSC2753): a device follows a world-readable room under
// rooms.peek without joining it. Peeks are rows of the table peeks and
// positions of their own stream (the eighth field of a sync token), kept
// in the Notifier, which wakes a room's peekers as it wakes its members.
// A membership change of the user in the room after the peek started
// ends it.
//
// Waking (notifier/): the Notifier keeps, in memory, who is joined to which room, the
// latest position of every stream per user and per room, and the listeners
// of waiting /sync requests. It is fed in order from the bus (room_events,
// receipts, typing, presence, account_data, to_device,
// device_lists). The events stream reaches it through a roomserver.Follower:
// every position once, in order, what the bus lost read back from the
// database. A position whose write failed arrives as a skip (events,
// receipts, account data, presence) and only moves the stream on, so a
// read-your-writes wait (CatchUp) never waits for it. A /sync registers its listener,
// then asks the Notifier whether anything concerns the device after its
// token, and only then waits: a waiting /sync holds no database connection
// and runs no query. A commit in room R wakes only R's members.
//
// Restores (token.go lostTime): a token naming a position inside a restore
// window (storage.RestoreWindow: handed out before a restore, after its
// backup was taken) is answered as an initial sync, and the receipts,
// presence and peeks streams start above the windows (storage.StreamFloor),
// as the other streams' writers do. Any other token from ahead of the
// server is held to its current positions.
//
// Parking: StartSync returns a Waiter (notifier.Waiter driving a syncPoll)
// when there is nothing to answer yet.
// The client API parks it (Waiter.Park): the HTTP connection is taken over
// and the request holds no goroutine and no server buffers while it waits
// (a few KiB each); the wake-up or the deadline answers it on a goroutine of
// its own and hands the connection back to the HTTP server.
//
// Keys (keys.go): with Options.Keys (userapi/keys) every response carries
// the device's to-device messages (at most ToDeviceLimit, the rest in the
// next responses), device_lists changed/left (device list changes of users
// who share a room, and joins and leaves that start or stop sharing one) and
// the one-time key counts and unused fallback key types (cached by the key
// service, so an idle long-poll stays query-free). A sync whose token is
// past queued to-device messages deletes them (the acknowledgement); it is
// a write only when the device has such messages (streams.ToDevice tracks
// them).
//
// Caches: recently committed events per room, already rendered in the
// client format (so the ten members of a room who wake for a message build
// their responses without a query), rendered events by ID, and unread
// counts per member. All are bounded. When Options.Push is set (the
// server), the counts come from the push service instead (push.go): it is
// called with each event and each receipt before the members wake, so the
// counts a woken /sync reads already include them. After an admin purge
// removed events from the database (history before a point, or a whole
// room), ForgetEvents (purge.go) drops the room's recent events, the
// events' rendered copies and the relation aggregates they touched, so
// the next /sync and /messages read the database and no longer show them.
// It reaches this process's caches only (several processes: not yet).
//
// Goroutines: the typing expiry ticker (streams.Typing.ExpireLoop); bus
// deliveries run on NATS's own; the notifier's eight wake workers that answer woken parked /syncs (a short-lived
// goroutine per wake-up when all eight are busy, and per deadline). At most
// a few responses are built at once (buildSlots).
//
// Lock order: Notifier.mu and the stream readers' locks (streams.ToDevice,
// DeviceLists, Typing, Presence) are leaf locks (never held together);
// recentRoom.mu and relCache.mu are never held while taking another lock
// (relCache.mu is taken before the cache's own, internal lock). A parked
// Waiter's mu is taken before Notifier.mu.
//
// Sliding sync (sliding.go, sliding_conn.go; MSC4186, simplified sliding
// sync, the sync of Element X): POST
// /_matrix/client/unstable/org.matrix.simplified_msc3575/sync. Named lists
// of the user's joined and invited rooms, newest first (bump_stamp: the
// position of the room's latest creation, message, encrypted event,
// sticker, call invite, poll start or beacon_info — not a state change
// such as a topic — or of the user's own invite or join if later;
// sliding_bump.go, kept per room by the notifier, NoteBump), filtered (is_invite,
// is_dm from m.direct, is_encrypted, room_types, not_room_types, tags,
// not_tags, spaces: children with a via of spaces the user is in), with
// a count each and windows (ranges) whose rooms are sent;
// room_subscriptions send named rooms (of those the user is not in, only
// the world-readable ones, read as a non-member reads them through history
// visibility; sliding_reader.go; not woken by the room: its news comes
// with the connection's next answer). A room is sent whole the first
// time (initial: its newest timeline_limit events, its required_state,
// name, avatar, heroes without a name, member and unread counts), then
// only with what came after (its new events, num_live, the required state
// that changed), with the state newly covered when the client asks for
// other state (entries it no longer asks for are forgotten: their changes
// are not sent, and they are sent whole if asked again), or with its
// newest events (expanded_timeline) when the client asks a larger
// timeline_limit of it than last time. An invite is sent as its
// invite_state; accepted, the room is sent whole; a room the user leaves
// is sent once more, up to the leave, then dropped. required_state:
// ["*", "*"], [type, "*"], "$ME", and "$LAZY" as the timeline senders'
// (and the user's own) member events, each sent once per connection and
// room, then again when it changes; at most 100 members are remembered
// per room (2,000 per connection), a forgotten one is sent again. Extensions:
// to_device (its own since, which acknowledges as /sync's token does),
// e2ee (device lists since the pos, key counts), account_data (global,
// and the rooms of its scope: what changed since the pos, all of a room's
// entries when the room is sent whole), receipts and typing (the joined
// rooms of their scope; whole for a room sent whole). The scope of these
// three is their lists and rooms (sliding_ext.go, SlidingScope): the
// windows of the lists and the subscriptions named, "*" all, absent all.
// Connections (sliding_conn.go) are kept in memory per (user, device,
// conn_id): a pos names a snapshot of what the client was sent (the
// stream positions, and per room the position its timeline reached, its
// required_state and $LAZY members); the last three snapshots of a
// connection are kept (a request repeated once or twice works),
// at most 20,000 connections, each dropped after 30 idle minutes; any
// other pos (or one from before a restart) is M_UNKNOWN_POS, and the
// client starts over. A request with a pos waits as /sync does
// (slidingPoll through notifier.Waiter, parked by the client API): a
// wake-up of the user builds only when the notifier shows something that
// may concern the connection (sliding_news.go, notifier.Moved, no query:
// an event in a room the client has or subscribes to, an event of a bump
// type, the user's own membership, the extensions asked for), and an
// answer with nothing for the connection after all moves its position on
// and waits again; a request whose
// lists or subscriptions differ from the last one's (a growing window, a
// new subscription) is answered at once when that brings anything.
//
// Purged rooms (purge_room.go): PurgeRoomData, called by adminapi/rooms
// after an admin purged a room, deletes its receipts and peeks and forgets
// who types in it.
package syncapi
