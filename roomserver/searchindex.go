package roomserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// indexer fills event_search from the events table after they commit, in
// batches: one transaction (one FTS5 segment on SQLite) for every event
// committed within indexDelay, instead of one per event inside the event's
// own transaction. search_position holds how far it got, so a crash loses
// nothing: the next start goes on from there. Search calls Flush first, so
// what it finds is never behind what it was asked after.
//
// Several processes on one database may run it: a batch moves the position
// only from the value it read (otherwise another process did that batch
// first, and this one is dropped).
type indexer struct {
	db *storage.DB
	// visible is the events position below which every event committed:
	// the indexer never passes an event still being written.
	visible func() int64
	mu      sync.Mutex // one batch at a time in this process
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	// at is the position this process last saw the index at: a wake-up
	// with nothing after it runs no query.
	at atomic.Int64
}

const (
	// indexDelay lets the events that follow a commit join its batch.
	indexDelay = 200 * time.Millisecond
	// indexBatch bounds the events read per batch.
	indexBatch = 1000
)

// errIndexRace: another process moved the position first.
var errIndexRace = errors.New("search index position moved")

func newIndexer(db *storage.DB, visible func() int64) *indexer {
	x := &indexer{db: db, visible: visible, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go x.loop()
	x.kick() // whatever a crash left behind
	return x
}

// kick tells the indexer that events committed.
func (x *indexer) kick() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

func (x *indexer) close() {
	x.once.Do(func() {
		close(x.stop)
		<-x.done
	})
}

func (x *indexer) loop() {
	defer close(x.done)
	ctx := context.Background()
	for backoff.Gather(x.wake, x.stop, indexDelay) {
		if x.at.Load() >= x.visible() {
			continue // a flush did it
		}
		for failures := 0; ; {
			more, err := x.batch(ctx)
			if err == nil {
				if !more {
					break
				}
				failures = 0
				continue
			}
			logging.From(ctx).WithError(err).WithField("retry_in", backoff.Delay(failures).String()).Error("search index")
			if !backoff.Wait(failures, x.stop) {
				return
			}
			failures++
		}
	}
}

// flush indexes every event up to upto (or returns ctx's error).
func (x *indexer) flush(ctx context.Context, upto int64) error {
	if x.at.Load() >= upto {
		return nil
	}
	for {
		pos, err := x.position(ctx)
		if err != nil || pos >= upto {
			return err
		}
		if _, err := x.batch(ctx); err != nil {
			return err
		}
	}
}

func (x *indexer) position(ctx context.Context) (int64, error) {
	var pos int64
	if err := x.db.QueryRow(ctx, `SELECT pos FROM search_position WHERE id = 0`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read search index position: %w", err)
	}
	x.seen(pos)
	return pos, nil
}

// batch indexes the next events after the position, and tells whether
// there are more.
func (x *indexer) batch(ctx context.Context) (more bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	from, err := x.position(ctx)
	if err != nil {
		return false, err
	}
	vis := x.visible()
	evs, err := EventsAfter(ctx, x.db, from, vis, indexBatch)
	if err != nil {
		return false, fmt.Errorf("read events to index: %w", err)
	}
	var args []any
	upto := from
	for i := range evs {
		e := &evs[i]
		upto = e.Pos
		if e.RedactedBy != "" {
			continue
		}
		if field, text, ok := searchField(e); ok {
			args = append(args, e.Pos, e.RoomID, field, text)
		}
	}
	if len(evs) < indexBatch {
		// Every event up to vis was read (positions without an event
		// are writes that failed).
		upto = max(upto, vis)
	}
	if upto <= from {
		return false, nil
	}
	err = x.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE search_position SET pos = $1 WHERE id = 0 AND pos = $2`, upto, from)
		if err != nil {
			return fmt.Errorf("move search index position: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errIndexRace
		}
		const per = 100 // rows per statement
		for start := 0; start < len(args); start += per * 4 {
			part := args[start:min(len(args), start+per*4)]
			var b strings.Builder
			b.WriteString(`INSERT INTO event_search (rowid, room_id, field, body) VALUES `)
			for i := 0; i < len(part)/4; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "($%d,$%d,$%d,$%d)", i*4+1, i*4+2, i*4+3, i*4+4)
			}
			if _, err := tx.Exec(ctx, b.String(), part...); err != nil {
				return fmt.Errorf("index events: %w", err)
			}
		}
		return nil
	})
	if errors.Is(err, errIndexRace) {
		logging.From(ctx).WithFields(logrus.Fields{"from": from, "upto": upto}).Debug("search index: batch done by another process")
		return true, nil
	}
	if err != nil {
		return false, err
	}
	x.seen(upto)
	return len(evs) == indexBatch, nil
}

// seen records a position the index was at.
func (x *indexer) seen(pos int64) {
	for {
		cur := x.at.Load()
		if pos <= cur || x.at.CompareAndSwap(cur, pos) {
			return
		}
	}
}
