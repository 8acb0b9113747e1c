package sytest

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// knockRoom creates a room (version 10) that one knocks on to enter.
func knockRoom(t *testing.T, cli *mautrix.Client, name, alias string) id.RoomID {
	t.Helper()
	return createRoom(t, cli, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10", Name: name, RoomAliasName: alias,
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
}

// knockStateOK: the room is in rooms.knock with the room's stripped state
// (its create event, join rule knock, name) and the user's knock last.
func knockStateOK(r *mautrix.RespSync, room id.RoomID, user id.UserID, name string) bool {
	kr := r.Rooms.Knock[room]
	if kr == nil || len(kr.State.Events) == 0 {
		return false
	}
	evs := kr.State.Events
	last := evs[len(evs)-1]
	if last.Type != event.StateMember || last.GetStateKey() != user.String() || last.Content.Raw["membership"] != "knock" {
		return false
	}
	var create, rule, named bool
	for _, ev := range evs {
		switch ev.Type {
		case event.StateCreate:
			create = true
		case event.StateJoinRules:
			rule = ev.Content.Raw["join_rule"] == "knock"
		case event.StateRoomName:
			named = ev.Content.Raw["name"] == name
		}
	}
	return create && rule && named
}

// memberEvent tells whether the room's timeline in the response has a
// membership event of user.
func memberEvent(r *mautrix.RespSync, room id.RoomID, user id.UserID, membership string) bool {
	jr := r.Rooms.Join[room]
	return jr != nil && memberOf(jr.Timeline.Events, user, membership)
}

// TestKnock: bob knocks on a room whose join rule is knock; his sync shows
// the room in rooms.knock with its stripped state and his knock, alice
// sees the knock in her timeline and invites him, which moves the room to
// rooms.invite; he joins. carol knocks through the room's alias and
// withdraws her knock with /leave; dave's knock is turned away with a
// kick; both rooms move to rooms.leave.
func TestKnock(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol, dave := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol"), s.register(t, "dave")
		room := knockRoom(t, alice, "Knock knock", "knockers")
		aliceSync, bobSync := startSyncer(t, alice), startSyncer(t, bob)

		resp, err := bob.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Reason: "it's bob"})
		if err != nil || resp.RoomID != room {
			t.Fatalf("knock: %+v %v", resp, err)
		}
		bobSync.waitFor(t, "his knock", func(r *mautrix.RespSync) bool { return knockStateOK(r, room, bob.UserID, "Knock knock") })
		if r, _ := syncNow(t, bob, ""); !knockStateOK(r, room, bob.UserID, "Knock knock") {
			t.Fatalf("initial sync after the knock: %+v", r.Rooms.Knock[room])
		}
		aliceSync.waitFor(t, "bob's knock", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room]
			if jr == nil {
				return false
			}
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "knock" {
					return ev.Content.Raw["reason"] == "it's bob"
				}
			}
			return false
		})
		// Knocking while knocked is not refused; it changes nothing.
		if _, err := bob.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Reason: "it's bob"}); err != nil {
			t.Fatalf("knock again: %v", err)
		}
		// He cannot read the room's history yet: his knock is all he sees.
		msgs := s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b", bob.AccessToken, nil)
		if msgs.Status == 200 {
			if chunk, _ := msgs.JSON["chunk"].([]any); len(chunk) > 1 {
				t.Fatalf("a knocker reads the room: %s", msgs)
			}
		}

		invite(t, alice, room, bob.UserID)
		bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool {
			return r.Rooms.Invite[room] != nil && r.Rooms.Knock[room] == nil
		})
		if r, _ := syncNow(t, bob, ""); r.Rooms.Knock[room] != nil || r.Rooms.Invite[room] == nil {
			t.Fatalf("initial sync after the invite: knock %v invite %v", r.Rooms.Knock[room] != nil, r.Rooms.Invite[room] != nil)
		}
		join(t, bob, room.String())
		aliceSync.waitFor(t, "bob's join", func(r *mautrix.RespSync) bool { return memberEvent(r, room, bob.UserID, "join") })

		// carol knocks by alias, then withdraws.
		if _, err := carol.KnockRoom(ctx, "#knockers:"+"localhost", nil); err != nil {
			t.Fatalf("knock by alias: %v", err)
		}
		_, since := syncUntil(t, carol, "", "her knock", func(r *mautrix.RespSync) bool { return r.Rooms.Knock[room] != nil })
		if _, err := carol.LeaveRoom(ctx, room); err != nil {
			t.Fatalf("withdraw the knock: %v", err)
		}
		syncUntil(t, carol, since, "her withdrawn knock", func(r *mautrix.RespSync) bool {
			return r.Rooms.Leave[room] != nil && r.Rooms.Knock[room] == nil
		})
		aliceSync.waitFor(t, "carol's leave", func(r *mautrix.RespSync) bool { return memberEvent(r, room, carol.UserID, "leave") })

		// dave knocks and is turned away.
		if _, err := dave.KnockRoom(ctx, room.String(), nil); err != nil {
			t.Fatalf("dave knocks: %v", err)
		}
		_, since = syncUntil(t, dave, "", "his knock", func(r *mautrix.RespSync) bool { return r.Rooms.Knock[room] != nil })
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: dave.UserID, Reason: "not today"}); err != nil {
			t.Fatalf("turn dave away: %v", err)
		}
		syncUntil(t, dave, since, "the refusal", func(r *mautrix.RespSync) bool {
			return r.Rooms.Leave[room] != nil && r.Rooms.Knock[room] == nil
		})
	})
}

