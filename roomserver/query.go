package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// GetEvent returns one event by ID.
func (s *Service) GetEvent(ctx context.Context, eventID string) (Event, error) {
	evs, err := EventsByID(ctx, s.db, []string{eventID})
	if err != nil {
		return Event{}, err
	}
	if len(evs) == 0 {
		return Event{}, merr.NotFound("Event not found")
	}
	return evs[0], nil
}

// RoomVersion returns the version of a room.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (string, error) {
	if !storage.StorableText(roomID) {
		return "", merr.NotFound("Unknown room %s", roomID)
	}
	// A room's version never changes: a room in memory (stored, and
	// dropped from memory when purged) needs no query.
	if r, ok := s.rooms.Get(roomID); ok {
		return string(r.version.Version()), nil
	}
	row, err := selectRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", merr.NotFound("Unknown room %s", roomID)
	}
	return row.version, err
}

// CurrentState returns the current state events of a room.
func (s *Service) CurrentState(ctx context.Context, roomID string) ([]Event, error) {
	rows, err := s.db.Query(ctx, `SELECT `+prefixed("e.")+` FROM room_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = $1 ORDER BY e.pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("current state of %s: %w", roomID, err)
	}
	return collectEvents(rows)
}

// CurrentStateEvent returns one current state event.
func (s *Service) CurrentStateEvent(ctx context.Context, roomID, typ, key string) (Event, error) {
	rows, err := s.db.Query(ctx, `SELECT `+prefixed("e.")+` FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.room_id = $1 AND s.type = $2 AND s.state_key = $3`, roomID, typ, key)
	if err != nil {
		return Event{}, fmt.Errorf("state %s/%s of %s: %w", typ, key, roomID, err)
	}
	evs, err := collectEvents(rows)
	if err != nil {
		return Event{}, err
	}
	if len(evs) == 0 {
		return Event{}, merr.NotFound("Event not found")
	}
	return evs[0], nil
}

// EventsAfter reads up to limit stored events with after < pos <= upto, in
// position order (for readers that follow the events stream from a
// position of their own: push evaluation, the search indexer).
func EventsAfter(ctx context.Context, q storage.Querier, after, upto int64, limit int) ([]Event, error) {
	rows, err := q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3`, after, upto, limit)
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	return collectEvents(rows)
}

func collectEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := ScanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// prefixed returns the event columns with a table prefix.
func prefixed(p string) string {
	return p + `pos, ` + p + `event_id, ` + p + `room_id, ` + p + `type, ` + p + `state_key, ` + p + `sender, COALESCE(` + p + `membership, ''), ` +
		p + `depth, ` + p + `topo, ` + p + `origin_ts, COALESCE(` + p + `relates_to, ''), COALESCE(` + p + `rel_type, ''), COALESCE(` + p + `redacted_by, ''), COALESCE(` +
		p + `device_id, ''), COALESCE(` + p + `txn_id, ''), ` + p + `snapshot_id, ` + p + `json`
}

// StateIDsAfter returns the state of the room right after an event, as
// (type, state_key) → event ID.
func (s *Service) StateIDsAfter(ctx context.Context, ev Event) (map[[2]string]string, error) {
	snap := ev.Snapshot
	if snap == 0 {
		// Not read with the event (or the state before a create event).
		if err := s.db.QueryRow(ctx, `SELECT snapshot_id FROM events WHERE event_id = $1`, ev.EventID).Scan(&snap); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", ev.EventID, err)
		}
	}
	st, err := s.loadSnapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	out := make(map[[2]string]string, len(st)+1)
	for k, id := range st {
		out[[2]string{k.typ, k.key}] = id
	}
	if ev.StateKey != nil {
		out[[2]string{ev.Type, *ev.StateKey}] = ev.EventID
	}
	return out, nil
}

