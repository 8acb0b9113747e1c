package syncapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
)

// losingBus loses room event notices while lose is set, as a bus that drops
// messages does.
type losingBus struct {
	*bus.Bus
	lose atomic.Bool
	lost atomic.Int64
}

func (b *losingBus) Publish(topic string, data []byte) error {
	if topic == roomserver.Topic && b.lose.Load() {
		b.lost.Add(1)
		return nil
	}
	return b.Bus.Publish(topic, data)
}

// TestLostNoticeIsReadFromTheDatabase: when the bus loses the notice of a
// join, the sync engine reads it from the database when the next notice
// shows the hole: the joined user's waiting /sync wakes with the room, and
// later messages in it wake them too.
func TestLostNoticeIsReadFromTheDatabase(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		var lb *losingBus
		w, _ := worldWith(t, db, false, func(b *bus.Bus) publisher {
			lb = &losingBus{Bus: b}
			return lb
		})
		ctx := context.Background()
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		w.settle()
		first, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Opts: syncapi.DefaultOpts()})
		if err != nil {
			t.Fatal(err)
		}
		lb.lose.Store(true)
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		lb.lose.Store(false)
		if lb.lost.Load() != 1 {
			t.Fatalf("lost %d notices", lb.lost.Load())
		}
		send := func(body string) {
			t.Helper()
			if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "A"}, roomserver.SendRequest{RoomID: res.RoomID,
				Type: "m.room.message", Content: json.RawMessage(`{"body":"` + body + `"}`), TxnID: body}); err != nil {
				t.Fatal(err)
			}
		}
		send("after the lost notice")
		resp, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Since: first.NextBatch, Timeout: time.Minute, Opts: syncapi.DefaultOpts()})
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[res.RoomID]
		if jr == nil {
			t.Fatalf("bob's sync lacks the room he joined: %+v", resp.Rooms)
		}
		all := string(mustJSON(t, jr))
		if !strings.Contains(all, `"membership":"join"`) || !strings.Contains(all, "after the lost notice") {
			t.Fatalf("the room lacks bob's join or the message: %s", all)
		}
		// bob is in the room's index now: the next message wakes him.
		done := make(chan *syncapi.Response, 1)
		go func() {
			r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Since: resp.NextBatch, Timeout: time.Minute, Opts: syncapi.DefaultOpts()})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		for !w.sync.Notifier().HasListener("@bob:test") {
			time.Sleep(time.Millisecond)
		}
		send("wake up")
		select {
		case r := <-done:
			if r == nil || r.Rooms.Join[res.RoomID] == nil || !strings.Contains(string(mustJSON(t, r.Rooms.Join[res.RoomID])), "wake up") {
				t.Fatalf("woken sync: %+v", r)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the next message did not wake bob")
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
