package push

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// notifRow is one notification of an event for one user.
type notifRow struct {
	user string
	act  *Actions
}

// readMark is a receipt to apply to stored notifications.
type readMark struct {
	user, room, thread string
	pos                int64
}

// work is what one evaluated event (or receipt) changes in the database.
type work struct {
	pos    int64 // the event's position; 0 for a receipt
	ev     *Event
	rows   []notifRow
	reads  []readMark
	pushes []pushJob
	seq    int64
}

// writer stores notifications off the hot path: evaluation queues work
// (never blocking), one goroutine writes it in batches, each batch one
// transaction (each event's notifications in one statement), then queues
// the batch's pushes.
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

// Read notifications older than keepRead are deleted every pruneEvery
// (unread ones stay: they are the counts).
const (
	keepRead   = 30 * 24 * time.Hour
	pruneEvery = 6 * time.Hour
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
	log := logging.From(ctx)
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
		for attempt := 0; ; attempt++ {
			err := writeBatch(ctx, w.s.db, batch)
			if err == nil {
				break
			}
			delay := min(30*time.Second, 100*time.Millisecond<<min(attempt, 9))
			log.WithError(err).WithFields(logrus.Fields{"items": len(batch), "retry_in": delay.String()}).Error("push: store notifications")
			select {
			case <-time.After(delay):
			case <-w.stop:
				return
			}
		}
		w.mu.Lock()
		w.done = batch[len(batch)-1].seq
		close(w.doneCh)
		w.doneCh = make(chan struct{})
		w.mu.Unlock()
		if d := w.s.d; d != nil {
			for _, it := range batch {
				for i := range it.pushes {
					d.publish(ctx, &it.pushes[i])
				}
			}
		}
	}
}

// prune deletes old read notifications.
func (w *writer) prune(ctx context.Context) {
	before := time.Now().Add(-keepRead).UnixMilli()
	res, err := w.s.db.Exec(ctx, `DELETE FROM notifications WHERE is_read AND ts < $1`, before)
	if err != nil {
		logging.From(ctx).WithError(err).Error("push: prune read notifications")
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		logging.From(ctx).WithField("rows", n).Info("push: pruned read notifications")
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
	return db.Write(ctx, func(tx *storage.Tx) error {
		var top int64
		for _, it := range batch {
			if len(it.rows) > 0 {
				if err := insertNotifications(ctx, tx, it); err != nil {
					return err
				}
			}
			for _, r := range it.reads {
				if err := markRead(ctx, tx, r); err != nil {
					return err
				}
			}
			top = max(top, it.pos)
		}
		if top > 0 {
			if _, err := tx.Exec(ctx, upsertPosition, top); err != nil {
				return err
			}
		}
		return nil
	})
}
