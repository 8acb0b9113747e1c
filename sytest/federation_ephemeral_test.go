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

// sharedRoom makes a room of a's user that b's user joins across the
// sites, and waits until a's side has the join.
func sharedRoom(t *testing.T, host *mautrix.Client, hostSite *site, guest *mautrix.Client, hostSync *syncer) id.RoomID {
	t.Helper()
	ctx := context.Background()
	room, err := host.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guest.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hostSite.name}}); err != nil {
		t.Fatalf("join across sites: %v", err)
	}
	hostSync.waitFor(t, fmt.Sprintf("%s's join", guest.UserID), func(r *mautrix.RespSync) bool {
		jr := r.Rooms.Join[room.RoomID]
		if jr == nil {
			return false
		}
		for _, ev := range jr.Timeline.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == guest.UserID.String() && ev.Content.Raw["membership"] == "join" {
				return true
			}
		}
		return false
	})
	return room.RoomID
}

// presenceOf finds the m.presence of a user in a sync response.
func presenceOf(r *mautrix.RespSync, user id.UserID) map[string]any {
	for _, ev := range r.Presence.Events {
		if ev.Sender == user {
			return ev.Content.Raw
		}
	}
	return nil
}

// typingIn is the room's m.typing user list in a sync response (ok false:
// the response has none for the room).
func typingIn(r *mautrix.RespSync, room id.RoomID) (users []string, ok bool) {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return nil, false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type == event.EphemeralEventTyping {
			list, _ := ev.Content.Raw["user_ids"].([]any)
			for _, u := range list {
				users = append(users, fmt.Sprint(u))
			}
			return users, true
		}
	}
	return nil, false
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// receiptOf finds the m.read receipt of a user on an event in a sync
// response.
func receiptOf(r *mautrix.RespSync, room id.RoomID, eventID id.EventID, user id.UserID) map[string]any {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return nil
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type != event.EphemeralEventReceipt {
			continue
		}
		byType, _ := ev.Content.Raw[eventID.String()].(map[string]any)
		byUser, _ := byType["m.read"].(map[string]any)
		if rc, ok := byUser[user.String()].(map[string]any); ok {
			return rc
		}
	}
	return nil
}

