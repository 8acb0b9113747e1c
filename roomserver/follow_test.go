package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// roomWithHarness starts a roomserver on db and creates a room in it.
func roomWithHarness(t *testing.T, db *storage.DB) (*harness, string) {
	t.Helper()
	h := newHarness(t, db)
	res, err := h.s.CreateRoom(context.Background(), "@alice:test", CreateRoomRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return h, res.RoomID
}

func sendText(t *testing.T, h *harness, roomID, body, txn string) string {
	t.Helper()
	id, err := h.s.Send(context.Background(), Sender{"@alice:test", "D"}, SendRequest{RoomID: roomID, Type: "m.room.message",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`), TxnID: txn})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// failWrite takes a position for a message in the room whose transaction
// then fails, as a write that loses its database connection does.
func failWrite(t *testing.T, h *harness, roomID string) {
	t.Helper()
	ctx := context.Background()
	err := h.s.withRoom(ctx, roomID, func(r *room) error {
		d := newDraft(r)
		proto := &gomatrixserverlib.ProtoEvent{SenderID: "@alice:test", Type: "m.room.message", Content: []byte(`{"body":"lost"}`)}
		if _, err := h.s.add(d, proto, eventMeta{}); err != nil {
			return err
		}
		_, err := h.s.commit(ctx, d, nil, func(context.Context, *storage.Tx) error { return errors.New("connection lost") })
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "connection lost") {
		t.Fatalf("the failing write answered %v", err)
	}
}

// TestEveryPositionIsPublished: a retried transaction takes no position; a
// failed write's position is published as a skip, so the notices stay
// consecutive and the next event's is not held back.
func TestEveryPositionIsPublished(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		first := sendText(t, h, roomID, "one", "t1")
		before := h.s.Position()
		if again := sendText(t, h, roomID, "one", "t1"); again != first {
			t.Fatalf("retry answered %s, want %s", again, first)
		}
		if h.s.Position() != before {
			t.Fatalf("a retried transaction took a position: %d, was %d", h.s.Position(), before)
		}
		failWrite(t, h, roomID)
		if h.s.Position() != before+1 {
			t.Fatalf("the failed write's position is not visible: %d, want %d", h.s.Position(), before+1)
		}
		last := sendText(t, h, roomID, "two", "t2")
		ns := h.waitNotices(t, int(before)+2)
		for i := 1; i < len(ns); i++ {
			if ns[i].Pos != ns[i-1].Pos+1 {
				t.Fatalf("notice positions not consecutive: %d then %d", ns[i-1].Pos, ns[i].Pos)
			}
		}
		skip, next := ns[len(ns)-2], ns[len(ns)-1]
		if !skip.Skip || skip.Pos != before+1 || skip.EventID != "" {
			t.Fatalf("want the skip of %d, got %+v", before+1, skip)
		}
		if next.EventID != last || next.Skip {
			t.Fatalf("last notice %+v, want %s", next, last)
		}
	})
}

// TestFollowerReadsHolesFromTheDatabase: a follower told of a position past
// a hole hands on what the hole holds first, from the database, in order:
// events as their notices were (a redaction with its target's redacted
// JSON), a failed write's position as a skip.
func TestFollowerReadsHolesFromTheDatabase(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		start := h.s.Position()
		target := sendText(t, h, roomID, "secret", "a")
		failWrite(t, h, roomID)
		redaction, err := h.s.Redact(ctx, Sender{"@alice:test", "D"}, roomID, target, "oops", "r")
		if err != nil {
			t.Fatal(err)
		}
		failWrite(t, h, roomID)
		failWrite(t, h, roomID)
		sendText(t, h, roomID, "after", "b")
		live := h.waitNotices(t, int(h.s.Position()))

		var got []Notice
		f := NewFollower(db, start, func(_ context.Context, n *Notice) { got = append(got, *n) })
		defer f.Close()
		f.Deliver(ctx, &live[len(live)-1])
		f.Deliver(ctx, &live[len(live)-2]) // old: ignored

		var desc []string
		for _, n := range got {
			switch {
			case n.Skip:
				desc = append(desc, "skip")
			default:
				desc = append(desc, n.Type)
			}
		}
		want := "m.room.message skip m.room.redaction skip m.room.message"
		if strings.Join(desc, " ") != want {
			t.Fatalf("handed on %v, want %s", desc, want)
		}
		if got[len(got)-1].Pos != h.s.Position() || f.Last() != h.s.Position() {
			t.Fatalf("follower at %d, stream at %d", f.Last(), h.s.Position())
		}
		if got[1].Pos != start+2 || got[3].Pos != start+5 {
			t.Fatalf("skips at %d and %d, want %d and %d (the last of each run)", got[1].Pos, got[3].Pos, start+2, start+5)
		}
		red := got[2]
		if red.EventID != redaction || red.Redacts != target || !strings.Contains(string(red.RedactedJSON), `"content":{}`) || strings.Contains(string(red.RedactedJSON), "secret") {
			t.Fatalf("replayed redaction %s redacts %q with %s", red.EventID, red.Redacts, red.RedactedJSON)
		}
	})
}

// TestFollowerConcurrentDeliveries: notices delivered from two goroutines
// at once (the bus's and a start-up queue's) are handed on once each, in
// position order.
func TestFollowerConcurrentDeliveries(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		for i := 0; i < 20; i++ {
			sendText(t, h, roomID, "m", fmt.Sprint(i))
		}
		live := h.waitNotices(t, int(h.s.Position()))
		var mu sync.Mutex
		var got []int64
		f := NewFollower(db, 0, func(_ context.Context, n *Notice) {
			mu.Lock()
			got = append(got, n.Pos)
			mu.Unlock()
		})
		defer f.Close()
		var wg sync.WaitGroup
		for _, order := range [][]Notice{live, reversed(live)} {
			wg.Add(1)
			go func(ns []Notice) {
				defer wg.Done()
				for i := range ns {
					f.Deliver(ctx, &ns[i])
				}
			}(order)
		}
		wg.Wait()
		if len(got) != len(live) {
			t.Fatalf("handed on %d positions, want %d: %v", len(got), len(live), got)
		}
		for i, p := range got {
			if p != int64(i+1) {
				t.Fatalf("position %d handed on at %d: %v", p, i, got)
			}
		}
	})
}

func reversed(ns []Notice) []Notice {
	out := make([]Notice, len(ns))
	for i, n := range ns {
		out[len(ns)-1-i] = n
	}
	return out
}

// TestRetriedTransactionsWithoutQueries: once a device has sent, its
// retries are recognised without asking the database; after a restart,
// and for a retry older than the window, the answer is still the first
// event.
func TestRetriedTransactionsWithoutQueries(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		first := sendText(t, h, roomID, "one", "t1")
		sendText(t, h, roomID, "two", "t2")
		// The search indexer queries on its own after commits: stop it, so
		// that the count below is the retry's alone.
		h.s.Close()
		before, pos := storage.Queries.Load(), h.s.Position()
		if again := sendText(t, h, roomID, "one", "t1"); again != first {
			t.Fatalf("retry answered %s, want %s", again, first)
		}
		if n := storage.Queries.Load() - before; n != 0 || h.s.Position() != pos {
			t.Fatalf("a retry ran %d queries and moved the position %d → %d", n, pos, h.s.Position())
		}
		// A new process loads the device's recent transaction IDs once.
		h2 := newHarness(t, db)
		if again := sendText(t, h2, roomID, "one", "t1"); again != first {
			t.Fatalf("retry after a restart answered %s, want %s", again, first)
		}
		// A retry from beyond the window is caught when the event is
		// inserted; the answer is the same.
		defer func(f func() time.Time) { nowTime = f }(nowTime)
		nowTime = func() time.Time { return time.Now().Add(2 * txnWindow) }
		h3 := newHarness(t, db)
		if again := sendText(t, h3, roomID, "one", "t1"); again != first {
			t.Fatalf("retry after the window answered %s, want %s", again, first)
		}
		if next := sendText(t, h3, roomID, "three", "t3"); next == first {
			t.Fatal("a new transaction answered the old event")
		}
	})
}
