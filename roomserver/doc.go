// Package roomserver is the only writer of room data. Every event, local or
// from another server (InputEvent), takes one write path: a per-room
// serializer (a keyed lock), authorisation against the room's auth rules
// through gomatrixserverlib, state resolution where branches of the DAG
// meet, and one database transaction with all the event's rows (commit: a
// draft of events on top of a state — the room's current one, or the state
// before an input event — with redactions applied, unsigned prev_content
// and replaces_state set, and every state stored as a difference from a
// parent snapshot, at most 32 deep). After the commit the event
// is published on the bus ("room_events") in stream order; a position whose
// write failed is published as a skip, and a send that repeats a
// transaction ID answers with the first event before taking a position.
// Follower (follow.go) is how readers follow the stream: every position once
// and in order, holes in the notices read back from the events table.
//
// Input (input.go) applies the checks on receipt of a PDU: the auth rules
// against the event's own auth events, then against the state before it
// (a failure rejects the event, kept in event_outliers as rejected so it is
// refused again without work), then against the room's current state (a
// failure soft-fails it: kept with the state before it, built on by later
// events, never a forward extremity, never given a position). Outliers
// (StoreOutliers: auth chains, invite stubs) are known by their ID alone
// until they arrive as timeline events (outliers.go).
//
// Gaps (missing.go): InputEventFrom fills unknown prev_events from the
// server the event came from through Options.Fetcher (an interface the
// roomserver owns and the federation client implements): first the events
// in between (/get_missing_events, at most 20, parents first, each through
// the same checks), then, for what is still unknown, the state at it
// (/state_ids, /event for what is unknown here; at most 1,000 events),
// kept as outliers with that state so that the event can be built on it.
//
// Order (tables.go topoDepth): every timeline event gets a topological
// depth (events.topo) when it is stored — one above the highest of its
// prev_events in the timeline; its claimed depth only where a prev_event is
// not in the timeline — and its edges to its prev_events (prev_events, in
// the same transaction). History is read by (topo, pos); the prev_events
// that are not in the timeline are the room's backward extremities
// (BackwardExtremities), where backfill starts.
//
// Tables owned: rooms, events, event_outliers, prev_events, room_extremities, room_state,
// state_snapshots, state_snapshot_entries, room_aliases,
// forgotten_rooms, event_search, search_position, room_blocks (0026).
//
// Admin work (admin.go, for the admin API; adminapi/rooms runs it):
// AdminRooms lists rooms with Synapse's fields (three queries for all
// rooms). A blocked room (room_blocks) refuses every local user's join,
// knock and invite (checked in member, JoinWith, JoinVia, KnockVia, and
// ReceiveInvite for invites from other servers).
// ShutdownRoom makes each local member leave as themselves (which the
// auth rules always allow), optionally creates a notice room and joins
// them to it, moves or deletes the local aliases, unpublishes the room
// and, with Purge, PurgeRoom deletes every row of the room from the
// tables above under the room's lock and drops the room and state caches
// (its stream positions become holes, which readers already skip).
// PurgeHistory deletes, under the room's lock, the non-state events
// below a depth or a time (never state events, never the forward
// extremities; local users' events only when asked), with their search
// rows and DAG edges on both sides, so the oldest event left is no
// backward extremity and the purged history is not backfilled again;
// the caller tells the sync engine's caches (syncapi.ForgetEvents).
// MediaInRoom finds the local mxc:// URIs in a room's events.
//
// Search index (search.go, searchindex.go): an indexer adds the message
// bodies, room names and topics of committed events to event_search (rowid
// = the event's position; a PostgreSQL tsvector, an SQLite FTS5 table — see
// storage/migrations/0005_search.sql) in batches, every 200 ms after a
// commit, moving search_position in the same transaction; the transaction
// that redacts an event removes its row, and the indexer skips events
// redacted before it reaches them. syncapi reads it for /search after
// FlushSearchIndex.
//
// Metrics (stats.go): CountRooms counts the rooms and those with a joined
// local member; the server's housekeeping calls it once a minute.
//
// Goroutines: the search indexer (stopped by Close); bus deliveries run on
// NATS's goroutines.
//
// Aliases (alias.go): with Options.Aliases, an alias in an application
// service's exclusive namespace can be created (PUT /directory/room,
// createRoom's room_alias_name) only by that service's users (M_EXCLUSIVE),
// and an unknown alias in a service's namespace is asked of the service
// before ResolveAlias answers M_NOT_FOUND.
//
// Membership (membership.go): the membership endpoints and an
// m.room.member event sent through the state API take one path (member):
// the event's content keeps what the client gave (reason, is_direct on
// invites, a per-room displayname or avatar_url, keys of its own; the
// body of /join too), joins and invites get the profile where it gives
// none, invites carry the invitee's stripped state, the auth rules decide,
// and an event repeating the current one is not sent again.
//
// Memberships across servers (remote.go, knock.go, fedmember.go,
// restricted.go): an invite of another server's user is signed by that
// server before it is stored (createRoom's invites of other servers' users
// go out once the room exists); a join of a room this server is not in goes
// through Options.Federation, and ImportJoin stores the room's state from
// the answer with positions, in depth order (the readers and the sync
// engine see its members as for any room), the rest of the auth chain as
// outliers, then the join; an invite received for a room this server is
// not in is stored alone (ReceiveInvite, storeOutOfRoom). MakeMembership
// answers other servers' make_join/make_leave/make_knock. A restricted
// room (join_rule restricted or knock_restricted) lets in a member of a
// room it allows, authorised by a local user with invite power
// (join_authorised_via_users_server), here and for other servers' users.
// m.room.server_acl is read by ServerAllowed (acl.go).
//
// Backfill (backfill.go): history from before a gap (an event whose
// prev_events this server lacks) is fetched from the servers in the room
// when a reader pages back to it, checked as on receipt and stored at
// negative positions: it is in the topological order of /messages and on
// no stream, so /sync never shows old history as new.
//
// Joins, knocks and leaves of rooms this server is not in go through
// Options.Federation;
// a knock (KnockVia) is kept as an invite received is, with the room's
// stripped state in unsigned.knock_room_state (a local knock carries it
// too). A leave or ban that ends a local user's invite or knock, sent by
// the room's server and built on that invite or knock, is taken into the
// user's membership alone.
//
// Topics (topic.go): createRoom's topic is written as topic and as m.topic
// with one text/plain representation (spec v1.15); the directory, room
// summaries and the search index read a topic's plain text with
// PlainTopic (m.topic's first text/plain representation, else topic).
//
// Room upgrades (upgrade.go) build the old room's tombstone and the new
// room's events in two drafts and commit the new room (with its moved
// aliases, bans and pending invites) before the old room's tombstone;
// then Options.Direct adds the new room beside the old one in the local
// members' m.direct. The space hierarchy
// (hierarchy.go) reads current state only and takes no lock.
//
// Directories across servers: PublicRoomsPage (directory.go) is the one
// page of the public room directory both the client and the federation
// /publicRooms answer. hierarchy_remote.go: HierarchyForServer tells
// another server about a space and its direct children (only the rooms it
// may see: world-readable, public or knock join rules, a user of it in the
// room, or in an allowed room of a restricted one; the server ACL
// applied). With Options.Spaces (federation on), the client /hierarchy
// asks a child's via servers (the room ID's server for the root) about
// rooms no local user is joined to: at most 10 servers per page, 15 s
// each; the answers (and failures) are kept a minute (20 s) in
// remoteSpaces (an LRU of 1,024), checked first (saneRemoteRoom).
//
// Lock order: the per-room lock (keyed), then Service.mu (room cache), then
// the stream sequencer's locks. Never take a room lock while holding mu. An
// upgrade holds the old room's lock and then takes the new room's, which
// nobody else can know yet.
package roomserver
