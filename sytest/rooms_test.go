package sytest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// stateOf returns the content of a state event through GET /state/{type}/{key}.
func (s *server) stateOf(t *testing.T, cli *mautrix.Client, room id.RoomID, typ, key string) map[string]any {
	t.Helper()
	r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/"+p(typ)+"/"+p(key), cli.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("state %s/%q of %s: %s", typ, key, room, r)
	}
	return r.JSON
}

// fullState returns GET /rooms/{id}/state as a map from (type, state_key).
func (s *server) fullState(t *testing.T, cli *mautrix.Client, room id.RoomID) map[[2]string]*event.Event {
	t.Helper()
	evs, err := cli.StateAsArray(context.Background(), room)
	if err != nil {
		t.Fatalf("state of %s: %v", room, err)
	}
	out := map[[2]string]*event.Event{}
	for _, ev := range evs {
		if ev.StateKey == nil {
			t.Errorf("state event without state_key: %s", ev.ID)
			continue
		}
		out[[2]string{ev.Type.Type, *ev.StateKey}] = ev
	}
	return out
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// TestRoomsCreatePresets: each preset sets the join rule, history visibility,
// guest access and power levels the spec's preset table gives.
func TestRoomsCreatePresets(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		for _, c := range []struct {
			preset, joinRule, guest string
			bobPL                   int64
		}{
			{"private_chat", "invite", "can_join", 0},
			{"trusted_private_chat", "invite", "can_join", 100},
			{"public_chat", "public", "forbidden", 0},
		} {
			t.Run(c.preset, func(t *testing.T) {
				room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: c.preset, Invite: []id.UserID{bob.UserID}})
				st := s.fullState(t, alice, room)
				if jr := st[[2]string{"m.room.join_rules", ""}]; jr == nil || jr.Content.Raw["join_rule"] != c.joinRule {
					t.Errorf("join_rules: %v", jr)
				}
				if hv := st[[2]string{"m.room.history_visibility", ""}]; hv == nil || hv.Content.Raw["history_visibility"] != "shared" {
					t.Errorf("history_visibility: %v", hv)
				}
				if ga := st[[2]string{"m.room.guest_access", ""}]; c.guest == "can_join" && (ga == nil || ga.Content.Raw["guest_access"] != "can_join") ||
					c.guest == "forbidden" && ga != nil && ga.Content.Raw["guest_access"] != "forbidden" {
					t.Errorf("guest_access: %v", ga)
				}
				pl := st[[2]string{"m.room.power_levels", ""}]
				if pl == nil {
					t.Fatal("no power levels")
				}
				users, _ := pl.Content.Raw["users"].(map[string]any)
				if num(users[alice.UserID.String()]) != 100 {
					t.Errorf("creator's power level: %v", pl.Content.Raw)
				}
				if num(users[bob.UserID.String()]) != c.bobPL {
					t.Errorf("invitee's power level: want %d: %v", c.bobPL, pl.Content.Raw)
				}
				if !memberOf(mapValues(st), bob.UserID, "invite") || !memberOf(mapValues(st), alice.UserID, "join") {
					t.Errorf("memberships after createRoom with invite")
				}
				create := st[[2]string{"m.room.create", ""}]
				if create == nil || create.Content.Raw["room_version"] != "11" {
					t.Errorf("create event of the default version: %v", create)
				}
			})
		}
	})
}

