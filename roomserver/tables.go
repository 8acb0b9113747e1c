package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/haven-chat/haven/storage"
)

const eventColumns = `pos, event_id, room_id, type, state_key, sender, COALESCE(membership, ''), depth, topo, origin_ts,
COALESCE(relates_to, ''), COALESCE(rel_type, ''), COALESCE(redacted_by, ''), COALESCE(device_id, ''), COALESCE(txn_id, ''), snapshot_id, json`

// EventColumns is the column list ScanEvent expects, for readers of the events table.
const EventColumns = eventColumns

// ScanEvent reads one row selected with EventColumns.
func ScanEvent(rows interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var sk sql.NullString
	var js string
	if err := rows.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Membership, &e.Depth, &e.Topo, &e.OriginTS,
		&e.RelatesTo, &e.RelType, &e.RedactedBy, &e.DeviceID, &e.TxnID, &e.Snapshot, &js); err != nil {
		return e, err
	}
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	e.JSON = []byte(js)
	return e, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullableKey(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// insertEvent stores an event. An event whose sender, device, room and
// transaction ID are already taken is not stored: errTxnExists.
func insertEvent(ctx context.Context, tx *storage.Tx, e *Event) error {
	res, err := tx.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, state_key, sender, membership, depth, origin_ts,
snapshot_id, relates_to, rel_type, device_id, txn_id, json, topo) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)
ON CONFLICT (sender, device_id, room_id, txn_id) WHERE txn_id IS NOT NULL DO NOTHING`,
		e.Pos, e.EventID, e.RoomID, e.Type, nullableKey(e.StateKey), e.Sender, nullable(e.Membership), e.Depth, e.OriginTS,
		e.Snapshot, nullable(e.RelatesTo), nullable(e.RelType), nullable(e.DeviceID), nullable(e.TxnID), string(e.JSON), e.Topo)
	if err != nil {
		return fmt.Errorf("insert event %s: %w", e.EventID, err)
	}
	if e.TxnID != "" {
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return errTxnExists
		}
	}
	return nil
}

// EventsByID loads events by ID, in no particular order. Missing IDs are skipped.
func EventsByID(ctx context.Context, q storage.Querier, ids []string) ([]Event, error) {
	ids = storableIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN ($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("select events by id: %w", err)
	}
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

// storableIDs drops the IDs that cannot name anything (see
// storage.StorableText).
func storableIDs(ids []string) []string {
	for i, id := range ids {
		if !storage.StorableText(id) {
			out := append([]string(nil), ids[:i]...)
			for _, id := range ids[i+1:] {
				if storage.StorableText(id) {
					out = append(out, id)
				}
			}
			return out
		}
	}
	return ids
}

type roomRow struct {
	version  string
	snapshot int64
	depth    int64
}

func selectRoom(ctx context.Context, q storage.Querier, roomID string) (roomRow, error) {
	var r roomRow
	err := q.QueryRow(ctx, `SELECT room_version, snapshot_id, depth FROM rooms WHERE room_id = $1`, roomID).Scan(&r.version, &r.snapshot, &r.depth)
	if errors.Is(err, sql.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("select room %s: %w", roomID, err)
	}
	return r, nil
}

func selectCurrentState(ctx context.Context, q storage.Querier, roomID string) (map[stateKey]string, error) {
	rows, err := q.Query(ctx, `SELECT type, state_key, event_id FROM room_state WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("select state of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := make(map[stateKey]string)
	for rows.Next() {
		var k stateKey
		var id string
		if err := rows.Scan(&k.typ, &k.key, &id); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}

func selectExtremities(ctx context.Context, q storage.Querier, roomID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT event_id FROM room_extremities WHERE room_id = $1 ORDER BY event_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("select extremities of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func maxEventPos(ctx context.Context, q storage.Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM events`).Scan(&n)
	return n, err
}

func maxSnapshotID(ctx context.Context, q storage.Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT COALESCE(MAX(snapshot_id), 0) FROM state_snapshots`).Scan(&n)
	return n, err
}

// snapshot storage: a snapshot is its parent's entries overlaid with its own.
func insertSnapshot(ctx context.Context, tx *storage.Tx, id int64, roomID string, parent, chainLen int64, entries map[stateKey]string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent_id, chain_len) VALUES ($1,$2,$3,$4)`,
		id, roomID, parent, chainLen); err != nil {
		return fmt.Errorf("insert snapshot %d: %w", id, err)
	}
	for k, eid := range entries {
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES ($1,$2,$3,$4)`,
			id, k.typ, k.key, eid); err != nil {
			return fmt.Errorf("insert snapshot entry %d: %w", id, err)
		}
	}
	return nil
}

func selectSnapshotMeta(ctx context.Context, q storage.Querier, id int64) (parent, chainLen int64, err error) {
	err = q.QueryRow(ctx, `SELECT parent_id, chain_len FROM state_snapshots WHERE snapshot_id = $1`, id).Scan(&parent, &chainLen)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, storage.ErrNotFound
	}
	return
}

func selectTxn(ctx context.Context, q storage.Querier, userID, deviceID, roomID, txnID string) (string, error) {
	var eid string
	err := q.QueryRow(ctx, `SELECT event_id FROM events WHERE sender = $1 AND device_id = $2 AND room_id = $3 AND txn_id = $4`, userID, deviceID, roomID, txnID).Scan(&eid)
	if errors.Is(err, sql.ErrNoRows) {
		return "", storage.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("select txn %s: %w", txnID, err)
	}
	return eid, nil
}

// topoDepth is an event's topological depth: the first part of the key
// (topo, pos) by which a room's history is ordered (/messages, /context).
// known tells the topological depth of an event in the timeline.
//
// It is computed from the DAG rather than taken from the event's depth
// field, which its sending server chooses: an event whose prev_events are
// all in the timeline is placed one above the highest of them whatever
// depth it claims, so that no server can lift an event built on old
// history above the room's live end, nor sink one below its own parents.
// Only where a prev_event is not in the timeline (the create event, a gap
// bridged by fetching the state at it, a parent kept as an outlier) is the
// claimed depth the best guess there is, and it is taken when higher.
// For events whose servers follow the spec both give the same number.
func topoDepth(claimed int64, prevs []string, known func(string) (int64, bool)) int64 {
	var top int64
	missing := len(prevs) == 0
	for _, id := range prevs {
		if t, ok := known(id); ok {
			top = max(top, t)
		} else {
			missing = true
		}
	}
	if missing {
		return max(top+1, claimed)
	}
	return top + 1
}

// selectTopos reads the topological depths of those of ids in the timeline
// into into.
func selectTopos(ctx context.Context, q storage.Querier, ids []string, into map[string]int64) error {
	ids = storableIDs(ids)
	if len(ids) == 0 {
		return nil
	}
	rows, err := q.Query(ctx, `SELECT event_id, topo FROM events WHERE event_id IN ($1)`, ids)
	if err != nil {
		return fmt.Errorf("select topological depths: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var t int64
		if err := rows.Scan(&id, &t); err != nil {
			return err
		}
		into[id] = t
	}
	return rows.Err()
}

// insertPrevEvents stores the edges from a batch of timeline events to
// their prev_events (prevs[i] are events[i]'s), in one statement.
func insertPrevEvents(ctx context.Context, tx *storage.Tx, roomID string, events []Event, prevs [][]string) error {
	var b strings.Builder
	args := []any{roomID}
	b.WriteString(`INSERT INTO prev_events (room_id, prev_event_id, event_id) VALUES `)
	for i, ps := range prevs {
		for _, p := range ps {
			if len(args) > 1 {
				b.WriteByte(',')
			}
			args = append(args, p, events[i].EventID)
			fmt.Fprintf(&b, "($1,$%d,$%d)", len(args)-1, len(args))
		}
	}
	if len(args) == 1 {
		return nil
	}
	b.WriteString(` ON CONFLICT DO NOTHING`)
	if _, err := tx.Exec(ctx, b.String(), args...); err != nil {
		return fmt.Errorf("insert prev_events of %s: %w", events[0].EventID, err)
	}
	return nil
}

// BackwardExtremities are the room's prev_events that are not in its
// timeline (unknown here, or known only as outliers; never rejected or
// soft-failed ones): where its history has holes, and backfill starts.
func BackwardExtremities(ctx context.Context, q storage.Querier, roomID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT p.prev_event_id FROM prev_events p WHERE p.room_id = $1
AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = p.prev_event_id)
AND NOT EXISTS (SELECT 1 FROM event_outliers o WHERE o.event_id = p.prev_event_id AND o.status <> 'outlier')
ORDER BY p.prev_event_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("select backward extremities of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