// TestKnockRefusals: a knock on a public or invite-only room, by a member,
// by a banned user, in a room version without knocking is 403 M_FORBIDDEN;
// an unknown room is 404; guests may not knock.
func TestKnockRefusals(t *testing.T) {
	s := startServer(t, "sqlite", "HAVEN_REGISTRATION_GUESTS=true")
	ctx := context.Background()
	alice, bob := s.register(t, "alice"), s.register(t, "bob")
	public := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10"})
	old := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "6",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	room := knockRoom(t, alice, "Knock", "")
	knock := func(c *mautrix.Client, target string) apiResp {
		return s.do(t, "POST", v3+"/knock/"+p(target), c.AccessToken, map[string]any{"reason": "hi"})
	}
	knock(bob, public.String()).expectErr(t, 403, "M_FORBIDDEN")
	knock(bob, private.String()).expectErr(t, 403, "M_FORBIDDEN")
	knock(bob, old.String()).expectErr(t, 403, "M_FORBIDDEN")
	knock(alice, room.String()).expectErr(t, 403, "M_FORBIDDEN")
	knock(bob, "!nowhere:"+"localhost").expectErr(t, 404, "M_NOT_FOUND")
	knock(bob, "#nowhere:"+"localhost").expectErr(t, 404, "M_NOT_FOUND")
	knock(bob, "not-a-room").expectErr(t, 400, "M_INVALID_PARAM")
	s.do(t, "POST", v3+"/knock/"+p(room), bob.AccessToken, "{").expectErr(t, 400, "M_NOT_JSON")
	s.do(t, "POST", v3+"/knock/"+p(room), "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")
	guest := s.registerGuest(t)
	knock(guest, room.String()).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")

	// An invited user has nothing to knock for; a banned one may not.
	invite(t, alice, room, bob.UserID)
	knock(bob, room.String()).expectErr(t, 403, "M_FORBIDDEN")
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	knock(bob, room.String()).expectErr(t, 403, "M_FORBIDDEN")
	// Through the legacy path too.
	carol := s.register(t, "carol")
	r := s.do(t, "POST", "/_matrix/client/r0/knock/"+p(room), carol.AccessToken, map[string]any{}).expect(t, 200)
	if r.str("room_id") != room.String() {
		t.Fatalf("knock answer: %s", r)
	}
	var m struct {
		Membership string `json:"membership"`
	}
	st := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/m.room.member/"+p(carol.UserID), alice.AccessToken, nil).expect(t, 200)
	if json.Unmarshal(st.Raw, &m); m.Membership != "knock" {
		t.Fatalf("carol's membership: %s", st)
	}
}