func mapValues(m map[[2]string]*event.Event) []*event.Event {
	out := make([]*event.Event, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestRoomsCreateOptions: name, topic, initial_state with m.room.encryption
// as Element sends it, is_direct, creation_content and
// power_level_content_override.
func TestRoomsCreateOptions(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")

		// What Element sends for a new encrypted DM.
		r := s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{
			"preset":    "trusted_private_chat",
			"is_direct": true,
			"invite":    []string{bob.UserID.String()},
			"name":      "Our chat",
			"topic":     "Things we discuss",
			"initial_state": []map[string]any{{
				"type": "m.room.encryption", "state_key": "",
				"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
			}},
			"creation_content":             map[string]any{"m.federate": false, "com.example.extra": "kept"},
			"power_level_content_override": map[string]any{"users_default": 5, "events": map[string]any{"m.room.name": 10, "m.room.power_levels": 100}},
		}).expect(t, 200)
		room := id.RoomID(r.str("room_id"))
		if !strings.HasPrefix(room.String(), "!") {
			t.Fatalf("room_id: %s", r)
		}
		if got := s.stateOf(t, alice, room, "m.room.name", "")["name"]; got != "Our chat" {
			t.Errorf("name: %v", got)
		}
		if got := s.stateOf(t, alice, room, "m.room.topic", "")["topic"]; got != "Things we discuss" {
			t.Errorf("topic: %v", got)
		}
		if got := s.stateOf(t, alice, room, "m.room.encryption", "")["algorithm"]; got != "m.megolm.v1.aes-sha2" {
			t.Errorf("encryption: %v", got)
		}
		create := s.stateOf(t, alice, room, "m.room.create", "")
		if create["m.federate"] != false || create["com.example.extra"] != "kept" || create["room_version"] != "11" {
			t.Errorf("creation_content not in the create event: %v", create)
		}
		pl := s.stateOf(t, alice, room, "m.room.power_levels", "")
		if num(pl["users_default"]) != 5 {
			t.Errorf("users_default override: %v", pl)
		}
		if ev, _ := pl["events"].(map[string]any); num(ev["m.room.name"]) != 10 {
			t.Errorf("events override: %v", pl)
		}
		if users, _ := pl["users"].(map[string]any); num(users[alice.UserID.String()]) != 100 {
			t.Errorf("override dropped the creator's level: %v", pl)
		}
		inv := s.stateOf(t, alice, room, "m.room.member", bob.UserID.String())
		if inv["membership"] != "invite" || inv["is_direct"] != true {
			t.Errorf("is_direct invite: %v", inv)
		}

		// Bob sees the DM invite, with is_direct, through /sync.
		resp, _ := syncUntil(t, bob, "", "the DM invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
		var self *event.Event
		for _, ev := range resp.Rooms.Invite[room].State.Events {
			if ev.Type.Type == "m.room.member" && ev.GetStateKey() == bob.UserID.String() {
				self = ev
			}
		}
		if self == nil || self.Content.Raw["is_direct"] != true || self.Content.Raw["membership"] != "invite" {
			t.Errorf("invite_state member event: %+v", self)
		}
		for _, typ := range []string{"m.room.create", "m.room.name", "m.room.join_rules", "m.room.encryption"} {
			if findEvent(resp.Rooms.Invite[room].State.Events, typ, sk("")) == nil {
				t.Errorf("invite_state lacks %s", typ)
			}
		}
		join(t, bob, room.String())
		sendText(t, bob, room, "dm works")

		// Invalid options.
		s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"room_version": "999"}).expectErr(t, 400, "M_UNSUPPORTED_ROOM_VERSION")
		s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "no_such_preset"}).wantOneOf(t, "unknown preset", 400, "M_BAD_JSON", 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"invite": []string{"not a user id"}}).wantOneOf(t, "invalid invitee", 400, "M_INVALID_PARAM", 400, "M_BAD_JSON")
	})
}

// TestRoomsVersions: every stable room version can be created and used.
func TestRoomsVersions(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		caps := s.do(t, "GET", v3+"/capabilities", alice.AccessToken, nil).expect(t, 200)
		rv, _ := caps.JSON["capabilities"].(map[string]any)["m.room_versions"].(map[string]any)
		available, _ := rv["available"].(map[string]any)
		for v := 1; v <= 12; v++ {
			ver := fmt.Sprint(v)
			t.Run("v"+ver, func(t *testing.T) {
				if available[ver] != "stable" {
					t.Errorf("capabilities do not list version %s as stable: %v", ver, rv)
				}
				room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(ver), Name: "v" + ver})
				create := s.stateOf(t, alice, room, "m.room.create", "")
				if create["room_version"] != ver {
					t.Fatalf("create event: %v", create)
				}
				join(t, bob, room.String())
				eid := sendText(t, bob, room, "hello v"+ver)
				ev, err := alice.GetEvent(ctx, room, eid)
				if err != nil || ev.Content.Raw["body"] != "hello v"+ver || ev.RoomID != room {
					t.Fatalf("event in v%s: %v %v", ver, ev, err)
				}
				if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "t" + ver}); err != nil {
					t.Fatalf("state in v%s: %v", ver, err)
				}
				if _, err := alice.RedactEvent(ctx, room, eid); err != nil {
					t.Fatalf("redaction in v%s: %v", ver, err)
				}
				msgs := allMessages(t, alice, room)
				if len(msgs) == 0 || msgs[len(msgs)-1].Type.Type != "m.room.create" {
					t.Fatalf("history of v%s does not reach the create event", ver)
				}
			})
		}
	})
}

