package push

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

const upsertPosition = `INSERT INTO push_position (id, pos) VALUES (0, $1)
ON CONFLICT (id) DO UPDATE SET pos = excluded.pos WHERE push_position.pos < excluded.pos`

func selectPosition(ctx context.Context, q storage.Querier) (int64, bool, error) {
	var pos int64
	err := q.QueryRow(ctx, `SELECT pos FROM push_position WHERE id = 0`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("select push position: %w", err)
	}
	return pos, true, nil
}

// eventsAfter reads up to limit stored events with after < pos <= upto.
func eventsAfter(ctx context.Context, q storage.Querier, after, upto int64, limit int) ([]roomserver.Event, error) {
	rows, err := q.Query(ctx, `SELECT `+roomserver.EventColumns+` FROM events WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3`, after, upto, limit)
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	defer rows.Close()
	var out []roomserver.Event
	for rows.Next() {
		e, err := roomserver.ScanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// insertStmts caches the multi-row INSERT texts by row count.
var insertStmts sync.Map

func insertText(n int) string {
	if v, ok := insertStmts.Load(n); ok {
		return v.(string)
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO notifications (user_id, pos, room_id, event_id, thread_id, highlight, actions, ts) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		p := i * 8
		b.WriteString("(")
		for j := 1; j <= 8; j++ {
			if j > 1 {
				b.WriteByte(',')
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p + j))
		}
		b.WriteString(")")
	}
	b.WriteString(` ON CONFLICT (user_id, pos) DO NOTHING`)
	text := b.String()
	insertStmts.Store(n, text)
	return text
}

// insertNotifications stores an event's notifications in one statement.
func insertNotifications(ctx context.Context, tx *storage.Tx, it *work) error {
	for start := 0; start < len(it.rows); start += 100 {
		rows := it.rows[start:min(len(it.rows), start+100)]
		args := make([]any, 0, len(rows)*8)
		for _, r := range rows {
			args = append(args, r.user, it.pos, it.ev.RoomID, it.ev.ID, it.ev.ThreadID, r.act.Highlight, string(r.act.Raw), it.ev.TS)
		}
		if _, err := tx.Exec(ctx, insertText(len(rows)), args...); err != nil {
			return fmt.Errorf("insert notifications of %s: %w", it.ev.ID, err)
		}
	}
	return nil
}

func markRead(ctx context.Context, tx *storage.Tx, r readMark) error {
	var err error
	switch r.thread {
	case threadAll:
		_, err = tx.Exec(ctx, `UPDATE notifications SET is_read = TRUE WHERE user_id = $1 AND room_id = $2 AND pos <= $3 AND NOT is_read`,
			r.user, r.room, r.pos)
	case threadMain:
		_, err = tx.Exec(ctx, `UPDATE notifications SET is_read = TRUE WHERE user_id = $1 AND room_id = $2 AND pos <= $3 AND NOT is_read AND thread_id = ''`,
			r.user, r.room, r.pos)
	default:
		_, err = tx.Exec(ctx, `UPDATE notifications SET is_read = TRUE WHERE user_id = $1 AND room_id = $2 AND pos <= $3 AND NOT is_read AND thread_id = $4`,
			r.user, r.room, r.pos, r.thread)
	}
	if err != nil {
		return fmt.Errorf("mark notifications of %s in %s read: %w", r.user, r.room, err)
	}
	return nil
}

// loadUnread fills the in-memory counts from the stored unread notifications.
func (s *Service) loadUnread(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, room_id, thread_id, pos, highlight FROM notifications WHERE NOT is_read ORDER BY pos`)
	if err != nil {
		return fmt.Errorf("load unread notifications: %w", err)
	}
	defer rows.Close()
	threads := map[string]string{} // one copy of each thread ID
	for rows.Next() {
		var u, r, t string
		var e entry
		if err := rows.Scan(&u, &r, &t, &e.pos, &e.highlight); err != nil {
			return fmt.Errorf("load unread notifications: %w", err)
		}
		if t != "" {
			if c, ok := threads[t]; ok {
				t = c
			} else {
				threads[t] = t
			}
		}
		e.thread = t
		s.counts.add(u, r, e)
	}
	return rows.Err()
}

// pendingReceipts returns the latest read receipts that still cover unread
// stored notifications (their update was lost in a crash). The receipts
// table belongs to the sync engine; this reads it once at start.
func pendingReceipts(ctx context.Context, q storage.Querier) ([]readMark, error) {
	rows, err := q.Query(ctx, `SELECT r.user_id, r.room_id, r.thread_id, e.pos FROM receipts r JOIN events e ON e.event_id = r.event_id
WHERE r.rtype IN ('m.read', 'm.read.private') AND EXISTS (SELECT 1 FROM notifications n
WHERE n.user_id = r.user_id AND n.room_id = r.room_id AND NOT n.is_read AND n.pos <= e.pos)`)
	if err != nil {
		return nil, fmt.Errorf("pending receipts: %w", err)
	}
	defer rows.Close()
	var out []readMark
	for rows.Next() {
		var m readMark
		if err := rows.Scan(&m.user, &m.room, &m.thread, &m.pos); err != nil {
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
	q := `SELECT pos, room_id, event_id, actions, ts, is_read FROM notifications WHERE user_id = $1 AND pos < $2 ORDER BY pos DESC LIMIT $3`
	if only == "highlight" {
		q = `SELECT pos, room_id, event_id, actions, ts, is_read FROM notifications WHERE user_id = $1 AND pos < $2 AND highlight ORDER BY pos DESC LIMIT $3`
	}
	rows, err := s.db.Query(ctx, q, userID, before, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("notifications of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var n Notification
		if err := rows.Scan(&n.Pos, &n.RoomID, &n.EventID, &n.Actions, &n.TS, &n.Read); err != nil {
			return nil, "", fmt.Errorf("notifications of %s: %w", userID, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(out) > limit {
		out = out[:limit]
		next = strconv.FormatInt(out[limit-1].Pos, 10)
	}
	return out, next, nil
}