// TestFederationKnock: bob on site B knocks on alice's room on site A
// (via A); his sync shows the room's stripped state as A answered it,
// alice sees the knock, invites him, and he joins. carol on B knocks
// through the room's alias on A and withdraws her knock, which A learns;
// dave's knock is turned away on A, which B learns.
func TestFederationKnock(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob, carol := b.register(t, "bob"), b.register(t, "carol")
	room := knockRoom(t, alice, "Across the sites", "door")
	aliceSync, bobSync := startSyncer(t, alice), startSyncer(t, bob)

	// Without a way to the room, B cannot knock.
	if _, err := bob.KnockRoom(ctx, "!unknown:"+b.name, nil); err == nil {
		t.Fatal("knock on an unknown room without via")
	} else if code, errcode := httpErr(err); code != 404 || errcode != "M_NOT_FOUND" {
		t.Fatalf("knock on an unknown room without via: %d %s", code, errcode)
	}

	resp, err := bob.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Via: []string{a.name}, Reason: "from B"})
	if err != nil || resp.RoomID != room {
		t.Fatalf("knock across sites: %+v %v", resp, err)
	}
	bobSync.waitFor(t, "his knock with the room's state", func(r *mautrix.RespSync) bool {
		return knockStateOK(r, room, bob.UserID, "Across the sites")
	})
	aliceSync.waitFor(t, "bob's knock", func(r *mautrix.RespSync) bool { return memberEvent(r, room, bob.UserID, "knock") })

	// dave on B knocks and is turned away while no user of B is in the
	// room: B learns of it all the same.
	dave := b.register(t, "dave")
	if _, err := dave.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Via: []string{a.name}}); err != nil {
		t.Fatalf("dave knocks: %v", err)
	}
	_, since := syncUntil(t, dave, "", "his knock", func(r *mautrix.RespSync) bool { return r.Rooms.Knock[room] != nil })
	aliceSync.waitFor(t, "dave's knock", func(r *mautrix.RespSync) bool { return memberEvent(r, room, dave.UserID, "knock") })
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: dave.UserID, Reason: "not today"}); err != nil {
		t.Fatalf("turn dave away: %v", err)
	}
	syncUntil(t, dave, since, "the refusal", func(r *mautrix.RespSync) bool {
		return r.Rooms.Leave[room] != nil && r.Rooms.Knock[room] == nil
	})

	invite(t, alice, room, bob.UserID)
	bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool {
		return r.Rooms.Invite[room] != nil && r.Rooms.Knock[room] == nil
	})
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatalf("join after the knock: %v", err)
	}
	aliceSync.waitFor(t, "bob's join", func(r *mautrix.RespSync) bool { return memberEvent(r, room, bob.UserID, "join") })
	bobSync.waitFor(t, "the room joined", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room] != nil })

	// carol knocks through the alias (asked of A), then withdraws.
	if _, err := carol.KnockRoom(ctx, "#door:"+a.name, nil); err != nil {
		t.Fatalf("knock through a remote alias: %v", err)
	}
	_, since = syncUntil(t, carol, "", "her knock", func(r *mautrix.RespSync) bool {
		return knockStateOK(r, room, carol.UserID, "Across the sites")
	})
	aliceSync.waitFor(t, "carol's knock", func(r *mautrix.RespSync) bool { return memberEvent(r, room, carol.UserID, "knock") })
	if _, err := carol.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("withdraw the knock: %v", err)
	}
	syncUntil(t, carol, since, "her withdrawn knock", func(r *mautrix.RespSync) bool {
		return r.Rooms.Leave[room] != nil && r.Rooms.Knock[room] == nil
	})
	aliceSync.waitFor(t, "carol's leave", func(r *mautrix.RespSync) bool { return memberEvent(r, room, carol.UserID, "leave") })
}