// TestRoomsAliases: room_alias_name, resolving, joining by alias, adding and
// deleting aliases, /rooms/{id}/aliases.
func TestRoomsAliases(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		r := s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat", "room_alias_name": "lobby"}).expect(t, 200)
		room := id.RoomID(r.str("room_id"))
		alias := "#lobby:localhost"
		if r.str("room_alias") != alias {
			t.Errorf("room_alias in the answer: %s", r)
		}
		if got := s.stateOf(t, alice, room, "m.room.canonical_alias", "")["alias"]; got != alias {
			t.Errorf("canonical alias: %v", got)
		}
		res := s.do(t, "GET", v3+"/directory/room/"+p(alias), "", nil).expect(t, 200)
		if res.str("room_id") != room.String() {
			t.Fatalf("resolve: %s", res)
		}
		if servers, _ := res.JSON["servers"].([]any); len(servers) == 0 || servers[0] != "localhost" {
			t.Errorf("servers: %s", res)
		}
		// The same name again.
		s.do(t, "POST", v3+"/createRoom", bob.AccessToken, map[string]any{"room_alias_name": "lobby"}).expectErr(t, 400, "M_ROOM_IN_USE")

		// Join by alias (the path as clients send it, '#' escaped).
		jr := s.do(t, "POST", v3+"/join/"+p(alias), bob.AccessToken, map[string]any{}).expect(t, 200)
		if jr.str("room_id") != room.String() {
			t.Fatalf("join by alias: %s", jr)
		}
		if _, err := bob.JoinRoom(ctx, alias, nil); err != nil {
			t.Fatalf("mautrix join by alias (already joined): %v", err)
		}

		// More aliases.
		if _, err := alice.CreateAlias(ctx, "#lounge:localhost", room); err != nil {
			t.Fatal(err)
		}
		s.do(t, "PUT", v3+"/directory/room/"+p("#lounge:localhost"), alice.AccessToken, map[string]any{"room_id": room}).expect(t, 409)
		s.do(t, "PUT", v3+"/directory/room/"+p("lounge"), alice.AccessToken, map[string]any{"room_id": room}).wantOneOf(t, "invalid alias", 400, "M_INVALID_PARAM", 400, "M_UNKNOWN", 400, "M_BAD_JSON")
		s.do(t, "PUT", v3+"/directory/room/"+p("#x:elsewhere.org"), alice.AccessToken, map[string]any{"room_id": room}).wantOneOf(t, "alias on another server", 400, "M_INVALID_PARAM", 403, "M_FORBIDDEN", 400, "M_UNKNOWN")
		list := must1(bob.GetAliases(ctx, room))(t)
		got := map[string]bool{}
		for _, a := range list.Aliases {
			got[a.String()] = true
		}
		if !got[alias] || !got["#lounge:localhost"] || len(got) != 2 {
			t.Errorf("aliases of the room: %v", list.Aliases)
		}

		// Bob did not create #lounge and is not a room admin: he may not delete it.
		s.do(t, "DELETE", v3+"/directory/room/"+p("#lounge:localhost"), bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "DELETE", v3+"/directory/room/"+p("#lounge:localhost"), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/directory/room/"+p("#lounge:localhost"), "", nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "DELETE", v3+"/directory/room/"+p("#lounge:localhost"), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		list = must1(alice.GetAliases(ctx, room))(t)
		if len(list.Aliases) != 1 || list.Aliases[0].String() != alias {
			t.Errorf("aliases after delete: %v", list.Aliases)
		}
		// An alias can be reused once deleted.
		if _, err := bob.CreateAlias(ctx, "#lounge:localhost", room); err != nil {
			t.Fatalf("reuse a deleted alias: %v", err)
		}
	})
}

