package outbound

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// gate is a Sender that, while closed, holds every transaction until it
// opens or the attempt's context ends.
type gate struct {
	*recorder
	mu      sync.Mutex
	ch      chan struct{}
	waiting int
}

func (g *gate) SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error) {
	g.mu.Lock()
	ch := g.ch
	if ch != nil {
		g.waiting++
	}
	g.mu.Unlock()
	if ch != nil {
		defer func() {
			g.mu.Lock()
			g.waiting--
			g.mu.Unlock()
		}()
		select {
		case <-ch:
		case <-ctx.Done():
			return fclient.RespSend{}, ctx.Err()
		}
	}
	return g.recorder.SendTransaction(ctx, t)
}

func (g *gate) close() {
	g.mu.Lock()
	g.ch = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
	g.mu.Unlock()
}

func (g *gate) held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func isDirect(q *Queues, dest string) bool {
	q.mu.Lock()
	w := q.workers[dest]
	q.mu.Unlock()
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.direct
}

func storedPosition(t *testing.T, db *storage.DB) int64 {
	t.Helper()
	var pos int64
	if err := db.QueryRow(context.Background(), `SELECT pos FROM federation_outbound_positions WHERE name = $1`, positionName).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return pos
}

// TestDirectHoldsPosition: an event handed to a caught-up destination in
// memory keeps the stored feed position before it until the destination
// takes it; stopped before that, the next start sends it.
func TestDirectHoldsPosition(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		roomID := e.room("@r1:a.example")
		quiet := e.room()
		g := &gate{recorder: e.rec}
		q := e.queues(Options{Sender: g})
		want := []string{e.say(roomID, "m0")}
		waitFor(t, "m0", func() bool { return len(e.rec.eventsOf("a.example")) == 1 })
		waitFor(t, "the direct path", func() bool { return isDirect(q, "a.example") })
		g.close()
		want = append(want, e.say(roomID, "m1"))
		waitFor(t, "m1's transaction in flight", func() bool { return g.held() == 1 })
		m1, err := e.rs.GetEvent(ctx, want[1])
		if err != nil {
			t.Fatal(err)
		}
		// The feed moves on (a room without other servers) but stores no
		// position past m1.
		e.say(quiet, "q0")
		waitFor(t, "the position before m1", func() bool {
			pos := storedPosition(t, db)
			if pos >= m1.Pos {
				t.Fatalf("stored position %d passes m1 (%d), not yet taken", pos, m1.Pos)
			}
			return pos == m1.Pos-1
		})
		if n := queued(t, q, "a.example"); n != 0 {
			t.Fatalf("%d events in JetStream; want m1 in memory only", n)
		}
		q.Close()
		if pos := storedPosition(t, db); pos >= m1.Pos {
			t.Fatalf("stored position %d passes m1 (%d) after a stop", pos, m1.Pos)
		}
		g.open()
		e.queues(Options{})
		want = append(want, e.say(roomID, "m2"))
		waitFor(t, "m1 and m2", func() bool { return len(e.rec.eventsOf("a.example")) >= len(want) })
		if got := e.rec.eventsOf("a.example"); !slices.Equal(got, want) {
			t.Fatalf("a.example got %v\nwant %v", got, want)
		}
		e.rec.check(t)
	})
}

// TestDirectSpill: when a transaction of events handed over in memory
// fails, they go into the durable queue (the position moves on), the
// transaction is retried under its ID, and once it is taken their queued
// copies are not sent again.
func TestDirectSpill(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.room("@r1:a.example")
		q := e.queues(Options{RetryBase: 20 * time.Millisecond, RetryMax: 20 * time.Millisecond})
		want := []string{e.say(roomID, "m0")}
		waitFor(t, "m0", func() bool { return len(e.rec.eventsOf("a.example")) == 1 })
		waitFor(t, "the direct path", func() bool { return isDirect(q, "a.example") })
		e.rec.fail("a.example", errors.New("connection refused"))
		want = append(want, e.say(roomID, "m1"))
		waitFor(t, "m1 in the queue", func() bool { return queued(t, q, "a.example") == 1 })
		if isDirect(q, "a.example") {
			t.Fatal("still on the direct path after a failure")
		}
		want = append(want, e.say(roomID, "m2"))
		waitFor(t, "m2 in the queue", func() bool { return queued(t, q, "a.example") == 2 })
		waitFor(t, "retries", func() bool { return len(e.rec.attemptsOf("a.example")) >= 3 })
		e.rec.fail("a.example", nil)
		q.Retry("a.example")
		waitFor(t, "m1 and m2", func() bool { return len(e.rec.eventsOf("a.example")) >= len(want) })
		waitFor(t, "the queue to be empty", func() bool { return queued(t, q, "a.example") == 0 })
		waitFor(t, "the direct path again", func() bool { return isDirect(q, "a.example") })
		want = append(want, e.say(roomID, "m3"))
		waitFor(t, "m3", func() bool { return len(e.rec.eventsOf("a.example")) >= len(want) })
		if got := e.rec.eventsOf("a.example"); !slices.Equal(got, want) {
			t.Fatalf("a.example got %v\nwant %v", got, want)
		}
		e.rec.check(t)
	})
}
