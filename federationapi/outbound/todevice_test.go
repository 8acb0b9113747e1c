package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func toDeviceContent(id string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"sender":"@alice:test","type":"m.room_key","message_id":%q,"messages":{"@bob:b.example":{"*":{}}}}`, id))
}

// toDeviceIDs are the message IDs of the to-device EDUs a destination
// received, in order.
func (r *recorder) toDeviceIDs(dest string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.edus[dest] {
		if e.Type != EDUToDevice {
			continue
		}
		var c struct {
			MessageID string `json:"message_id"`
		}
		_ = json.Unmarshal(e.Content, &c)
		out = append(out, c.MessageID)
	}
	return out
}

// TestToDeviceQueue: to-device EDUs wait for a destination that is down,
// across restarts and beyond EDUMaxAge (which drops the other EDUs), and
// then go out in the order they were queued, once each (one queued twice
// under its message ID is stored once), at most half a transaction's EDUs
// in each transaction.
func TestToDeviceQueue(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		const dest = "b.example"
		e.rec.fail(dest, errors.New("connection refused"))
		opts := Options{EDUMaxAge: 300 * time.Millisecond}
		q := e.queues(opts)
		if info := q.tdv.CachedInfo(); info.Config.MaxAge != 0 {
			t.Fatalf("to-device queue max age %s", info.Config.MaxAge)
		}
		const n = 120
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("m%03d", i)
			if err := q.QueueToDevice(ctx, dest, id, toDeviceContent(id)); err != nil {
				t.Fatal(err)
			}
			if i%10 == 0 {
				// A retried client request queues the same EDU again.
				if err := q.QueueToDevice(ctx, dest, id, toDeviceContent(id)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := q.QueueEDU(ctx, []string{dest}, gomatrixserverlib.EDU{Type: "m.receipt", Content: spec.RawJSON(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if err := q.QueueToDevice(ctx, local, "x", toDeviceContent("x")); err == nil {
			t.Fatal("a to-device EDU queued for ourselves")
		}
		waitFor(t, "a failed attempt", func() bool { return len(e.rec.attemptsOf(dest)) >= 1 })
		// Stopped while the destination is down: what was being sent goes
		// back to the queues. The receipt expires; the to-device EDUs stay.
		q.Close()
		waitFor(t, "the receipt to expire", func() bool {
			info, err := q.edus.Info(ctx)
			return err == nil && info.State.Msgs == 0
		})
		info, err := q.tdv.Info(ctx)
		if err != nil || info.State.Msgs != n {
			t.Fatalf("to-device queue holds %d, want %d (%v)", info.State.Msgs, n, err)
		}

		e.rec.fail(dest, nil)
		q2 := e.queues(opts)
		waitFor(t, "every to-device EDU", func() bool { return len(e.rec.toDeviceIDs(dest)) >= n })
		got := e.rec.toDeviceIDs(dest)
		if len(got) != n {
			t.Fatalf("%d to-device EDUs arrived, want %d", len(got), n)
		}
		for i, id := range got {
			if id != fmt.Sprintf("m%03d", i) {
				t.Fatalf("EDU %d is %s", i, id)
			}
		}
		e.rec.mu.Lock()
		for _, txn := range e.rec.txns[dest] {
			if len(txn.EDUs) > 50 {
				t.Errorf("a transaction with %d to-device EDUs", len(txn.EDUs))
			}
			for _, edu := range txn.EDUs {
				if edu.Type == "m.receipt" {
					t.Error("an expired receipt was sent")
				}
			}
		}
		e.rec.mu.Unlock()
		e.rec.check(t)

		// Live: the next one goes out at once.
		if err := q2.QueueToDevice(ctx, dest, "live", toDeviceContent("live")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the live EDU", func() bool { return len(e.rec.toDeviceIDs(dest)) == n+1 })
	})
}

// TestToDeviceQueueRefused: a destination the allowlist refuses loses
// its to-device queue with the rest.
func TestToDeviceQueueRefused(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		const dest = "refused.example"
		e.rec.fail(dest, errRefused)
		q := e.queues(Options{})
		for i := 0; i < 3; i++ {
			if err := q.QueueToDevice(ctx, dest, fmt.Sprint(i), toDeviceContent(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the queue dropped", func() bool {
			info, err := q.tdv.Info(ctx)
			return err == nil && info.State.Msgs == 0 && len(e.rec.attemptsOf(dest)) >= 1
		})
		if got := e.rec.toDeviceIDs(dest); len(got) != 0 {
			t.Fatalf("sent to a refused destination: %v", got)
		}
	})
}
