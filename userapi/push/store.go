package push

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// Positions kept in push_position.
const (
	posEvents   = 0 // every event up to it evaluated, stored and pushed, and in push_unread
	posReceipts = 1 // every receipt up to it applied to push_unread
)

const upsertPositionOf = `INSERT INTO push_position (id, pos) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET pos = excluded.pos WHERE push_position.pos < excluded.pos`

func selectPositionOf(ctx context.Context, q storage.Querier, id int) (int64, bool, error) {
	var pos int64
	err := q.QueryRow(ctx, `SELECT pos FROM push_position WHERE id = $1`, id).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("select push position %d: %w", id, err)
	}
	return pos, true, nil
}

// notifiedRecord is push_notified.data: the distinct actions (A) with
// whether each highlights (H), and each notified user's index into them (U).
type notifiedRecord struct {
	A []json.RawMessage `json:"a"`
	H []bool            `json:"h"`
	U map[string]int    `json:"u"`
}

func encodeNotified(rows []notifRow) ([]byte, error) {
	rec := notifiedRecord{U: make(map[string]int, len(rows))}
	idx := make(map[*Actions]int, 2) // rules share their *Actions
	for _, r := range rows {
		i, ok := idx[r.act]
		if !ok {
			i = len(rec.A)
			idx[r.act] = i
			rec.A = append(rec.A, r.act.Raw)
			rec.H = append(rec.H, r.act.Highlight)
		}
		rec.U[r.user] = i
	}
	return json.Marshal(rec)
}