// must1 unwraps a (value, error) pair: must1(call())(t).
func must1[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestRoomsMembership: invite, join, leave, forget, kick, ban, unban, and the
// power levels that guard them.
func TestRoomsMembership(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")

		// Invite, join, leave, forget on a private room.
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"})
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/join", bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		invite(t, alice, room, bob.UserID)
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/invite", alice.AccessToken, map[string]any{"user_id": "@nobody:localhost"}).wantOneOf(t, "invite an unknown user", 404, "M_NOT_FOUND", 400, "M_INVALID_PARAM", 403, "M_FORBIDDEN")
		resp, _ := syncUntil(t, bob, "", "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
		if findEvent(resp.Rooms.Invite[room].State.Events, "m.room.name", sk("")) == nil {
			t.Errorf("invite_state lacks the name")
		}
		join(t, bob, room.String())
		jm := must1(alice.JoinedMembers(ctx, room))(t)
		if len(jm.Joined) != 2 || jm.Joined[bob.UserID].DisplayName != "bob" {
			t.Errorf("joined_members after join: %+v", jm.Joined)
		}
		if jr := must1(bob.JoinedRooms(ctx))(t); len(jr.JoinedRooms) != 1 || jr.JoinedRooms[0] != room {
			t.Errorf("joined_rooms of bob: %v", jr.JoinedRooms)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/forget", bob.AccessToken, map[string]any{}).expect(t, 400)
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		if jr := must1(bob.JoinedRooms(ctx))(t); len(jr.JoinedRooms) != 0 {
			t.Errorf("joined_rooms after leave: %v", jr.JoinedRooms)
		}
		if m := s.stateOf(t, alice, room, "m.room.member", bob.UserID.String()); m["membership"] != "leave" {
			t.Errorf("membership after leave: %v", m)
		}
		// Having left, bob still reads the state as it was when he left...
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/state", bob.AccessToken, nil).expect(t, 200)
		// ...but cannot rejoin an invite-only room or send into it.
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/join", bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), bob.AccessToken, map[string]any{"msgtype": "m.text", "body": "x"}).expectErr(t, 403, "M_FORBIDDEN")
		if _, err := bob.ForgetRoom(ctx, room); err != nil {
			t.Fatalf("forget: %v", err)
		}
		q := url.Values{"filter": {`{"room":{"include_leave":true}}`}}
		if r, _ := s.rawSync(t, bob, q); r.Rooms.Leave[room] != nil {
			t.Errorf("a forgotten room is still in the leave section")
		}

		// Kick: only with enough power, and a kicked user cannot come back uninvited.
		invite(t, alice, room, carol.UserID)
		join(t, carol, room.String())
		invite(t, alice, room, bob.UserID)
		join(t, bob, room.String())
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/kick", bob.AccessToken, map[string]any{"user_id": carol.UserID, "reason": "no"}).expectErr(t, 403, "M_FORBIDDEN")
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		m := s.stateOf(t, alice, room, "m.room.member", carol.UserID.String())
		if m["membership"] != "leave" || m["reason"] != "spam" {
			t.Errorf("kicked member: %v", m)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/join", carol.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/kick", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")

		// Ban on a public room: the banned user cannot rejoin until unbanned.
		pub := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, pub.String())
		join(t, carol, pub.String())
		s.do(t, "POST", v3+"/rooms/"+p(pub)+"/ban", carol.AccessToken, map[string]any{"user_id": bob.UserID}).expectErr(t, 403, "M_FORBIDDEN")
		if _, err := alice.BanUser(ctx, pub, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		if m := s.stateOf(t, alice, pub, "m.room.member", bob.UserID.String()); m["membership"] != "ban" || m["reason"] != "bye" {
			t.Errorf("banned member: %v", m)
		}
		s.do(t, "POST", v3+"/join/"+p(pub), bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+p(pub)+"/send/m.room.message/"+txn(), bob.AccessToken, map[string]any{"msgtype": "m.text", "body": "x"}).expectErr(t, 403, "M_FORBIDDEN")
		// Banning someone who never joined works too.
		dave := s.register(t, "dave")
		if _, err := alice.BanUser(ctx, pub, &mautrix.ReqBanUser{UserID: dave.UserID}); err != nil {
			t.Fatalf("ban a non-member: %v", err)
		}
		s.do(t, "POST", v3+"/join/"+p(pub), dave.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+p(pub)+"/unban", carol.AccessToken, map[string]any{"user_id": bob.UserID}).expectErr(t, 403, "M_FORBIDDEN")
		if _, err := alice.UnbanUser(ctx, pub, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if m := s.stateOf(t, alice, pub, "m.room.member", bob.UserID.String()); m["membership"] != "leave" {
			t.Errorf("unbanned member: %v", m)
		}
		join(t, bob, pub.String())
		sendText(t, bob, pub, "back again")
		// Unbanning someone who is not banned is refused.
		s.do(t, "POST", v3+"/rooms/"+p(pub)+"/unban", alice.AccessToken, map[string]any{"user_id": carol.UserID}).expect(t, 403)
	})
}

// TestRoomsState: PUT and GET of state, with and without a state key, and
// power levels enforced on it.
func TestRoomsState(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Start"})
		join(t, bob, room.String())
		rid := p(room)
		atok := alice.AccessToken

		// Empty state key: without the trailing slash and with it.
		put := s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.topic", atok, map[string]any{"topic": "one"}).expect(t, 200)
		if !strings.HasPrefix(put.str("event_id"), "$") {
			t.Fatalf("PUT state: %s", put)
		}
		for _, path := range []string{"/state/m.room.topic", "/state/m.room.topic/"} {
			r := s.do(t, "GET", v3+"/rooms/"+rid+path, bob.AccessToken, nil).expect(t, 200)
			if r.str("topic") != "one" {
				t.Errorf("GET %s: %s", path, r)
			}
		}
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.topic/", atok, map[string]any{"topic": "two"}).expect(t, 200)
		if got := s.stateOf(t, bob, room, "m.room.topic", "")["topic"]; got != "two" {
			t.Errorf("topic after second PUT: %v", got)
		}

		// Custom state with keys, including characters that need escaping.
		for _, key := range []string{"k1", "with/slash", "@alice:localhost", "sp ace"} {
			if _, err := alice.SendStateEvent(ctx, room, event.Type{Type: "com.example.state", Class: event.StateEventType}, key, map[string]any{"key": key}); err != nil {
				t.Fatalf("state key %q: %v", key, err)
			}
			if got := s.stateOf(t, bob, room, "com.example.state", key)["key"]; got != key {
				t.Errorf("state key %q read back as %v", key, got)
			}
		}
		s.do(t, "GET", v3+"/rooms/"+rid+"/state/com.example.state/missing", atok, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/rooms/"+rid+"/state/com.example.nothing", atok, nil).expectErr(t, 404, "M_NOT_FOUND")

		st := s.fullState(t, bob, room)
		for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.topic", ""}, {"m.room.name", ""}, {"com.example.state", "with/slash"}, {"m.room.member", bob.UserID.String()}} {
			if st[k] == nil {
				t.Errorf("GET /state lacks %v", k)
			}
		}
		if st[[2]string{"m.room.topic", ""}] != nil && st[[2]string{"m.room.topic", ""}].Content.Raw["topic"] != "two" {
			t.Errorf("GET /state has an old topic")
		}

		// Power levels: bob (level 0) may talk but not rename the room.
		sendText(t, bob, room, "I can talk")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.name/", bob.AccessToken, map[string]any{"name": "Bob's"}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/com.example.state/bob", bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.power_levels/", bob.AccessToken, map[string]any{"users": map[string]any{bob.UserID.String(): 100}}).expectErr(t, 403, "M_FORBIDDEN")
		if got := s.stateOf(t, alice, room, "m.room.name", "")["name"]; got != "Start" {
			t.Errorf("a refused rename took effect: %v", got)
		}
		// Alice raises bob to 50: now he may.
		pl := s.stateOf(t, alice, room, "m.room.power_levels", "")
		pl["users"].(map[string]any)[bob.UserID.String()] = 50
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.power_levels/", atok, pl).expect(t, 200)
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.name/", bob.AccessToken, map[string]any{"name": "Bob's"}).expect(t, 200)
		if got := s.stateOf(t, alice, room, "m.room.name", "")["name"]; got != "Bob's" {
			t.Errorf("name after an allowed rename: %v", got)
		}
		// Bob may not raise himself above his level.
		pl["users"].(map[string]any)[bob.UserID.String()] = 100
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.power_levels/", bob.AccessToken, pl).expectErr(t, 403, "M_FORBIDDEN")
		// Bob may send a message event type alice has restricted? Not when events say 100.
		pl["users"].(map[string]any)[bob.UserID.String()] = 50
		pl["events"].(map[string]any)["com.example.restricted"] = 100
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.power_levels/", atok, pl).expect(t, 200)
		s.do(t, "PUT", v3+"/rooms/"+rid+"/send/com.example.restricted/"+txn(), bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/send/com.example.restricted/"+txn(), atok, map[string]any{}).expect(t, 200)
	})
}

// TestRoomsRedaction: a redacted event loses its content in /event,
// /messages and /sync; the redaction arrives through /sync.
func TestRoomsRedaction(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		_, bobSince := syncNow(t, bob, "")

		secret := sendText(t, bob, room, "oops, a password")
		other := sendText(t, bob, room, "a normal message")
		// Another member (level 0) may not redact bob's message; bob may redact his own.
		carol := s.register(t, "carol")
		join(t, carol, room.String())
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/redact/"+p(other)+"/"+txn(), carol.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")

		red := s.do(t, "PUT", v3+"/rooms/"+p(room)+"/redact/"+p(secret)+"/"+txn(), alice.AccessToken, map[string]any{"reason": "leaked"}).expect(t, 200)
		redID := id.EventID(red.str("event_id"))
		if !strings.HasPrefix(redID.String(), "$") {
			t.Fatalf("redact: %s", red)
		}

		check := func(where string, ev *event.Event) {
			t.Helper()
			if ev == nil {
				t.Errorf("%s: the redacted event is missing", where)
				return
			}
			if len(ev.Content.Raw) != 0 {
				t.Errorf("%s: redacted event still has content %v", where, ev.Content.Raw)
			}
			if ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != redID {
				t.Errorf("%s: unsigned.redacted_because: %+v", where, ev.Unsigned.RedactedBecause)
			}
		}
		ev, err := alice.GetEvent(ctx, room, secret)
		if err != nil {
			t.Fatal(err)
		}
		check("/event", ev)
		var inMessages *event.Event
		for _, e := range allMessages(t, bob, room) {
			if e.ID == secret {
				inMessages = e
			}
		}
		check("/messages", inMessages)

		// An incremental sync from before delivers the redaction.
		resp, _ := syncUntil(t, bob, bobSince, "the redaction", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room]
			return jr != nil && findEvent(jr.Timeline.Events, "m.room.redaction", nil) != nil
		})
		rev := findEvent(resp.Rooms.Join[room].Timeline.Events, "m.room.redaction", nil)
		if rev.ID != redID || (rev.Redacts != secret && rev.Content.Raw["redacts"] != secret.String()) || rev.Content.Raw["reason"] != "leaked" {
			t.Errorf("redaction event in /sync: id %s redacts %s content %v", rev.ID, rev.Redacts, rev.Content.Raw)
		}
		// A fresh initial sync (enough timeline to reach it) shows it redacted.
		q := url.Values{"filter": {`{"room":{"timeline":{"limit":50}}}`}}
		init, _ := s.rawSync(t, bob, q)
		var inSync *event.Event
		if jr := init.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				if e.ID == secret {
					inSync = e
				}
			}
		}
		check("initial /sync", inSync)
		// The other message is untouched.
		if ev, err := alice.GetEvent(ctx, room, other); err != nil || ev.Content.Raw["body"] != "a normal message" {
			t.Errorf("unredacted message: %v %v", ev, err)
		}
		// Redacting an unknown event is refused without a server error.
		r := s.do(t, "PUT", v3+"/rooms/"+p(room)+"/redact/"+p("$nosuchevent")+"/"+txn(), alice.AccessToken, map[string]any{})
		if r.Status == 200 {
			t.Logf("redacting an unknown event was accepted (allowed by the spec): %s", r)
		}
	})
}

