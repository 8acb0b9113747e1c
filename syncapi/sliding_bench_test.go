package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi"
)

// elementXState is the required_state Element X asks of its room list.
var elementXState = [][]string{{"m.room.name", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"},
	{"m.room.avatar", ""}, {"m.room.topic", ""}, {"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.join_rules", ""},
	{"m.room.history_visibility", ""}, {"m.room.canonical_alias", ""}, {"m.room.tombstone", ""}, {"m.room.pinned_events", ""}}

// slidingWorld is a world where bob is in n rooms of 5 messages each.
func slidingWorld(b *testing.B, d storage.Dialect, n int) (*world, []string) {
	w := newWorld(b, d)
	ctx := context.Background()
	var ids []string
	for r := 0; r < n; r++ {
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat", Name: ptr(fmt.Sprint("Room ", r))})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			b.Fatal(err)
		}
		for m := 0; m < 5; m++ {
			sender := []string{"@alice:test", "@bob:test"}[m%2]
			if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: sender, DeviceID: "D"}, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`), TxnID: fmt.Sprint(r, "-", m)}); err != nil {
				b.Fatal(err)
			}
		}
		ids = append(ids, res.RoomID)
	}
	w.settle()
	return w, ids
}

// BenchmarkSlidingIncremental measures one message into one of bob's 500
// rooms and the incremental sliding sync response (window of 20) that
// delivers it.
func BenchmarkSlidingIncremental(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w, rooms := slidingWorld(b, d, 500)
			ctx := context.Background()
			req := syncapi.SlidingRequest{UserID: "@bob:test", DeviceID: "D", Body: syncapi.SlidingBody{ConnID: "main", Lists: map[string]syncapi.SlidingList{"all_rooms": {
				SlidingRoomSettings: syncapi.SlidingRoomSettings{TimelineLimit: 1, RequiredState: elementXState},
				Ranges:              [][]int{{0, 19}},
			}}}}
			r, _, err := w.sync.StartSliding(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			content := json.RawMessage(`{"msgtype":"m.text","body":"a message of ordinary length"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				room := rooms[i%len(rooms)]
				if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: room, Type: "m.room.message", Content: content, TxnID: fmt.Sprint("b", i)}); err != nil {
					b.Fatal(err)
				}
				w.settle()
				req.Pos = r.Pos
				next, waiter, err := w.sync.StartSliding(ctx, req)
				if err != nil || waiter != nil {
					b.Fatalf("no answer at once: %v", err)
				}
				if next.Rooms[room] == nil {
					b.Fatalf("the room is not in the response")
				}
				if _, err := json.Marshal(next); err != nil {
					b.Fatal(err)
				}
				r = next
			}
		})
	}
}

// BenchmarkSlidingInitial measures a warm first sliding sync response
// (a new connection) for a user in 500 rooms of 5 messages each asking
// for a window of 20 rooms, as Element X does at start.
func BenchmarkSlidingInitial(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w, _ := slidingWorld(b, d, 500)
			ctx := context.Background()
			body := syncapi.SlidingBody{ConnID: "main", Lists: map[string]syncapi.SlidingList{"all_rooms": {
				SlidingRoomSettings: syncapi.SlidingRoomSettings{TimelineLimit: 1, RequiredState: elementXState},
				Ranges:              [][]int{{0, 19}},
				Filters:             &syncapi.SlidingFilters{NotRoomTypes: []*string{ptr("m.space")}},
			}}}
			req := syncapi.SlidingRequest{UserID: "@bob:test", DeviceID: "D", Body: body}
			run := func() {
				r, _, err := w.sync.StartSliding(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Rooms) != 20 {
					b.Fatalf("%d rooms", len(r.Rooms))
				}
				if _, err := json.Marshal(r); err != nil {
					b.Fatal(err)
				}
			}
			run()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run()
			}
		})
	}
}

// BenchmarkSlidingConnHeap measures the heap an idle sliding sync
// connection holds: its three snapshots, after an initial response (a
// window of 20 of bob's 40 rooms, Element X's required_state with $LAZY)
// and two incremental ones. It reports bytes per connection (the heap in
// use after a GC, before and after making the connections).
func BenchmarkSlidingConnHeap(b *testing.B) {
	w, rooms := slidingWorld(b, storage.SQLite, 40)
	ctx := context.Background()
	const conns = 200
	body := func(conn string) syncapi.SlidingBody {
		return syncapi.SlidingBody{ConnID: conn, Lists: map[string]syncapi.SlidingList{"all_rooms": {
			SlidingRoomSettings: syncapi.SlidingRoomSettings{TimelineLimit: 5, RequiredState: elementXState},
			Ranges:              [][]int{{0, 19}},
		}}}
	}
	content := json.RawMessage(`{"msgtype":"m.text","body":"hello"}`)
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		pos := make([]string, conns)
		for c := range pos {
			r, _, err := w.sync.StartSliding(ctx, syncapi.SlidingRequest{UserID: "@bob:test", DeviceID: "D", Body: body(fmt.Sprint("c", i, "-", c))})
			if err != nil {
				b.Fatal(err)
			}
			pos[c] = r.Pos
		}
		for poll := 0; poll < 2; poll++ {
			if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: rooms[len(rooms)-1], Type: "m.room.message",
				Content: content, TxnID: fmt.Sprint("heap", i, "-", poll)}); err != nil {
				b.Fatal(err)
			}
			w.settle()
			for c := range pos {
				r, waiter, err := w.sync.StartSliding(ctx, syncapi.SlidingRequest{UserID: "@bob:test", DeviceID: "D", Pos: pos[c], Body: body(fmt.Sprint("c", i, "-", c))})
				if err != nil || waiter != nil {
					b.Fatalf("no answer at once: %v", err)
				}
				pos[c] = r.Pos
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/conns, "heap-B/conn")
	}
}
