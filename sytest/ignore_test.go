package sytest

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestIgnoredUsers: once alice ignores bob (m.ignored_user_list), bob's
// messages are left out of her /sync, /messages and /context, do not count
// as notifications, and his invites do not reach her; carol's do. Once she
// stops ignoring him, his new messages come again.
func TestIgnoredUsers(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")
		room := createRoom(t, carol, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, alice, room.String())
		join(t, bob, room.String())
		_, since := syncNow(t, alice, "")

		ignore := func(users ...id.UserID) {
			t.Helper()
			list := map[string]any{}
			for _, u := range users {
				list[u.String()] = map[string]any{}
			}
			if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": list}); err != nil {
				t.Fatal(err)
			}
		}
		ignore(bob.UserID)
		fromBob := sendText(t, bob, room, "from bob")
		fromCarol := sendText(t, carol, room, "from carol")
		other := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})

		r, since2 := syncNow(t, alice, since)
		jr := r.Rooms.Join[room]
		if jr == nil || !hasEventID(jr.Timeline.Events, fromCarol) || hasEventID(jr.Timeline.Events, fromBob) {
			t.Fatalf("alice's timeline %v: want carol's message and not bob's", jr)
		}
		if jr.UnreadNotifications == nil || jr.UnreadNotifications.NotificationCount != 1 {
			t.Errorf("notification count %+v: want 1 (carol's message only)", jr.UnreadNotifications)
		}
		if r.Rooms.Invite[other] != nil {
			t.Errorf("an invite from an ignored user reached alice")
		}
		if r, _ := syncNow(t, alice, ""); r.Rooms.Invite[other] != nil || hasEventID(r.Rooms.Join[room].Timeline.Events, fromBob) {
			t.Errorf("an initial sync shows the ignored user's invite or message")
		}
		msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		if hasEventID(msgs.Chunk, fromBob) || !hasEventID(msgs.Chunk, fromCarol) {
			t.Errorf("/messages: bob's message shown or carol's missing")
		}
		c, err := alice.Context(ctx, room, fromCarol, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if hasEventID(c.EventsBefore, fromBob) {
			t.Errorf("/context shows the ignored user's message")
		}
		// Carol's invite reaches her.
		other2 := createRoom(t, carol, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
		if r, _ := syncNow(t, alice, since2); r.Rooms.Invite[other2] == nil {
			t.Errorf("carol's invite did not reach alice")
		}

		// No longer ignored: bob's new messages come again.
		ignore()
		_, since3 := syncNow(t, alice, "")
		again := sendText(t, bob, room, "bob again")
		r, _ = syncNow(t, alice, since3)
		if jr := r.Rooms.Join[room]; jr == nil || !hasEventID(jr.Timeline.Events, again) {
			t.Errorf("bob's message after alice stopped ignoring him is missing")
		}
	})
}