// TestRoomsContextMembersEvent: /context, /members (membership filter and
// at), /joined_members, /joined_rooms and /event.
func TestRoomsContextMembersEvent(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		var ids []id.EventID
		for i := 1; i <= 7; i++ {
			ids = append(ids, sendText(t, alice, room, fmt.Sprintf("m%d", i)))
		}

		// /context of m4 with limit 4: m3, m2 before (newest first), m5, m6 after.
		c, err := bob.Context(ctx, room, ids[3], nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		if c.Event == nil || c.Event.ID != ids[3] || c.Event.Content.Raw["body"] != "m4" {
			t.Fatalf("context event: %+v", c.Event)
		}
		if got := strings.Join(bodies(c.EventsBefore), ","); got != "m3,m2" {
			t.Errorf("events_before: %s", got)
		}
		if got := strings.Join(bodies(c.EventsAfter), ","); got != "m5,m6" {
			t.Errorf("events_after: %s", got)
		}
		if c.Start == "" || c.End == "" {
			t.Errorf("context tokens: start %q end %q", c.Start, c.End)
		}
		if findEvent(c.State, "m.room.create", sk("")) == nil || !memberOf(c.State, alice.UserID, "join") {
			t.Errorf("context state lacks create or alice's membership: %d events", len(c.State))
		}
		// Paginating from the context's end continues with m7, from its start with m1.
		fwd := must1(bob.Messages(ctx, room, c.End, "", mautrix.DirectionForward, nil, 10))(t)
		if b := bodies(fwd.Chunk); len(b) == 0 || b[0] != "m7" {
			t.Errorf("/messages forward from context end: %v", b)
		}
		back := must1(bob.Messages(ctx, room, c.Start, "", mautrix.DirectionBackward, nil, 1))(t)
		if b := bodies(back.Chunk); len(b) != 1 || b[0] != "m1" {
			t.Errorf("/messages backward from context start: %v", b)
		}
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/context/"+p("$unknown"), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")

		// /event.
		ev := must1(bob.GetEvent(ctx, room, ids[0]))(t)
		if ev.Content.Raw["body"] != "m1" || ev.Sender != alice.UserID || ev.RoomID != room || ev.Timestamp == 0 {
			t.Errorf("/event: %+v", ev)
		}
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/event/"+p("$unknown"), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/event/"+p(ids[0]), carol.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")

		// A token from before carol joins.
		_, before := syncNow(t, bob, "")
		join(t, carol, room.String())
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		all := must1(alice.Members(ctx, room))(t)
		if len(all.Chunk) != 3 || !memberOf(all.Chunk, bob.UserID, "leave") || !memberOf(all.Chunk, carol.UserID, "join") {
			t.Errorf("/members: %d events", len(all.Chunk))
		}
		joined := must1(alice.Members(ctx, room, mautrix.ReqMembers{Membership: event.MembershipJoin}))(t)
		if len(joined.Chunk) != 2 || memberOf(joined.Chunk, bob.UserID, "leave") {
			t.Errorf("/members?membership=join: %v", eventIDs(joined.Chunk))
		}
		notLeft := must1(alice.Members(ctx, room, mautrix.ReqMembers{NotMembership: event.MembershipLeave}))(t)
		if len(notLeft.Chunk) != 2 {
			t.Errorf("/members?not_membership=leave: %d events", len(notLeft.Chunk))
		}
		at := must1(alice.Members(ctx, room, mautrix.ReqMembers{At: before}))(t)
		if !memberOf(at.Chunk, bob.UserID, "join") || memberOf(at.Chunk, carol.UserID, "join") || len(at.Chunk) != 2 {
			t.Errorf("/members?at=<before carol joined and bob left>: %d events, bob joined %v, carol %v",
				len(at.Chunk), memberOf(at.Chunk, bob.UserID, "join"), memberOf(at.Chunk, carol.UserID, "join"))
		}
		jm := must1(alice.JoinedMembers(ctx, room))(t)
		if len(jm.Joined) != 2 || jm.Joined[carol.UserID].DisplayName != "carol" {
			t.Errorf("/joined_members: %+v", jm.Joined)
		}
		if jr := must1(carol.JoinedRooms(ctx))(t); len(jr.JoinedRooms) != 1 || jr.JoinedRooms[0] != room {
			t.Errorf("/joined_rooms of carol: %v", jr.JoinedRooms)
		}
		// Bob left: he sees the members as they were when he left, not who came later.
		dave := s.register(t, "dave")
		join(t, dave, room.String())
		left := must1(bob.Members(ctx, room))(t)
		if !memberOf(left.Chunk, bob.UserID, "leave") || !memberOf(left.Chunk, carol.UserID, "join") {
			t.Errorf("/members for a user who left: %d events", len(left.Chunk))
		}
		for _, ev := range left.Chunk {
			if ev.GetStateKey() == dave.UserID.String() {
				t.Errorf("/members shows a user who left a member who joined after he left")
			}
		}
		// Nor later state or messages.
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "after bob left"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "bob cannot read this")
		if r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/m.room.topic/", bob.AccessToken, nil); r.Status == 200 && r.str("topic") == "after bob left" {
			t.Errorf("a user who left reads state set after he left: %s", r)
		}
		for _, ev := range allMessages(t, bob, room) {
			if ev.Content.Raw["body"] == "bob cannot read this" || ev.Content.Raw["topic"] == "after bob left" {
				t.Errorf("/messages shows a user who left an event from after he left: %s", ev.ID)
			}
		}
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/event/"+p(sendText(t, alice, room, "nor this")), bob.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")
	})
}

