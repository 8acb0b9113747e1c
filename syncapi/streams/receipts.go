package streams

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// querier reads the database (storage.DB).
type querier interface {
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Receipts is the receipts stream: read receipts (m.read, and
// m.read.private for their owner only) by position, from the table
// receipts (the sync engine writes it).
type Receipts struct{ db querier }

// NewReceipts reads the receipts stream from db.
func NewReceipts(db querier) *Receipts { return &Receipts{db: db} }

// ForRooms builds the m.receipt event of each room: all receipts up to
// upto for the rooms in whole (new to the client), those in (since, upto]
// for the rooms in changed. Rooms without receipts are absent.
func (r *Receipts) ForRooms(ctx context.Context, userID string, whole, changed []string, since, upto int64) (map[string]json.RawMessage, error) {
	out, err := r.Events(ctx, userID, whole, 0, upto)
	if err != nil {
		return nil, err
	}
	if len(changed) > 0 {
		more, err := r.Events(ctx, userID, changed, since, upto)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = more
		} else {
			for k, v := range more {
				out[k] = v
			}
		}
	}
	return out, nil
}

type receiptRow struct {
	roomID, rtype, userID, threadID, eventID string
	ts                                       int64
}

// Events builds the m.receipt ephemeral event of each of the rooms from
// their receipts with since < pos <= upto, in one query; private receipts
// only for their owner. Rooms without receipts are absent.
func (r *Receipts) Events(ctx context.Context, userID string, rooms []string, since, upto int64) (map[string]json.RawMessage, error) {
	if len(rooms) == 0 {
		return nil, nil
	}
	rows, err := r.db.Query(ctx, `SELECT room_id, rtype, user_id, thread_id, event_id, ts FROM receipts WHERE room_id IN ($1) AND pos > $2 AND pos <= $3`, rooms, since, upto)
	if err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	defer rows.Close()
	// room → event → type → user → entry
	content := map[string]map[string]map[string]map[string]any{}
	for rows.Next() {
		var rr receiptRow
		if err := rows.Scan(&rr.roomID, &rr.rtype, &rr.userID, &rr.threadID, &rr.eventID, &rr.ts); err != nil {
			return nil, err
		}
		if rr.rtype == "m.read.private" && rr.userID != userID {
			continue
		}
		byEvent := content[rr.roomID]
		if byEvent == nil {
			byEvent = map[string]map[string]map[string]any{}
			content[rr.roomID] = byEvent
		}
		byType := byEvent[rr.eventID]
		if byType == nil {
			byType = map[string]map[string]any{}
			byEvent[rr.eventID] = byType
		}
		byUser := byType[rr.rtype]
		if byUser == nil {
			byUser = map[string]any{}
			byType[rr.rtype] = byUser
		}
		entry := map[string]any{"ts": rr.ts}
		if rr.threadID != "" {
			entry["thread_id"] = rr.threadID
		}
		byUser[rr.userID] = entry
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(content))
	for room, c := range content {
		ev, err := json.Marshal(map[string]any{"type": "m.receipt", "content": c})
		if err != nil {
			return nil, err
		}
		out[room] = ev
	}
	return out, nil
}
