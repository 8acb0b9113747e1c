package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// Follower reads the events stream as its readers need it: every position
// after the one it starts from, once each and in order, whatever the bus
// did. Notices come from the bus; a hole between two of them (a notice the
// bus lost, or one published before the reader subscribed) is read back
// from the database, the events table being the truth; a position with no
// event is handed on as a skip. The sync engine follows the stream with
// one, and tells push evaluation in the same order.
type Follower struct {
	db    storage.Querier
	apply func(ctx context.Context, n *Notice)
	stop  chan struct{}
	once  sync.Once

	// deliver serialises Deliver: notices may come from more than one
	// goroutine (the bus's, and a start-up queue), and each position must
	// be handed on once.
	deliver sync.Mutex
	mu      sync.Mutex
	last    int64
}

// NewFollower follows the stream after position last, handing each
// position to apply.
func NewFollower(db storage.Querier, last int64, apply func(ctx context.Context, n *Notice)) *Follower {
	return &Follower{db: db, apply: apply, last: last, stop: make(chan struct{})}
}

// Last is the last position handed on.
func (f *Follower) Last() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Close stops a replay that waits for the database to answer again.
func (f *Follower) Close() { f.once.Do(func() { close(f.stop) }) }

// Deliver takes a notice from the bus. Notices at or below the last
// position are old (delivered again); one past a hole first has the hole
// read from the database. Deliveries are handled one at a time.
func (f *Follower) Deliver(ctx context.Context, n *Notice) {
	f.deliver.Lock()
	defer f.deliver.Unlock()
	f.mu.Lock()
	last := f.last
	f.mu.Unlock()
	if n.Pos <= last {
		return
	}
	if n.Pos > last+1 && !f.replay(ctx, last, n.Pos-1) {
		return // closed while the database was away
	}
	f.apply(ctx, n)
	f.set(n.Pos)
}

func (f *Follower) set(pos int64) {
	f.mu.Lock()
	f.last = pos
	f.mu.Unlock()
}

// replay hands on the positions in (after, upto] from the database. While
// the database fails it retries, with growing waits: moving on would lose
// the events for good. It reports false when closed first.
func (f *Follower) replay(ctx context.Context, after, upto int64) bool {
	logging.From(ctx).WithFields(logrus.Fields{"after": after, "upto": upto}).Info("events stream: reading a hole in the bus notices from the database")
	for attempt := 0; after < upto; {
		ns, err := NoticesAfter(ctx, f.db, after, upto, 500)
		if err != nil {
			logging.From(ctx).WithError(err).Error("events stream: read missed events")
			if !backoff.Wait(attempt, f.stop) {
				return false
			}
			attempt++
			continue
		}
		attempt = 0
		for i := range ns {
			n := &ns[i]
			if n.Pos > after+1 {
				// Nothing was written in between.
				f.apply(ctx, &Notice{Event: Event{Pos: n.Pos - 1}, Skip: true})
			}
			f.apply(ctx, n)
			after = n.Pos
			f.set(after)
		}
		if len(ns) == 0 {
			f.apply(ctx, &Notice{Event: Event{Pos: upto}, Skip: true})
			after = upto
			f.set(after)
		}
	}
	return true
}

// NoticesAfter reads the stored events with after < pos <= upto (at most
// limit), in position order, as the notices their commits published: a
// redaction that took effect carries its target's redacted JSON.
func NoticesAfter(ctx context.Context, q storage.Querier, after, upto int64, limit int) ([]Notice, error) {
	evs, err := EventsAfter(ctx, q, after, upto, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Notice, len(evs))
	for i, e := range evs {
		out[i] = Notice{Event: e}
		if e.Type != "m.room.redaction" {
			continue
		}
		target := storedRedactsOf(e.JSON)
		if target == "" {
			continue
		}
		var js string
		err := q.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1 AND redacted_by = $2`, target, e.EventID).Scan(&js)
		if errors.Is(err, sql.ErrNoRows) {
			continue // the redaction took no effect (or an earlier one did)
		}
		if err != nil {
			return nil, fmt.Errorf("redaction target %s: %w", target, err)
		}
		out[i].Redacts, out[i].RedactedJSON = target, json.RawMessage(js)
	}
	return out, nil
}

// storedRedactsOf reads the target of a stored redaction: the top-level
// "redacts" of room versions before 11, content.redacts from 11 on.
func storedRedactsOf(js []byte) string {
	var r struct {
		Redacts string `json:"redacts"`
		Content struct {
			Redacts string `json:"redacts"`
		} `json:"content"`
	}
	if json.Unmarshal(js, &r) != nil {
		return ""
	}
	if r.Content.Redacts != "" {
		return r.Content.Redacts
	}
	return r.Redacts
}