// insertNotified stores the notifications of the batch's events, one row
// per event, 100 rows per statement.
func insertNotified(ctx context.Context, tx *storage.Tx, items []*work) error {
	const per = 100
	args := make([]any, 0, per*5)
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString(`INSERT INTO push_notified (pos, room_id, event_id, ts, data) VALUES `)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d)", i*5+1, i*5+2, i*5+3, i*5+4, i*5+5)
		}
		b.WriteString(` ON CONFLICT (pos) DO NOTHING`)
		_, err := tx.Exec(ctx, b.String(), args...)
		args, n = args[:0], 0
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		return nil
	}
	for _, it := range items {
		if len(it.rows) == 0 {
			continue
		}
		data, err := encodeNotified(it.rows)
		if err != nil {
			return err
		}
		args = append(args, it.pos, it.ev.RoomID, it.ev.ID, it.ev.TS, string(data))
		if n++; n == per {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// writeCheckpoint stores the changed unread counts and the positions they
// reflect.
func writeCheckpoint(ctx context.Context, tx *storage.Tx, cp *checkpoint) error {
	if err := storeUnread(ctx, tx, cp.snaps); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, upsertPositionOf, posEvents, cp.pos); err != nil {
		return fmt.Errorf("store push position: %w", err)
	}
	if _, err := tx.Exec(ctx, upsertPositionOf, posReceipts, cp.rpos); err != nil {
		return fmt.Errorf("store push receipts position: %w", err)
	}
	return nil
}

// storeUnread writes users' unread counts per room (deleting the rows of
// those with none left).
func storeUnread(ctx context.Context, tx *storage.Tx, snaps []snapshot) error {
	for _, s := range snaps {
		var err error
		if s.data == nil {
			_, err = tx.Exec(ctx, `DELETE FROM push_unread WHERE user_id = $1 AND room_id = $2`, s.user, s.room)
		} else {
			_, err = tx.Exec(ctx, `INSERT INTO push_unread (user_id, room_id, data) VALUES ($1, $2, $3)
ON CONFLICT (user_id, room_id) DO UPDATE SET data = excluded.data`, s.user, s.room, string(s.data))
		}
		if err != nil {
			return fmt.Errorf("store unread of %s in %s: %w", s.user, s.room, err)
		}
	}
	return nil
}

// loadUnread fills the in-memory counts from the last checkpoint.
func (s *Service) loadUnread(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, room_id, data FROM push_unread`)
	if err != nil {
		return fmt.Errorf("load unread notifications: %w", err)
	}
	defer rows.Close()
	threads := map[string]string{} // one copy of each thread ID
	for rows.Next() {
		var u, r string
		var data []byte
		if err := rows.Scan(&u, &r, &data); err != nil {
			return fmt.Errorf("load unread notifications: %w", err)
		}
		if err := s.counts.load(u, r, data, threads); err != nil {
			return err
		}
	}
	return rows.Err()
}

// convertLegacy moves the notifications stored one row per user (the
// notifications table of migration 0004) into push_notified and the
// unread counts, in one transaction, and empties the old table.
func (s *Service) convertLegacy(ctx context.Context) error {
	var n int64
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM notifications`).Scan(&n); err != nil {
		return fmt.Errorf("count notifications: %w", err)
	}
	if n == 0 {
		return nil
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		rows, err := tx.Query(ctx, `SELECT user_id, pos, room_id, event_id, thread_id, highlight, actions, ts, is_read FROM notifications ORDER BY pos`)
		if err != nil {
			return fmt.Errorf("read notifications: %w", err)
		}
		var items []*work
		acts := map[string]*Actions{}
		for rows.Next() {
			var u, room, evID, thread, raw string
			var pos, ts int64
			var hl, read bool
			if err := rows.Scan(&u, &pos, &room, &evID, &thread, &hl, &raw, &ts, &read); err != nil {
				rows.Close()
				return fmt.Errorf("read notifications: %w", err)
			}
			if len(items) == 0 || items[len(items)-1].pos != pos {
				items = append(items, &work{pos: pos, ev: &Event{ID: evID, RoomID: room, TS: ts}})
			}
			key := fmt.Sprint(hl, raw)
			a := acts[key]
			if a == nil {
				a = &Actions{Notify: true, Highlight: hl, Raw: json.RawMessage(raw)}
				acts[key] = a
			}
			it := items[len(items)-1]
			it.rows = append(it.rows, notifRow{user: u, act: a})
			if !read {
				s.counts.add(u, room, entry{pos: pos, thread: thread, highlight: hl})
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read notifications: %w", err)
		}
		if err := insertNotified(ctx, tx, items); err != nil {
			return err
		}
		if err := storeUnread(ctx, tx, s.counts.takeDirty()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM notifications`); err != nil {
			return fmt.Errorf("empty notifications: %w", err)
		}
		logging.From(ctx).WithField("events", len(items)).Info("push: notifications moved to one row per event")
		return nil
	})
}

// storedReceipts returns the read receipts stored after the receipts
// position: those whose effect on the unread counts may be missing from
// the last checkpoint. The receipts table belongs to the sync engine; this
// reads it once at start.
func storedReceipts(ctx context.Context, q storage.Querier, after int64) ([]readMark, error) {
	rows, err := q.Query(ctx, `SELECT r.user_id, r.room_id, r.thread_id, e.pos, r.pos FROM receipts r JOIN events e ON e.event_id = r.event_id
WHERE r.rtype IN ('m.read', 'm.read.private') AND r.pos > $1 ORDER BY r.pos`, after)
	if err != nil {
		return nil, fmt.Errorf("stored receipts: %w", err)
	}
	defer rows.Close()
	var out []readMark
	for rows.Next() {
		var m readMark
		if err := rows.Scan(&m.user, &m.room, &m.thread, &m.pos, &m.rpos); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Notification is one entry of GET /notifications, without its event.
type Notification struct {
	Pos     int64
	RoomID  string
	EventID string
	Actions string
	TS      int64
	Read    bool
}

// MaxNotificationsLimit bounds a page of /notifications.
const MaxNotificationsLimit = 100

// Notifications returns a page of the user's notifications, newest first:
// those before the from token (all when ""), highlights only if only is
// "highlight". next is the token of the following page, "" at the end.
func (s *Service) Notifications(ctx context.Context, userID, from string, limit int, only string) (out []Notification, next string, err error) {
	before := int64(1) << 62
	if from != "" {
		n, perr := strconv.ParseInt(from, 10, 64)
		if perr != nil || n < 0 {
			return nil, "", errInvalidFrom
		}
		before = n
	}
	if limit <= 0 {
		limit = 20
	}
	limit = min(limit, MaxNotificationsLimit)
	// Read what was evaluated before the call.
	if err := s.Flush(ctx); err != nil {
		return nil, "", err
	}
	// The rows are per event: scan them newest first, keep the user's.
	// A page stops after maxScan rows even if it is not full; its next
	// token goes on from there.
	needle, _ := json.Marshal(userID)
	cursor, scanned := before, 0
	for len(out) <= limit && scanned < maxScan {
		rows, err := s.db.Query(ctx, `SELECT pos, room_id, event_id, ts, data FROM push_notified WHERE pos < $1 ORDER BY pos DESC LIMIT $2`, cursor, scanChunk)
		if err != nil {
			return nil, "", fmt.Errorf("notifications of %s: %w", userID, err)
		}
		got := 0
		for rows.Next() && len(out) <= limit {
			var n Notification
			var data []byte
			if err := rows.Scan(&n.Pos, &n.RoomID, &n.EventID, &n.TS, &data); err != nil {
				rows.Close()
				return nil, "", fmt.Errorf("notifications of %s: %w", userID, err)
			}
			got++
			cursor = n.Pos
			if !bytes.Contains(data, needle) {
				continue
			}
			var rec notifiedRecord
			if json.Unmarshal(data, &rec) != nil {
				continue
			}
			i, ok := rec.U[userID]
			if !ok || i < 0 || i >= len(rec.A) || i >= len(rec.H) || (only == "highlight" && !rec.H[i]) {
				continue
			}
			n.Actions = string(rec.A[i])
			n.Read = !s.counts.isUnread(userID, n.RoomID, n.Pos)
			out = append(out, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, "", fmt.Errorf("notifications of %s: %w", userID, err)
		}
		scanned += got
		if got < scanChunk {
			// The oldest row was read.
			if len(out) > limit {
				out = out[:limit]
				next = strconv.FormatInt(out[limit-1].Pos, 10)
			}
			return out, next, nil
		}
	}
	if len(out) > limit {
		out = out[:limit]
		return out, strconv.FormatInt(out[limit-1].Pos, 10), nil
	}
	// The scan stopped before the page filled: go on from where it stopped.
	return out, strconv.FormatInt(cursor, 10), nil
}

// A /notifications page reads push_notified in chunks of scanChunk rows,
// at most maxScan rows.
const (
	scanChunk = 500
	maxScan   = 10000
)