// TestRoomsProfilePropagation: a display name change becomes a new
// m.room.member event in every room the user is in.
func TestRoomsProfilePropagation(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		r1 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		r2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		left := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, r := range []id.RoomID{r1, r2, left} {
			join(t, bob, r.String())
		}
		if _, err := bob.LeaveRoom(ctx, left); err != nil {
			t.Fatal(err)
		}
		_, since := syncNow(t, alice, "")
		if err := bob.SetDisplayName(ctx, "Bobby Tables"); err != nil {
			t.Fatal(err)
		}
		if dn := must1(alice.GetDisplayName(ctx, bob.UserID))(t); dn.DisplayName != "Bobby Tables" {
			t.Errorf("profile displayname: %q", dn.DisplayName)
		}
		seen := map[id.RoomID]bool{}
		syncUntil(t, alice, since, "bob's new name in both rooms", func(r *mautrix.RespSync) bool {
			for _, room := range []id.RoomID{r1, r2} {
				if jr := r.Rooms.Join[room]; jr != nil {
					for _, ev := range jr.Timeline.Events {
						if ev.Type.Type == "m.room.member" && ev.GetStateKey() == bob.UserID.String() &&
							ev.Content.Raw["displayname"] == "Bobby Tables" && ev.Content.Raw["membership"] == "join" {
							seen[room] = true
						}
					}
				}
			}
			return seen[r1] && seen[r2]
		})
		for _, room := range []id.RoomID{r1, r2} {
			if got := s.stateOf(t, alice, room, "m.room.member", bob.UserID.String())["displayname"]; got != "Bobby Tables" {
				t.Errorf("member state in %s: %v", room, got)
			}
		}
		if got := s.stateOf(t, alice, left, "m.room.member", bob.UserID.String()); got["membership"] != "leave" || got["displayname"] == "Bobby Tables" {
			t.Errorf("a room bob left got his new name: %v", got)
		}
		if jm := must1(alice.JoinedMembers(ctx, r1))(t); jm.Joined[bob.UserID].DisplayName != "Bobby Tables" {
			t.Errorf("joined_members after rename: %+v", jm.Joined[bob.UserID])
		}
	})
}

