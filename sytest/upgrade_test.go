package sytest

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestRoomUpgrade: alice upgrades a room; bob sees the tombstone, finds the
// new room through the predecessor and the moved alias, with the state copied,
// and can no longer speak in the old room.
func TestRoomUpgrade(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		old := createRoom(t, alice, &mautrix.ReqCreateRoom{
			Preset: "public_chat", RoomVersion: "10", Name: "Project", Topic: "Plans", RoomAliasName: "project",
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}},
		})
		join(t, bob, "#project:localhost")
		sendText(t, alice, old, "before the upgrade")
		_, since := syncNow(t, bob, "")

		s.do(t, "POST", v3+"/rooms/"+p(old)+"/upgrade", alice.AccessToken, map[string]any{"new_version": "999"}).expectErr(t, 400, "M_UNSUPPORTED_ROOM_VERSION")
		s.do(t, "POST", v3+"/rooms/"+p(old)+"/upgrade", bob.AccessToken, map[string]any{"new_version": "11"}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+p(old)+"/upgrade", alice.AccessToken, `{"new_version": 11}`).expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "POST", v3+"/rooms/%21a%00:localhost/upgrade", alice.AccessToken, map[string]any{"new_version": "11"}).expectErr(t, 400, "M_INVALID_PARAM")
		r := s.do(t, "POST", v3+"/rooms/"+p(old)+"/upgrade", alice.AccessToken, map[string]any{"new_version": "11"}).expect(t, 200)
		newRoom := id.RoomID(r.str("replacement_room"))
		if newRoom == "" || newRoom == old {
			t.Fatalf("upgrade answer: %s", r)
		}

		// bob's sync shows the tombstone pointing to the new room.
		syncUntil(t, bob, since, "the tombstone", func(resp *mautrix.RespSync) bool {
			jr := resp.Rooms.Join[old]
			if jr == nil {
				return false
			}
			for _, ev := range append(jr.Timeline.Events, jr.State.Events...) {
				if ev.Type.Type == "m.room.tombstone" && ev.Content.Raw["replacement_room"] == newRoom.String() {
					return true
				}
			}
			return false
		})
		// The new room names its predecessor and carries the old room's state.
		create := s.do(t, "GET", v3+"/rooms/"+p(newRoom)+"/state/m.room.create", alice.AccessToken, nil).expect(t, 200)
		pred, _ := create.JSON["predecessor"].(map[string]any)
		if pred["room_id"] != old.String() || create.str("room_version") != "11" {
			t.Fatalf("new room's create content: %s", create)
		}
		for typ, field := range map[string]string{"m.room.name": "name", "m.room.topic": "topic", "m.room.encryption": "algorithm", "m.room.join_rules": "join_rule"} {
			was := s.do(t, "GET", v3+"/rooms/"+p(old)+"/state/"+typ, alice.AccessToken, nil).expect(t, 200)
			now := s.do(t, "GET", v3+"/rooms/"+p(newRoom)+"/state/"+typ, alice.AccessToken, nil).expect(t, 200)
			if was.str(field) == "" || was.str(field) != now.str(field) {
				t.Errorf("%s not copied: old %s, new %s", typ, was, now)
			}
		}
		// The alias moved; bob follows it.
		resolved, err := bob.ResolveAlias(ctx, "#project:localhost")
		if err != nil || resolved.RoomID != newRoom {
			t.Fatalf("alias resolves to %v (%v), want %s", resolved, err, newRoom)
		}
		// The old room is closed to ordinary members.
		_, err = bob.SendText(ctx, old, "still here?")
		mustErr(t, "speaking in the replaced room", err, 403, "M_FORBIDDEN")
		join(t, bob, "#project:localhost")
		sendText(t, bob, newRoom, "moved over")
		// bob cannot upgrade the new room.
		s.do(t, "POST", v3+"/rooms/"+p(newRoom)+"/upgrade", bob.AccessToken, map[string]any{"new_version": "12"}).expectErr(t, 403, "M_FORBIDDEN")
		// alice can, to a v12 room whose ID is its create event's hash.
		r = s.do(t, "POST", v3+"/rooms/"+p(newRoom)+"/upgrade", alice.AccessToken, map[string]any{"new_version": "12"}).expect(t, 200)
		v12 := id.RoomID(r.str("replacement_room"))
		create = s.do(t, "GET", v3+"/rooms/"+p(v12)+"/state/m.room.create", alice.AccessToken, nil).expect(t, 200)
		if pred, _ := create.JSON["predecessor"].(map[string]any); pred["room_id"] != newRoom.String() {
			t.Fatalf("v12 create content: %s", create)
		}
	})
}

