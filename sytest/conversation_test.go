package sytest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestConversation is the core journey: two users register and log in, one
// creates a private room and invites the other, who joins; both talk and see
// each other through /sync long-polling, typing and receipts arrive,
// /messages paginates back to the room's creation, and a resent txnId gives
// the same event, also after a restart.
func TestConversation(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		s.register(t, "alice")
		s.register(t, "bob")
		alice := s.login(t, "alice")
		bob := s.login(t, "bob")

		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Plans", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		bobSync := startSyncer(t, bob)
		bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		aliceSync := startSyncer(t, alice)
		aliceSync.waitFor(t, "bob's join", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return false
			}
			for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
				if ev.Type.Type == "m.room.member" && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "join" {
					return true
				}
			}
			return false
		})

		// Messages both ways, delivered by long-polls that are already waiting.
		sent, err := alice.SendText(ctx, room.RoomID, "hello bob")
		if err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor(t, "alice's message", func(r *mautrix.RespSync) bool { return timelineHas(r, room.RoomID, "hello bob") })
		if _, err := bob.SendText(ctx, room.RoomID, "hi alice"); err != nil {
			t.Fatal(err)
		}
		aliceSync.waitFor(t, "bob's message", func(r *mautrix.RespSync) bool { return timelineHas(r, room.RoomID, "hi alice") })

		// Typing.
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor(t, "alice typing", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return false
			}
			for _, ev := range jr.Ephemeral.Events {
				if ev.Type.Type == "m.typing" {
					ids, _ := ev.Content.Raw["user_ids"].([]any)
					for _, u := range ids {
						if u == alice.UserID.String() {
							return true
						}
					}
				}
			}
			return false
		})

		// Read receipt.
		if err := bob.SendReceipt(ctx, room.RoomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		aliceSync.waitFor(t, "bob's receipt", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return false
			}
			for _, ev := range jr.Ephemeral.Events {
				if ev.Type.Type == "m.receipt" {
					if byType, ok := ev.Content.Raw[sent.EventID.String()].(map[string]any); ok {
						if users, ok := byType["m.read"].(map[string]any); ok && users[bob.UserID.String()] != nil {
							return true
						}
					}
				}
			}
			return false
		})

		// A resent transaction ID gives the same event and stores nothing new.
		first, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "once"}, mautrix.ReqSendEvent{TransactionID: "txn-once"})
		if err != nil {
			t.Fatal(err)
		}
		again, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "once"}, mautrix.ReqSendEvent{TransactionID: "txn-once"})
		if err != nil || again.EventID != first.EventID {
			t.Fatalf("resent txn: %v %v, want %s", again, err, first.EventID)
		}

		// Enough messages to need several pages, then paginate back to the creation.
		for i := 0; i < 25; i++ {
			if _, err := bob.SendText(ctx, room.RoomID, fmt.Sprintf("message %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		var all []*event.Event
		from := ""
		for page := 0; page < 50; page++ {
			resp, err := alice.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, resp.Chunk...)
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(all) == 0 || all[len(all)-1].Type.Type != "m.room.create" {
			t.Fatalf("pagination did not reach the room's creation: %d events, last %v", len(all), all[len(all)-1].Type)
		}
		onces := 0
		for _, ev := range all {
			if b, _ := ev.Content.Raw["body"].(string); b == "once" {
				onces++
			}
		}
		if onces != 1 {
			t.Fatalf("the resent message is stored %d times", onces)
		}

		// After a restart the transaction ID is still remembered.
		s.restart()
		again, err = alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "once"}, mautrix.ReqSendEvent{TransactionID: "txn-once"})
		if err != nil || again.EventID != first.EventID {
			t.Fatalf("resent txn after restart: %v %v, want %s", again, err, first.EventID)
		}
	})
}
