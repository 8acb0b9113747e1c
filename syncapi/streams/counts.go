package streams

import (
	"context"
	"database/sql"
	"fmt"
)

// unreadCache is the notifier's memory of unread counts.
type unreadCache interface {
	Unread(room, user string) (count int, known bool, roomPos int64)
	StoreUnread(room, user string, count int, roomPos int64)
}

// pushCountSource is the push service's counts (push rules evaluated on
// every event and receipt before the members wake), answered from memory.
type pushCountSource interface {
	Unread(roomID, userID string) (notifications, highlights int)
	UnreadByThread(roomID, userID string, fn func(threadID string, notifications, highlights int))
}

// rowQuerier reads one row (storage.DB).
type rowQuerier interface {
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
}

// Unread is one room's (or thread's) notification and highlight counts.
type Unread struct {
	Notifications, Highlights int
}

// Counts are the unread counts of a user's rooms: the push service's when
// it runs (notifications and highlights, per thread when asked), else the
// messages from others after the user's read receipt, from the notifier's
// memory when it knows them, else from the database (then remembered).
type Counts struct {
	db    rowQuerier
	cache unreadCache
	push  pushCountSource
}

// NewCounts answers counts from push (nil when there is no push service),
// else from cache and db.
func NewCounts(db rowQuerier, cache unreadCache, push pushCountSource) *Counts {
	return &Counts{db: db, cache: cache, push: push}
}

// Pushed tells whether the counts are the push service's.
func (c *Counts) Pushed() bool { return c.push != nil }

// FromPush returns the push service's counts of a room: all of them in
// main, or, byThread, the main timeline's in main and each thread's (by
// root; nil when none) in threads.
func (c *Counts) FromPush(roomID, userID string, byThread bool) (Unread, map[string]Unread) {
	if !byThread {
		n, h := c.push.Unread(roomID, userID)
		return Unread{n, h}, nil
	}
	return c.byThread(roomID, userID)
}

// byThread is FromPush by thread (apart: its closure's captures cost
// allocations the common case does without).
func (c *Counts) byThread(roomID, userID string) (main Unread, threads map[string]Unread) {
	c.push.UnreadByThread(roomID, userID, func(thread string, n, h int) {
		if thread == "" {
			main = Unread{n, h}
			return
		}
		if threads == nil {
			threads = map[string]Unread{}
		}
		threads[thread] = Unread{n, h}
	})
	return main, threads
}

// Messages counts the messages from others after the user's read
// receipt (without a push service).
func (c *Counts) Messages(ctx context.Context, roomID, userID string) (int, error) {
	cached, known, roomPos := c.cache.Unread(roomID, userID)
	if known {
		return cached, nil
	}
	// The user has read up to their latest unthreaded or main-timeline
	// receipt, or their own latest message, whichever is later.
	var readPos, ownPos int64
	err := c.db.QueryRow(ctx, `SELECT COALESCE(MAX(e.pos), 0) FROM receipts r JOIN events e ON e.event_id = r.event_id
WHERE r.room_id = $1 AND r.user_id = $2 AND r.rtype IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')`, roomID, userID).Scan(&readPos)
	if err != nil {
		return 0, fmt.Errorf("read position: %w", err)
	}
	err = c.db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM events WHERE room_id = $1 AND sender = $2 AND pos <= $3 AND type IN ('m.room.message', 'm.room.encrypted')`,
		roomID, userID, roomPos).Scan(&ownPos)
	if err != nil {
		return 0, fmt.Errorf("own position: %w", err)
	}
	readPos = max(readPos, ownPos)
	var n int
	err = c.db.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND pos > $2 AND pos <= $3 AND sender <> $4
AND type IN ('m.room.message', 'm.room.encrypted') AND state_key IS NULL AND redacted_by IS NULL`,
		roomID, readPos, roomPos, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unread count: %w", err)
	}
	c.cache.StoreUnread(roomID, userID, n, roomPos)
	return n, nil
}
