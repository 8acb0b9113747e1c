package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
)

// TestSlidingWake: a sliding sync long-poll builds (and answers) for an
// event in a room of its window, not for one outside it that cannot
// move the room into the window (a state event, a reaction); a message
// outside it moves the room in and is answered.
func TestSlidingWake(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		alice := roomserver.Sender{UserID: "@alice:test", DeviceID: "A"}
		rooms := map[string]string{}
		var outMsg string
		for _, name := range []string{"out", "in"} { // "in" last: the newest, the window's one room
			res, err := w.rooms.CreateRoom(ctx, alice.UserID, roomserver.CreateRoomRequest{Preset: "public_chat", Name: ptr(name)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			id, err := w.rooms.Send(ctx, alice, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`), TxnID: name})
			if err != nil {
				t.Fatal(err)
			}
			if name == "out" {
				outMsg = id
			}
			rooms[name] = res.RoomID
		}
		w.settle()
		req := syncapi.SlidingRequest{UserID: "@bob:test", DeviceID: "B", Timeout: time.Hour, Body: syncapi.SlidingBody{ConnID: "c", Lists: map[string]syncapi.SlidingList{"all": {
			SlidingRoomSettings: syncapi.SlidingRoomSettings{TimelineLimit: 1, RequiredState: [][]string{{"m.room.topic", ""}}},
			Ranges:              [][]int{{0, 0}},
		}}}}
		first, _, err := w.sync.StartSliding(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if first.Rooms[rooms["in"]] == nil || first.Rooms[rooms["out"]] != nil {
			t.Fatalf("first answer: rooms %v, want only %s", mapKeys(first.Rooms), rooms["in"])
		}
		req.Pos = first.Pos
		// poll starts a long-poll from pos; it answers at once or returns
		// a waiter, which it closes (no wait is needed: the waiter is
		// registered, the question is whether it found anything).
		poll := func(what string) (*syncapi.SlidingResponse, int64) {
			t.Helper()
			b0 := syncapi.SlidingBuilds(w.sync)
			resp, waiter, err := w.sync.StartSliding(ctx, req)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if waiter != nil {
				done, cancel := context.WithCancel(ctx)
				cancel()
				_, _ = waiter.Wait(done)
			}
			return resp, syncapi.SlidingBuilds(w.sync) - b0
		}

		send := func(room, typ string, stateKey *string, content string) {
			t.Helper()
			txn := ""
			if stateKey == nil {
				txn = fmt.Sprint(typ, room, time.Now().UnixNano())
			}
			if _, err := w.rooms.Send(ctx, alice, roomserver.SendRequest{RoomID: room, Type: typ, StateKey: stateKey, Content: json.RawMessage(content), TxnID: txn}); err != nil {
				t.Fatal(err)
			}
			w.settle()
		}
		// Outside the window: a topic and a reaction wake nothing.
		send(rooms["out"], "m.room.topic", ptr(""), `{"topic":"elsewhere"}`)
		send(rooms["out"], "m.reaction", nil, `{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+outMsg+`","key":"👍"}}`)
		if resp, builds := poll("outside"); resp != nil || builds != 0 {
			t.Fatalf("events outside the window: answer %v, %d builds; want none", resp != nil, builds)
		}
		// Inside the window: a topic is answered at once.
		send(rooms["in"], "m.room.topic", ptr(""), `{"topic":"here"}`)
		resp, builds := poll("inside")
		if resp == nil || resp.Rooms[rooms["in"]] == nil || resp.Rooms[rooms["out"]] != nil || builds != 1 {
			t.Fatalf("topic inside the window: answer %v (rooms %v), %d builds; want %s at once", resp != nil, roomsOf(resp), builds, rooms["in"])
		}
		req.Pos = resp.Pos
		// A message outside moves its room into the window.
		send(rooms["out"], "m.room.message", nil, `{"msgtype":"m.text","body":"up"}`)
		resp, _ = poll("message outside")
		if resp == nil || resp.Rooms[rooms["out"]] == nil {
			t.Fatalf("message outside the window: answer %v (rooms %v); want %s", resp != nil, roomsOf(resp), rooms["out"])
		}
	})
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func roomsOf(r *syncapi.SlidingResponse) []string {
	if r == nil {
		return nil
	}
	return mapKeys(r.Rooms)
}