// TestRoomsDirectoryVisibility: GET and PUT /directory/list/room/{roomId}.
func TestRoomsDirectoryVisibility(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		priv := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		pub := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Town square"})
		vis := func(room id.RoomID) string {
			t.Helper()
			return s.do(t, "GET", v3+"/directory/list/room/"+p(room), "", nil).expect(t, 200).str("visibility")
		}
		if v := vis(priv); v != "private" {
			t.Errorf("default visibility: %q", v)
		}
		if v := vis(pub); v != "public" {
			t.Errorf("createRoom visibility public: %q", v)
		}
		s.do(t, "PUT", v3+"/directory/list/room/"+p(priv), alice.AccessToken, map[string]any{"visibility": "public"}).expect(t, 200)
		if v := vis(priv); v != "public" {
			t.Errorf("after PUT public: %q", v)
		}
		s.do(t, "PUT", v3+"/directory/list/room/"+p(priv), bob.AccessToken, map[string]any{"visibility": "private"}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/directory/list/room/"+p(priv), alice.AccessToken, map[string]any{"visibility": "private"}).expect(t, 200)
		if v := vis(priv); v != "private" {
			t.Errorf("after PUT private: %q", v)
		}
		s.do(t, "PUT", v3+"/directory/list/room/"+p(priv), alice.AccessToken, map[string]any{"visibility": "secret"}).wantOneOf(t, "bad visibility", 400, "M_INVALID_PARAM", 400, "M_BAD_JSON")
		s.do(t, "PUT", v3+"/directory/list/room/"+p(priv), "", map[string]any{"visibility": "public"}).expectErr(t, 401, "M_MISSING_TOKEN")
	})
}