// TestSpaceHierarchy: a space with two child rooms, walked with /hierarchy
// (all at once, then page by page), and content reports on its rooms.
func TestSpaceHierarchy(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Company",
			CreationContent: map[string]any{"type": "m.space"}})
		general := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "General", Topic: "Everything"})
		random := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Random"})
		secret := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret"})
		for i, child := range []id.RoomID{general, random, secret} {
			content := map[string]any{"via": []string{"localhost"}, "order": string(rune('a' + i))}
			if child == general {
				content["suggested"] = true
			}
			if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, child.String(), content); err != nil {
				t.Fatal(err)
			}
		}

		resp, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
		if err != nil {
			t.Fatal(err)
		}
		var got []id.RoomID
		for _, r := range resp.Rooms {
			got = append(got, r.RoomID)
		}
		// bob is in none of these rooms: he sees the public ones, not the secret one.
		if len(got) != 3 || got[0] != space || got[1] != general || got[2] != random {
			t.Fatalf("bob's hierarchy %v, want %v", got, []id.RoomID{space, general, random})
		}
		root := resp.Rooms[0]
		if root.RoomType != "m.space" || root.Name != "Company" || len(resp.Rooms[0].ChildrenState) != 3 || root.NumJoinedMembers != 1 {
			t.Fatalf("root entry %+v", root.PublicRoomInfo)
		}
		if resp.Rooms[1].Name != "General" || resp.Rooms[1].Topic != "Everything" || resp.Rooms[1].JoinRule != "public" {
			t.Fatalf("child entry %+v", resp.Rooms[1].PublicRoomInfo)
		}
		// alice is in all of them.
		resp, err = alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
		if err != nil || len(resp.Rooms) != 4 {
			t.Fatalf("alice's hierarchy: %v %v", resp, err)
		}
		// Page by page.
		var paged []id.RoomID
		from := ""
		for i := 0; i < 10; i++ {
			page, err := alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{Limit: 1, From: from})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Rooms {
				paged = append(paged, r.RoomID)
			}
			if from = page.NextBatch; from == "" {
				break
			}
		}
		if len(paged) != 4 || paged[0] != space || paged[3] != secret {
			t.Fatalf("paged hierarchy %v", paged)
		}
		suggested, err := alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{SuggestedOnly: true})
		if err != nil || len(suggested.Rooms) != 2 || suggested.Rooms[1].RoomID != general {
			t.Fatalf("suggested only: %+v %v", suggested, err)
		}
		zero := 0
		if d, err := alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{MaxDepth: &zero}); err != nil || len(d.Rooms) != 1 {
			t.Fatalf("max_depth 0: %+v %v", d, err)
		}
		_, err = bob.Hierarchy(ctx, secret, &mautrix.ReqHierarchy{})
		mustErr(t, "hierarchy of a room bob cannot see", err, 403, "M_FORBIDDEN")
		s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(space)+"/hierarchy?limit=abc", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(space)+"/hierarchy?from=junk", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", "/_matrix/client/v1/rooms/%21a%00:localhost/hierarchy", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")

		// Reports: bob reports a message he can see, and a whole room.
		join(t, bob, general.String())
		msg := sendText(t, alice, general, "something offensive")
		if err := bob.ReportEvent(ctx, general, msg, "offensive"); err != nil {
			t.Fatal(err)
		}
		secretMsg := sendText(t, alice, secret, "private")
		err = bob.ReportEvent(ctx, secret, secretMsg, "cannot see it")
		mustErr(t, "report of an event bob cannot see", err, 404, "M_NOT_FOUND")
		s.do(t, "POST", v3+"/rooms/"+p(general)+"/report/"+p(msg), bob.AccessToken, map[string]any{"score": 5}).expectErr(t, 400, "M_INVALID_PARAM")
		if err := bob.ReportRoom(ctx, random, "spam room"); err != nil {
			t.Fatal(err)
		}
		err = bob.ReportRoom(ctx, "!nosuchroom:localhost", "x")
		mustErr(t, "report of an unknown room", err, 404, "M_NOT_FOUND")
		s.do(t, "POST", v3+"/rooms/%21a%00:localhost/report", bob.AccessToken, map[string]any{}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/rooms/"+p(general)+"/report/$a%00b", bob.AccessToken, map[string]any{}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/rooms/"+p(general)+"/report/"+p(msg), bob.AccessToken, map[string]any{"reason": "a\u0000b"}).expectErr(t, 400, "M_INVALID_PARAM")
	})
}
