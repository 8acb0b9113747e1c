package push

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// notifRow is one notification of an event for one user.
type notifRow struct {
	user string
	act  *Actions
}

// readMark is a stored receipt to apply to the counts at start.
type readMark struct {
	user, room, thread string
	pos, rpos          int64
}

// work is what one notifying event changes in the database, or a
// checkpoint of the counts.
type work struct {
	pos    int64 // the event's position
	ev     *Event
	rows   []notifRow
	pushes []pushJob
	cp     *checkpoint
	seq    int64
}

// checkpoint is the unread counts changed since the last one, as of the
// events position pos and the receipts position rpos.
type checkpoint struct {
	pos, rpos int64
	snaps     []snapshot
}

// writer stores notifications off the hot path: evaluation queues work
// (never blocking), one goroutine writes it in batches, each batch one
// transaction (100 events' notifications per statement), then queues the
// batch's pushes. A checkpoint ends a batch and is written after the
// batch's pushes are queued: the position it stores never passes an event
// whose notifications or pushes are not stored yet.
type writer struct {
	s      *Service
	mu     sync.Mutex
	queue  []*work
	enq    int64 // sequence of the last queued work
	done   int64 // sequence of the last stored work
	doneCh chan struct{}
	wake   chan struct{}
	stop   chan struct{}
	exited chan struct{}
	once   sync.Once
}

// maxBatch bounds the work items written in one transaction.
const maxBatch = 256

// batchDelay is how long the writer lets work gather before a transaction.
const batchDelay = 100 * time.Millisecond

// Notifications older than keepNotified leave /notifications; they are
// deleted every pruneEvery (the unread counts stay).
const (
	keepNotified = 30 * 24 * time.Hour
	pruneEvery   = 6 * time.Hour
)

func newWriter(s *Service) *writer {
	w := &writer{s: s, doneCh: make(chan struct{}), wake: make(chan struct{}, 1), stop: make(chan struct{}), exited: make(chan struct{})}
	go w.loop()
	return w
}

func (w *writer) enqueue(it *work) {
	w.mu.Lock()
	w.enq++
	it.seq = w.enq
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// flush waits until everything queued before the call is stored.
func (w *writer) flush(ctx context.Context) error {
	w.mu.Lock()
	want := w.enq
	w.mu.Unlock()
	for {
		w.mu.Lock()
		done, ch := w.done, w.doneCh
		w.mu.Unlock()
		if done >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *writer) take() []*work {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(w.queue), maxBatch)
	if n == 0 {
		return nil
	}
	for i, it := range w.queue[:n] {
		if it.cp != nil {
			n = i + 1
			break
		}
	}
	batch := make([]*work, n)
	copy(batch, w.queue)
	clear(w.queue[:n])
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	return batch
}

func (w *writer) loop() {
	defer close(w.exited)
	ctx := context.Background()
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	for {
		batch := w.take()
		if batch == nil {
			select {
			case <-w.wake:
				// Let the events that follow within batchDelay join this
				// transaction: one commit (one fsync on SQLite) for them
				// all instead of one per event. A crash loses nothing:
				// events after the stored position are evaluated again at
				// start.
				w.mu.Lock()
				full := len(w.queue) >= maxBatch
				w.mu.Unlock()
				if !full {
					t := time.NewTimer(batchDelay)
					select {
					case <-t.C:
					case <-w.stop:
					}
					t.Stop()
				}
				continue
			case <-prune.C:
				w.prune(ctx)
				continue
			case <-w.stop:
				return
			}
		}
		last := batch[len(batch)-1]
		if !w.retry(ctx, len(batch), func() error { return writeBatch(ctx, w.s.db, batch) }) {
			return
		}
		if d := w.s.d; d != nil {
			for _, it := range batch {
				for i := range it.pushes {
					d.publish(ctx, &it.pushes[i])
				}
			}
		}
		if last.cp != nil && !w.retry(ctx, len(last.cp.snaps), func() error {
			return w.s.db.Write(ctx, func(tx *storage.Tx) error { return writeCheckpoint(ctx, tx, last.cp) })
		}) {
			return
		}
		w.mu.Lock()
		w.done = last.seq
		close(w.doneCh)
		w.doneCh = make(chan struct{})
		w.mu.Unlock()
	}
}

// retry runs write until it succeeds, with a growing delay between tries;
// false when the writer stopped first.
func (w *writer) retry(ctx context.Context, items int, write func() error) bool {
	for attempt := 0; ; attempt++ {
		err := write()
		if err == nil {
			return true
		}
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"items": items, "retry_in": backoff.Delay(attempt).String()}).Error("push: store notifications")
		if !backoff.Wait(attempt, w.stop) {
			return false
		}
	}
}

// prune deletes old notifications (the counts of unread ones stay).
func (w *writer) prune(ctx context.Context) {
	before := time.Now().Add(-keepNotified).UnixMilli()
	res, err := w.s.db.Exec(ctx, `DELETE FROM push_notified WHERE ts < $1`, before)
	if err != nil {
		logging.From(ctx).WithError(err).Error("push: prune notifications")
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		logging.From(ctx).WithField("rows", n).Info("push: pruned notifications")
	}
}

// close writes what is queued (for up to a few seconds) and stops.
func (w *writer) close() {
	w.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.flush(ctx)
		cancel()
		close(w.stop)
		<-w.exited
	})
}

func writeBatch(ctx context.Context, db *storage.DB, batch []*work) error {
	for _, it := range batch {
		if len(it.rows) > 0 {
			return db.Write(ctx, func(tx *storage.Tx) error { return insertNotified(ctx, tx, batch) })
		}
	}
	return nil
}
