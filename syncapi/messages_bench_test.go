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

// BenchmarkMessages measures /messages backwards, 20 events a page: the
// newest page of a room of 500 messages, and a page further back from the
// previous page's end token.
func BenchmarkMessages(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w := newWorld(b, d)
			ctx := context.Background()
			res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			for m := 0; m < 500; m++ {
				if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message",
					Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`), TxnID: fmt.Sprint(m)}); err != nil {
					b.Fatal(err)
				}
			}
			w.settle()
			first, err := w.sync.Messages(ctx, syncapi.MessagesRequest{UserID: "@alice:test", DeviceID: "D", RoomID: res.RoomID, Dir: "b", Limit: 20})
			if err != nil || first.End == "" {
				b.Fatal(first, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				from := ""
				if i%2 == 1 {
					from = first.End
				}
				r, err := w.sync.Messages(ctx, syncapi.MessagesRequest{UserID: "@alice:test", DeviceID: "D", RoomID: res.RoomID, Dir: "b", From: from, Limit: 20})
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Chunk) != 20 {
					b.Fatalf("%d events", len(r.Chunk))
				}
			}
		})
	}
}
