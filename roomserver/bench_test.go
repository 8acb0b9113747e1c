package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// BenchmarkSend measures persisting one message event (build, sign, auth,
// one transaction, publish) into a room with ten members.
func BenchmarkSend(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			db := storagetest.Open(b, d)
			h := newHarness(b, db)
			ctx := context.Background()
			var invites []string
			for i := 0; i < 9; i++ {
				invites = append(invites, fmt.Sprintf("@u%d:test", i))
			}
			res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "public_chat", Invite: invites})
			if err != nil {
				b.Fatal(err)
			}
			for _, u := range invites {
				if _, err := h.s.Join(ctx, u, res.RoomID, ""); err != nil {
					b.Fatal(err)
				}
			}
			content := json.RawMessage(`{"msgtype":"m.text","body":"benchmark message of ordinary length"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := h.s.Send(ctx, Sender{"@alice:test", "DEV"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: content, TxnID: fmt.Sprint(i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