// TestFederationEphemeral: presence, typing (with its stop and its
// timeout) and threaded read receipts cross the two sites both ways;
// presence reaches only the users sharing a room.
func TestFederationEphemeral(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	carol := b.register(t, "carol") // shares no room with alice
	aliceSync := startSyncer(t, alice)
	room := sharedRoom(t, alice, a, bob, aliceSync)
	outer := t // syncers that outlive a subtest stop with the test

	t.Run("presence", func(t *testing.T) {
		// alice (no syncer now: a /sync would set her online again) sets
		// her presence; bob, in her room, sees it; carol does not.
		aliceSync.stopNow()
		bobSync, carolSync := startSyncer(t, bob), startSyncer(t, carol)
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "at my desk"}); err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor(t, "alice online at her desk", func(r *mautrix.RespSync) bool {
			p := presenceOf(r, alice.UserID)
			ago, _ := p["last_active_ago"].(float64)
			return p != nil && p["presence"] == "online" && p["status_msg"] == "at my desk" && p["currently_active"] == true && ago < 60000
		})
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor(t, "alice in a meeting", func(r *mautrix.RespSync) bool {
			p := presenceOf(r, alice.UserID)
			return p != nil && p["presence"] == "unavailable" && p["status_msg"] == "in a meeting" && p["currently_active"] == false
		})
		if p, err := bob.GetPresence(ctx, alice.UserID); err != nil || p.Presence != event.PresenceUnavailable || p.StatusMsg != "in a meeting" {
			t.Fatalf("alice's presence read by bob on site B: %+v %v", p, err)
		}
		if _, err := carol.GetPresence(ctx, alice.UserID); err == nil {
			t.Fatal("carol, sharing no room with alice, read her presence")
		}
		// carol's sync has seen her own presence at least (so it ran) and
		// never alice's.
		carolSync.waitFor(t, "carol's own presence", func(r *mautrix.RespSync) bool { return presenceOf(r, carol.UserID) != nil })
		carolSync.mu.Lock()
		for _, r := range carolSync.resps {
			if presenceOf(r, alice.UserID) != nil {
				carolSync.mu.Unlock()
				t.Fatal("carol saw alice's presence")
			}
		}
		carolSync.mu.Unlock()
		carolSync.stopNow()

		// The other way: bob stops syncing and sets his presence; alice,
		// syncing again, sees it.
		bobSync.stopNow()
		aliceSync = startSyncer(outer, alice)
		if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "away"}); err != nil {
			t.Fatal(err)
		}
		aliceSync.waitFor(t, "bob away", func(r *mautrix.RespSync) bool {
			p := presenceOf(r, bob.UserID)
			return p != nil && p["presence"] == "unavailable" && p["status_msg"] == "away"
		})
	})

	bobSync := startSyncer(t, bob)
	t.Run("typing", func(t *testing.T) {
		for _, c := range []struct {
			typist   *mautrix.Client
			watcher  *syncer
			whoTypes string
		}{{bob, aliceSync, "bob"}, {alice, bobSync, "alice"}} {
			user := c.typist.UserID.String()
			// Start, then stop.
			if _, err := c.typist.UserTyping(ctx, room, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			c.watcher.waitFor(t, c.whoTypes+" typing", func(r *mautrix.RespSync) bool {
				u, ok := typingIn(r, room)
				return ok && has(u, user)
			})
			if _, err := c.typist.UserTyping(ctx, room, false, 0); err != nil {
				t.Fatal(err)
			}
			c.watcher.waitFor(t, c.whoTypes+" stopping", func(r *mautrix.RespSync) bool {
				u, ok := typingIn(r, room)
				return ok && !has(u, user)
			})
			// Start with a short timeout and never stop: the typing ends
			// on the other site too.
			if _, err := c.typist.UserTyping(ctx, room, true, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			c.watcher.waitFor(t, c.whoTypes+" typing again", func(r *mautrix.RespSync) bool {
				u, ok := typingIn(r, room)
				return ok && has(u, user)
			})
			c.watcher.waitFor(t, c.whoTypes+"'s typing timing out", func(r *mautrix.RespSync) bool {
				u, ok := typingIn(r, room)
				return ok && !has(u, user)
			})
		}
	})

	t.Run("threaded receipts", func(t *testing.T) {
		root := sendText(t, alice, room, "thread root")
		resp, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in the thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		if err != nil {
			t.Fatal(err)
		}
		reply := resp.EventID
		bobSync.waitFor(t, "the root", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "thread root") })
		aliceSync.waitFor(t, "the reply", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "in the thread") })
		for _, c := range []struct {
			reader  *mautrix.Client
			watcher *syncer
		}{{bob, aliceSync}, {alice, bobSync}} {
			if err := c.reader.SendReceipt(ctx, room, reply, event.ReceiptTypeRead, mautrix.ReqSendReceipt{ThreadID: root.String()}); err != nil {
				t.Fatal(err)
			}
			c.watcher.waitFor(t, c.reader.UserID.String()+"'s threaded receipt", func(r *mautrix.RespSync) bool {
				rc := receiptOf(r, room, reply, c.reader.UserID)
				ts, _ := rc["ts"].(float64)
				return rc != nil && rc["thread_id"] == root.String() && ts > 0
			})
			// An unthreaded receipt too, kept beside the threaded one.
			if err := c.reader.SendReceipt(ctx, room, root, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			c.watcher.waitFor(t, c.reader.UserID.String()+"'s unthreaded receipt", func(r *mautrix.RespSync) bool {
				rc := receiptOf(r, room, root, c.reader.UserID)
				return rc != nil && rc["thread_id"] == nil
			})
		}
	})
}

// TestFederationPresenceDisabled: a site with presence disabled sends no
// presence and takes none; typing still crosses.
func TestFederationPresenceDisabled(t *testing.T) {
	a, b := startSites(t)
	b.stop()
	b.env = append(b.env, "HAVEN_PRESENCE_ENABLED=false")
	b.start()
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	aliceSync := startSyncer(t, alice)
	room := sharedRoom(t, alice, a, bob, aliceSync)

	// bob (on B, presence off) sets a presence; then types, which A sees:
	// EDUs of a destination go in order, so a presence sent before would
	// have arrived first.
	if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "never seen"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	aliceSync.waitFor(t, "bob typing", func(r *mautrix.RespSync) bool {
		u, ok := typingIn(r, room)
		return ok && has(u, bob.UserID.String())
	})
	aliceSync.mu.Lock()
	for _, r := range aliceSync.resps {
		if presenceOf(r, bob.UserID) != nil {
			aliceSync.mu.Unlock()
			t.Fatal("site B sent bob's presence with presence disabled")
		}
	}
	aliceSync.mu.Unlock()
	if p, err := alice.GetPresence(ctx, bob.UserID); err != nil || p.Presence != event.PresenceOffline {
		t.Fatalf("bob's presence on site A: %+v %v", p, err)
	}

	// alice's presence sent to B is not taken there: B's sync has no
	// presence, and its /presence does not know hers.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hello B"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	bobSync := startSyncer(t, bob)
	bobSync.waitFor(t, "alice typing", func(r *mautrix.RespSync) bool {
		u, ok := typingIn(r, room)
		return ok && has(u, alice.UserID.String())
	})
	if p, err := bob.GetPresence(ctx, alice.UserID); err == nil && p.StatusMsg == "hello B" {
		t.Fatalf("site B took alice's presence with presence disabled: %+v", p)
	}
}