// StateAfter returns the state events right after an event.
func (s *Service) StateAfter(ctx context.Context, ev Event) ([]Event, error) {
	ids, err := s.StateIDsAfter(ctx, ev)
	if err != nil {
		return nil, err
	}
	list := make([]string, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	var out []Event
	for len(list) > 0 {
		n := min(len(list), 500)
		evs, err := EventsByID(ctx, s.db, list[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		list = list[n:]
	}
	return out, nil
}

// loadSnapshot resolves a snapshot through its parent chain, in one query.
func (s *Service) loadSnapshot(ctx context.Context, id int64) (map[stateKey]string, error) {
	if id == 0 {
		return map[stateKey]string{}, nil
	}
	if st, ok := s.snaps.Get(id); ok {
		return st, nil
	}
	rows, err := s.db.Query(ctx, `WITH RECURSIVE chain(id, parent, depth) AS (
	SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
	UNION ALL
	SELECT s.snapshot_id, s.parent_id, c.depth + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent WHERE c.parent <> 0
)
SELECT c.depth, e.type, e.state_key, e.event_id FROM chain c JOIN state_snapshot_entries e ON e.snapshot_id = c.id ORDER BY c.depth DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", id, err)
	}
	defer rows.Close()
	out := map[stateKey]string{}
	for rows.Next() {
		var depth int64
		var k stateKey
		var eid string
		if err := rows.Scan(&depth, &k.typ, &k.key, &eid); err != nil {
			return nil, err
		}
		out[k] = eid // deeper (older) rows come first; newer ones overwrite them
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.snaps.Put(id, out)
	return out, nil
}

// JoinedMembers returns the joined members of a room with their member events.
func (s *Service) JoinedMembers(ctx context.Context, roomID string) ([]Event, error) {
	rows, err := s.db.Query(ctx, `SELECT `+prefixed("e.")+` FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.room_id = $1 AND s.type = 'm.room.member' AND s.membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined members of %s: %w", roomID, err)
	}
	return collectEvents(rows)
}

// AllRoomMemberships calls fn with every (room, user, membership, position)
// of current state, for building in-memory membership indexes at start.
func (s *Service) AllRoomMemberships(ctx context.Context, fn func(roomID, userID, membership string, pos int64)) error {
	rows, err := s.db.Query(ctx, `SELECT room_id, state_key, membership, pos FROM room_state WHERE type = 'm.room.member'`)
	if err != nil {
		return fmt.Errorf("all memberships: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r, u, m string
		var pos int64
		if err := rows.Scan(&r, &u, &m, &pos); err != nil {
			return err
		}
		fn(r, u, m, pos)
	}
	return rows.Err()
}

// AllRoomPositions calls fn with every room's latest event position.
func (s *Service) AllRoomPositions(ctx context.Context, fn func(roomID string, pos int64)) error {
	rows, err := s.db.Query(ctx, `SELECT room_id, MAX(pos) FROM events GROUP BY room_id`)
	if err != nil {
		return fmt.Errorf("room positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r string
		var pos int64
		if err := rows.Scan(&r, &pos); err != nil {
			return err
		}
		fn(r, pos)
	}
	return rows.Err()
}

// StateIDsAtSnapshot returns a state snapshot as (type, state_key) → event ID.
// The map is shared: callers must not change it.
func (s *Service) StateIDsAtSnapshot(ctx context.Context, snap int64) (map[[2]string]string, error) {
	if st, ok := s.snapsByKey.Get(snap); ok {
		return st, nil
	}
	st, err := s.loadSnapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	out := make(map[[2]string]string, len(st))
	for k, id := range st {
		out[[2]string{k.typ, k.key}] = id
	}
	s.snapsByKey.Put(snap, out)
	return out, nil
}

// StateIDsBefore returns the state of the room right before an event.
func (s *Service) StateIDsBefore(ctx context.Context, eventID string) (map[[2]string]string, error) {
	var snap int64
	if err := s.db.QueryRow(ctx, `SELECT snapshot_id FROM events WHERE event_id = $1`, eventID).Scan(&snap); err != nil {
		if isNoRows(err) {
			return nil, merr.NotFound("Event not found")
		}
		return nil, fmt.Errorf("snapshot of %s: %w", eventID, err)
	}
	st, err := s.loadSnapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	out := make(map[[2]string]string, len(st))
	for k, id := range st {
		out[[2]string{k.typ, k.key}] = id
	}
	return out, nil
}

// PowerLevel returns a user's power level in a room and the level needed to
// send a state event of a type.
func (s *Service) PowerLevel(ctx context.Context, roomID, userID string) (user int64, err error) {
	err = s.withRoom(ctx, roomID, func(r *room) error {
		pl := powerLevels(r)
		user = pl.UserLevel(spec.SenderID(userID))
		return nil
	})
	return
}
