package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi"
)

// elementXState is the required_state Element X asks of its room list.
var elementXState = [][]string{{"m.room.name", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"},
	{"m.room.avatar", ""}, {"m.room.topic", ""}, {"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.join_rules", ""},
	{"m.room.history_visibility", ""}, {"m.room.canonical_alias", ""}, {"m.room.tombstone", ""}, {"m.room.pinned_events", ""}}

// BenchmarkSlidingInitial measures a warm first sliding sync response
// (a new connection) for a user in 500 rooms of 5 messages each asking
// for a window of 20 rooms, as Element X does at start.
func BenchmarkSlidingInitial(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w := newWorld(b, d)
			ctx := context.Background()
			for r := 0; r < 500; r++ {
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
			}
			w.settle()
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
