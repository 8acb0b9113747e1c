package syncapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi"
)

// TestIdleSyncRunsNoQuery: a waiting /sync costs no database query, and it
// wakes as soon as a message for its user commits.
func TestIdleSyncRunsNoQuery(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		w.settle()
		first, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Opts: lazyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		// A message in a room bob is not in must not wake him or cost him a query.
		other, err := w.rooms.CreateRoom(ctx, "@carol:test", roomserver.CreateRoomRequest{})
		if err != nil {
			t.Fatal(err)
		}
		w.settle()
		before := storage.Queries.Load()
		resp, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Since: first.NextBatch, Timeout: 300 * time.Millisecond, Opts: lazyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		if n := storage.Queries.Load() - before; n != 0 {
			t.Fatalf("an idle sync ran %d queries", n)
		}
		if len(resp.Rooms.Join) != 0 || resp.Rooms.Join[other.RoomID] != nil {
			t.Fatalf("idle sync returned rooms: %v", resp.Rooms.Join)
		}

		// Now wait again, and send a message while waiting.
		done := make(chan *syncapi.Response, 1)
		go func() {
			r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Since: resp.NextBatch, Timeout: time.Minute, Opts: lazyOpts()})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		for w.sync.Notifier().Current().Events == 0 || !w.sync.Notifier().HasListener("@bob:test") {
			time.Sleep(time.Millisecond)
		}
		id, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "A"}, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"wake up"}`), TxnID: "1"})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			jr := r.Rooms.Join[res.RoomID]
			if jr == nil || len(jr.Timeline.Events) != 1 || !json.Valid(jr.Timeline.Events[0]) {
				t.Fatalf("woken sync: %+v", r.Rooms.Join)
			}
			var ev struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal(jr.Timeline.Events[0], &ev)
			if ev.EventID != id {
				t.Fatalf("got %s want %s", ev.EventID, id)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the waiting sync did not wake")
		}
	})
}