// TestRoomsPublicRoomsList: a room published in the directory is listed by
// GET /publicRooms (Element's "Explore rooms").
func TestRoomsPublicRoomsList(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		pub := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Town square", RoomAliasName: "square"})
		createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Unlisted"})
		resp, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatalf("GET /publicRooms: %v", err)
		}
		if len(resp.Chunk) != 1 || resp.Chunk[0].RoomID != pub || resp.Chunk[0].Name != "Town square" || resp.Chunk[0].NumJoinedMembers != 1 {
			t.Errorf("/publicRooms: %+v", resp.Chunk)
		}
	})
}

// TestRoomsRedactStateAndMessagesFilter: redacting a state event empties it
// in the current state; /messages honours to, types and not_senders.
func TestRoomsRedactStateAndMessagesFilter(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "secret topic"})
		join(t, bob, room.String())
		topic := s.fullState(t, alice, room)[[2]string{"m.room.topic", ""}]
		if _, err := alice.RedactEvent(ctx, room, topic.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the redacted topic in /state", func() bool {
			r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/m.room.topic/", alice.AccessToken, nil)
			return r.Status == 200 && r.JSON["topic"] == nil
		})
		if ev := s.fullState(t, bob, room)[[2]string{"m.room.topic", ""}]; ev == nil || len(ev.Content.Raw) != 0 {
			t.Errorf("the redacted topic in GET /state: %+v", ev)
		}
		r, _ := s.rawSync(t, bob, nil)
		if jr := r.Rooms.Join[room]; jr != nil {
			if ev := findEvent(append(jr.State.Events, jr.Timeline.Events...), "m.room.topic", sk("")); ev != nil && len(ev.Content.Raw) != 0 {
				t.Errorf("the redacted topic in /sync: %v", ev.Content.Raw)
			}
		}

		// /messages: from a token to another, with filters.
		_, start := syncNow(t, bob, "")
		first := sendText(t, alice, room, "one")
		sendText(t, bob, room, "two")
		if _, err := alice.SendMessageEvent(ctx, room, event.Type{Type: "com.example.other", Class: event.MessageEventType}, map[string]any{"body": "other"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "three")
		_, end := syncUntil(t, bob, start, "three", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "three") })
		// Sync tokens work as /messages tokens.
		fwd := must1(bob.Messages(ctx, room, start, end, mautrix.DirectionForward, nil, 50))(t)
		if got := strings.Join(bodies(fwd.Chunk), ","); got != "one,two,other,three" {
			t.Errorf("/messages forward from a sync token to another: %s", got)
		}
		if len(fwd.Chunk) > 0 && fwd.Chunk[0].ID != first {
			t.Errorf("/messages forward starts at %s, want %s", fwd.Chunk[0].ID, first)
		}
		back := must1(bob.Messages(ctx, room, end, start, mautrix.DirectionBackward, nil, 50))(t)
		if got := strings.Join(bodies(back.Chunk), ","); got != "three,other,two,one" {
			t.Errorf("/messages backward between the tokens: %s", got)
		}
		types := must1(bob.Messages(ctx, room, end, start, mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 50))(t)
		if got := strings.Join(bodies(types.Chunk), ","); got != "three,two,one" {
			t.Errorf("/messages with types: %s", got)
		}
		notSenders := must1(bob.Messages(ctx, room, end, start, mautrix.DirectionBackward, &mautrix.FilterPart{NotSenders: []id.UserID{alice.UserID}}, 50))(t)
		if got := strings.Join(bodies(notSenders.Chunk), ","); got != "two" {
			t.Errorf("/messages with not_senders: %s", got)
		}
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=x", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&from=nonsense", bob.AccessToken, nil).wantOneOf(t, "bad from token", 400, "M_INVALID_PARAM", 400, "M_BAD_JSON", 400, "M_UNKNOWN")
	})
}
