package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestForgottenRoomAndParams: a room the user left and forgot cannot be
// read any more (403, whatever the parameters), a rejoin un-forgets it; a
// member's /messages without dir, or with another value, is 400
// M_INVALID_PARAM; /forget while joined is 400 M_UNKNOWN; deleting a device
// without a body is the UIA 401, and deleting an unknown device succeeds.
func TestForgottenRoomAndParams(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		msg := sendText(t, alice, room, "before bob leaves")
		rid := p(room)

		s.do(t, "GET", v3+"/rooms/"+rid+"/messages", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/rooms/"+rid+"/messages?dir=x", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/rooms/"+rid+"/forget", bob.AccessToken, map[string]any{}).expectErr(t, 400, "M_UNKNOWN")

		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		// Left but not forgotten: history up to the leave is readable.
		s.do(t, "GET", v3+"/rooms/"+rid+"/messages?dir=b", bob.AccessToken, nil).expect(t, 200)
		s.do(t, "POST", v3+"/rooms/"+rid+"/forget", bob.AccessToken, map[string]any{}).expect(t, 200)
		for _, path := range []string{"/messages", "/messages?dir=b", "/state", "/members", "/state/m.room.create/"} {
			s.do(t, "GET", v3+"/rooms/"+rid+path, bob.AccessToken, nil).wantErr(t, 403, "M_FORBIDDEN")
		}
		s.do(t, "GET", v3+"/rooms/"+rid+"/event/"+p(msg), bob.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/rooms/"+rid+"/context/"+p(msg), bob.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")

		// Re-invited, bob joins again: the room is his again, and leaving
		// it once more shows it among his left rooms.
		invite(t, alice, room, bob.UserID)
		join(t, bob, room.String())
		if got := bodies(allMessages(t, bob, room)); len(got) == 0 || got[len(got)-1] != "before bob leaves" {
			t.Errorf("messages after rejoining: %v", got)
		}
		_, since := syncNow(t, bob, "")
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, since, "the room among the left ones", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room] != nil })

		// Device deletion.
		phone := s.login(t, "bob")
		r := s.do(t, "DELETE", v3+"/devices/"+p(phone.DeviceID), bob.AccessToken, nil).expect(t, 401)
		if r.str("session") == "" || r.JSON["flows"] == nil {
			t.Errorf("no UIA challenge: %s", r)
		}
		s.do(t, "DELETE", v3+"/devices/"+p(phone.DeviceID), "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "DELETE", v3+"/devices/NOSUCHDEVICE", bob.AccessToken, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "password-bob"}}).expect(t, 200)
	})
}

// TestSearchNextBatch: a full page of /search results always carries
// next_batch, passing it returns the next page, and the page after the last
// result is empty without one — for order_by recent and rank.
func TestSearchNextBatch(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		var ids []string
		for i := 0; i < 20; i++ {
			ids = append(ids, sendText(t, alice, room, fmt.Sprintf("Message number %d", i)).String())
		}
		for _, order := range []string{"recent", "rank"} {
			body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
				"keys": []string{"content.body"}, "search_term": "Message", "order_by": order,
				"filter": map[string]any{"limit": 10, "rooms": []string{room.String()}}}}}
			seen := map[string]bool{}
			next := ""
			for page := 0; page < 3; page++ {
				path := v3 + "/search"
				if next != "" {
					path += "?next_batch=" + url.QueryEscape(next)
				}
				r := s.do(t, "POST", path, alice.AccessToken, body).expect(t, 200)
				var out struct {
					SearchCategories struct {
						RoomEvents struct {
							Count   int     `json:"count"`
							Next    *string `json:"next_batch"`
							Results []struct {
								Result struct {
									EventID string `json:"event_id"`
								} `json:"result"`
							} `json:"results"`
						} `json:"room_events"`
					} `json:"search_categories"`
				}
				if err := json.Unmarshal(r.Raw, &out); err != nil {
					t.Fatal(err)
				}
				re := out.SearchCategories.RoomEvents
				if re.Count != 20 {
					t.Errorf("%s page %d: count %d", order, page, re.Count)
				}
				var got []string
				for _, res := range re.Results {
					got = append(got, res.Result.EventID)
					if seen[res.Result.EventID] {
						t.Errorf("%s page %d: %s seen twice", order, page, res.Result.EventID)
					}
					seen[res.Result.EventID] = true
				}
				switch page {
				case 0, 1:
					if len(got) != 10 || re.Next == nil || *re.Next == "" {
						t.Fatalf("%s page %d: %d results, next_batch %v: %s", order, page, len(got), re.Next, r)
					}
					if order == "recent" && (got[0] != ids[19-10*page] || got[9] != ids[10-10*page]) {
						t.Errorf("recent page %d: %v", page, got)
					}
					next = *re.Next
				case 2:
					if len(got) != 0 || re.Next != nil {
						t.Errorf("%s page after the last: %s", order, r)
					}
				}
			}
			if len(seen) != 20 {
				t.Errorf("%s: %d distinct results over the pages", order, len(seen))
			}
		}
	})
}

// TestMembersAtAndFilters: /members?at= takes a /sync prev_batch or
// next_batch token (and a /messages token) and answers the members as of
// that point; membership and not_membership filter, together as the spec's
// "or"; other values are 400 M_INVALID_PARAM.
func TestMembersAtAndFilters(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		sendText(t, alice, room, "Hello world!")
		// The prev_batch of a sync's timeline (of one event: the message)
		// and a sync's next_batch.
		one := must1(alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1}}}))(t)
		resp, _ := syncUntilFilter(t, alice, "", one.FilterID, "the room", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room] != nil })
		prev := resp.Rooms.Join[room].Timeline.PrevBatch
		_, next := syncNow(t, alice, "")
		join(t, bob, room.String())
		sendText(t, bob, room, "Hello back")
		members := func(q string) apiResp {
			return s.do(t, "GET", v3+"/rooms/"+p(room)+"/members"+q, alice.AccessToken, nil)
		}
		keys := func(r apiResp) map[string]string {
			out := map[string]string{}
			for _, ev := range r.JSON["chunk"].([]any) {
				e := ev.(map[string]any)
				out[e["state_key"].(string)] = e["content"].(map[string]any)["membership"].(string)
			}
			return out
		}
		for _, tok := range []string{prev, next} {
			if got := keys(members("?at="+url.QueryEscape(tok)).expect(t, 200)); len(got) != 1 || got[alice.UserID.String()] != "join" {
				t.Errorf("members at %s: %v", tok, got)
			}
		}
		if got := keys(members("").expect(t, 200)); len(got) != 2 {
			t.Errorf("members now: %v", got)
		}
		// A /messages token: the end of a backwards page from now.
		msgs := must1(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1))(t)
		if got := keys(members("?at="+url.QueryEscape(msgs.Start)).expect(t, 200)); len(got) != 2 {
			t.Errorf("members at the /messages start token: %v", got)
		}

		invite(t, alice, room, carol.UserID)
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		for q, want := range map[string]string{
			"?membership=join":                         "@alice:localhost=join",
			"?not_membership=leave":                    "@alice:localhost=join,@carol:localhost=invite",
			"?membership=leave":                        "@bob:localhost=leave",
			"?membership=invite&not_membership=invite": "@alice:localhost=join,@bob:localhost=leave,@carol:localhost=invite",
			"?membership=leave&not_membership=join":    "@bob:localhost=leave,@carol:localhost=invite",
			"?membership=join&not_membership=join":     "@alice:localhost=join,@bob:localhost=leave,@carol:localhost=invite",
			"?membership=ban":                          "",
		} {
			got := keys(members(q).expect(t, 200))
			var list []string
			for u, m := range got {
				list = append(list, u+"="+m)
			}
			sort.Strings(list)
			if strings.Join(list, ",") != want {
				t.Errorf("members%s: %v, want %s", q, list, want)
			}
		}
		// History for members only: dave, who joins now, may not see the
		// members as of an earlier token.
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.history_visibility/", alice.AccessToken, map[string]any{"history_visibility": "joined"}).expect(t, 200)
		sendText(t, alice, room, "before dave")
		_, early := syncNow(t, alice, "")
		dave := s.register(t, "dave")
		join(t, dave, room.String())
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/members?at="+url.QueryEscape(early), dave.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/members?at="+url.QueryEscape(early), alice.AccessToken, nil).expect(t, 200)
		members("?membership=joined").expectErr(t, 400, "M_INVALID_PARAM")
		members("?not_membership=x").expectErr(t, 400, "M_INVALID_PARAM")
		members("?at=nonsense").expectErr(t, 400, "M_INVALID_PARAM")
	})
}

// TestRichTopic: createRoom's topic becomes topic and m.topic (one
// text/plain representation); a topic event with m.topic shows its
// text/plain representation in the public room directory, the space
// hierarchy and search.
func TestRichTopic(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Topic: "All about happy hour"})
		st := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/m.room.topic/", alice.AccessToken, nil).expect(t, 200)
		mt, _ := st.JSON["m.topic"].(map[string]any)
		text, _ := mt["m.text"].([]any)
		if st.str("topic") != "All about happy hour" || len(text) != 1 || text[0].(map[string]any)["body"] != "All about happy hour" {
			t.Fatalf("createRoom topic: %s", st)
		}
		if m, ok := text[0].(map[string]any)["mimetype"]; ok && m != "text/plain" {
			t.Errorf("createRoom topic mimetype: %v", m)
		}
		// A rich topic whose plain text differs from the legacy field.
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.topic/", alice.AccessToken, map[string]any{
			"topic": "legacy words",
			"m.topic": map[string]any{"m.text": []any{
				map[string]any{"mimetype": "text/html", "body": "<b>Quarterly</b> planning"},
				map[string]any{"body": "Quarterly planning"},
			}}}).expect(t, 200)
		pub := s.do(t, "GET", v3+"/publicRooms", "", nil).expect(t, 200)
		chunk, _ := pub.JSON["chunk"].([]any)
		if len(chunk) != 1 || chunk[0].(map[string]any)["topic"] != "Quarterly planning" {
			t.Errorf("directory topic: %s", pub)
		}
		h := s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(room)+"/hierarchy", alice.AccessToken, nil).expect(t, 200)
		rooms, _ := h.JSON["rooms"].([]any)
		if len(rooms) != 1 || rooms[0].(map[string]any)["topic"] != "Quarterly planning" {
			t.Errorf("hierarchy topic: %s", h)
		}
		eventually(t, "the topic found by search", func() bool {
			r, err := alice.Search(ctx, &mautrix.ReqSearch{SearchTerm: "quarterly", Keys: []string{"content.topic"}})
			return err == nil && r != nil && len(r.Results) == 1
		})
	})
}

// TestKeysUploadOrderAndReupload: one-time keys are claimed in upload
// order (Complement's TestKeyClaimOrdering); identical device keys
// re-uploaded are fine, other ones replace them and bob sees the change
// in /keys/query; device keys without algorithms, keys or signatures are
// 400 M_BAD_JSON (sytest's "Rejects invalid device keys").
func TestKeysUploadOrderAndReupload(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		key := newTestKey(t)
		otk := func(n string) json.RawMessage {
			return key.sign(t, alice.UserID.String(), "ed25519:"+alice.DeviceID.String(), map[string]any{"key": "otk-" + n})
		}
		up := func(body map[string]any) apiResp {
			return s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, body)
		}
		up(map[string]any{"device_keys": deviceKeysOf(t, alice, key), "one_time_keys": map[string]any{"signed_curve25519:1": otk("1")}}).expect(t, 200)
		up(map[string]any{"one_time_keys": map[string]any{"signed_curve25519:0": otk("0")}}).expect(t, 200)
		claim := func() string {
			r := s.do(t, "POST", v3+"/keys/claim", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{
				alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}}}).expect(t, 200)
			for id := range r.JSON["one_time_keys"].(map[string]any)[alice.UserID.String()].(map[string]any)[alice.DeviceID.String()].(map[string]any) {
				return id
			}
			return ""
		}
		if a, b := claim(), claim(); a != "signed_curve25519:1" || b != "signed_curve25519:0" {
			t.Errorf("claim order: %s then %s", a, b)
		}

		edOf := func() string {
			r := s.do(t, "POST", v3+"/keys/query", bob.AccessToken, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}}).expect(t, 200)
			dk := r.JSON["device_keys"].(map[string]any)[alice.UserID.String()].(map[string]any)[alice.DeviceID.String()].(map[string]any)
			return dk["keys"].(map[string]any)["ed25519:"+alice.DeviceID.String()].(string)
		}
		up(map[string]any{"device_keys": deviceKeysOf(t, alice, key)}).expect(t, 200)
		if ed := edOf(); ed != key.pub {
			t.Errorf("after an identical re-upload: %s", ed)
		}
		other := newTestKey(t)
		up(map[string]any{"device_keys": deviceKeysOf(t, alice, other)}).expect(t, 200)
		if ed := edOf(); ed != other.pub {
			t.Errorf("after new identity keys: %s, want %s", ed, other.pub)
		}
		up(map[string]any{"device_keys": map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID}}).expectErr(t, 400, "M_BAD_JSON")
		up(map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": bob.DeviceID}}).expect(t, 400)
	})
}

// TestMembershipThroughStateAPI: PUT /state/m.room.member/{userId} is an
// ordinary state event under the auth rules: a per-room displayname, a
// join, an invite (with invite_state and is_direct), a kick, a ban and an
// unban; what the auth rules refuse is 403; bad content is 400.
func TestMembershipThroughStateAPI(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lobby"})
		put := func(cli *mautrix.Client, target id.UserID, content map[string]any) apiResp {
			return s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.member/"+p(target), cli.AccessToken, content)
		}
		member := func(u id.UserID) map[string]any { return s.stateOf(t, alice, room, "m.room.member", u.String()) }

		// A per-room displayname; the global profile stays.
		if put(alice, alice.UserID, map[string]any{"membership": "join", "displayname": "Overridden"}).expect(t, 200).str("event_id") == "" {
			t.Fatal("no event_id")
		}
		if m := member(alice.UserID); m["displayname"] != "Overridden" || m["membership"] != "join" {
			t.Errorf("alice's member event: %v", m)
		}
		if dn, err := alice.GetDisplayName(ctx, alice.UserID); err != nil || dn.DisplayName != "alice" {
			t.Errorf("global displayname: %v %v", dn, err)
		}
		// Joining through the state API, with a per-room name and a key of one's own.
		put(bob, bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby", "org.example.team": "ops"}).expect(t, 200)
		if m := member(bob.UserID); m["displayname"] != "Bobby" || m["org.example.team"] != "ops" || m["membership"] != "join" {
			t.Errorf("bob's join: %v", m)
		}
		// The same content again sends nothing new.
		a := put(bob, bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby", "org.example.team": "ops"}).expect(t, 200).str("event_id")
		b := put(bob, bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby", "org.example.team": "ops"}).expect(t, 200).str("event_id")
		if a != b {
			t.Errorf("identical joins gave two events: %s %s", a, b)
		}
		// bob may not change alice's membership or ban her.
		put(bob, alice.UserID, map[string]any{"membership": "join", "displayname": "pwned"}).expectErr(t, 403, "M_FORBIDDEN")
		put(bob, alice.UserID, map[string]any{"membership": "ban"}).expectErr(t, 403, "M_FORBIDDEN")
		put(bob, carol.UserID, map[string]any{"membership": "join"}).expectErr(t, 403, "M_FORBIDDEN")

		// An invite carries invite_state and is_direct to the invitee.
		_, since := syncNow(t, carol, "")
		put(alice, carol.UserID, map[string]any{"membership": "invite", "is_direct": true, "reason": "come"}).expect(t, 200)
		resp, _ := syncUntil(t, carol, since, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
		var inv map[string]any
		hasName := false
		for _, ev := range resp.Rooms.Invite[room].State.Events {
			if ev.Type.Type == "m.room.member" && ev.GetStateKey() == carol.UserID.String() {
				inv = ev.Content.Raw
			}
			if ev.Type.Type == "m.room.name" {
				hasName = true
			}
		}
		if inv == nil || inv["is_direct"] != true || inv["reason"] != "come" || !hasName {
			t.Errorf("invite_state: member %v, name %v", inv, hasName)
		}
		// Kick, ban and unban.
		put(alice, bob.UserID, map[string]any{"membership": "leave", "reason": "bye"}).expect(t, 200)
		if m := member(bob.UserID); m["membership"] != "leave" || m["reason"] != "bye" {
			t.Errorf("kick: %v", m)
		}
		put(alice, bob.UserID, map[string]any{"membership": "ban", "reason": "spam"}).expect(t, 200)
		if _, err := bob.JoinRoomByID(ctx, room); err == nil {
			t.Error("a banned user joined")
		}
		put(alice, bob.UserID, map[string]any{"membership": "leave"}).expect(t, 200)
		if m := member(bob.UserID); m["membership"] != "leave" {
			t.Errorf("unban: %v", m)
		}
		join(t, bob, room.String())
		// carol rejects her invite through the state API.
		put(carol, carol.UserID, map[string]any{"membership": "leave"}).expect(t, 200)

		// Bad content.
		put(alice, alice.UserID, map[string]any{"displayname": "x"}).expectErr(t, 400, "M_BAD_JSON")
		put(alice, alice.UserID, map[string]any{"membership": "joined"}).expectErr(t, 400, "M_BAD_JSON")
		put(alice, alice.UserID, map[string]any{"membership": "join", "displayname": 5}).expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.member/notauser", alice.AccessToken, map[string]any{"membership": "join"}).expectErr(t, 400, "M_INVALID_PARAM")
	})
}

// TestJoinWithContent: the body of /join (by room ID or alias) goes into
// the join event, reason and keys of the client's own (sytest's "POST
// /join/:room_id can join a room with custom content").
func TestJoinWithContent(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "custom"})
		s.do(t, "POST", v3+"/join/"+p(room), bob.AccessToken, map[string]any{"foo": "bar", "reason": "hello"}).expect(t, 200)
		s.do(t, "POST", v3+"/join/"+p("#custom:localhost"), carol.AccessToken, map[string]any{"foo": "baz"}).expect(t, 200)
		if m := s.stateOf(t, alice, room, "m.room.member", bob.UserID.String()); m["foo"] != "bar" || m["reason"] != "hello" || m["membership"] != "join" || m["displayname"] != "bob" {
			t.Errorf("bob's join: %v", m)
		}
		if m := s.stateOf(t, alice, room, "m.room.member", carol.UserID.String()); m["foo"] != "baz" || m["membership"] != "join" {
			t.Errorf("carol's join: %v", m)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/join", carol.AccessToken, map[string]any{"reason": 5}).expectErr(t, 400, "M_BAD_JSON")
	})
}

// TestUpgradeKeepsDirectAndBans: upgrading a direct room adds the new room
// beside the old one in its members' m.direct, re-invites a pending invitee
// with is_direct, and carries the bans over.
func TestUpgradeKeepsDirectAndBans(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol, mallory := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol"), s.register(t, "mallory")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID, carol.UserID}})
		join(t, bob, room.String())
		if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: mallory.UserID, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		setDirect := func(cli *mautrix.Client, other id.UserID) {
			s.do(t, "PUT", v3+"/user/"+p(cli.UserID)+"/account_data/m.direct", cli.AccessToken,
				map[string]any{other.String(): []string{"!elsewhere:localhost", room.String()}, "@x:localhost": []string{"!y:localhost"}}).expect(t, 200)
		}
		setDirect(alice, bob.UserID)
		setDirect(bob, alice.UserID)
		_, since := syncNow(t, carol, "")
		r := s.do(t, "POST", v3+"/rooms/"+p(room)+"/upgrade", alice.AccessToken, map[string]any{"new_version": "11"}).expect(t, 200)
		newRoom := id.RoomID(r.str("replacement_room"))

		for _, c := range []struct {
			cli   *mautrix.Client
			other id.UserID
		}{{alice, bob.UserID}, {bob, alice.UserID}} {
			d := s.do(t, "GET", v3+"/user/"+p(c.cli.UserID)+"/account_data/m.direct", c.cli.AccessToken, nil).expect(t, 200)
			rooms, _ := d.JSON[c.other.String()].([]any)
			if len(rooms) != 3 || rooms[1] != room.String() || rooms[2] != newRoom.String() {
				t.Errorf("%s's m.direct: %s", c.cli.UserID, d)
			}
			if other, _ := d.JSON["@x:localhost"].([]any); len(other) != 1 {
				t.Errorf("%s's other m.direct entries changed: %s", c.cli.UserID, d)
			}
		}
		// carol had not answered: she is invited to the new room, as a direct chat.
		resp, _ := syncUntil(t, carol, since, "the invite to the new room", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[newRoom] != nil })
		direct := false
		for _, ev := range resp.Rooms.Invite[newRoom].State.Events {
			if ev.Type.Type == "m.room.member" && ev.GetStateKey() == carol.UserID.String() && ev.Content.Raw["is_direct"] == true {
				direct = true
			}
		}
		if !direct {
			t.Errorf("carol's invite to the new room is not direct")
		}
		if m := s.stateOf(t, alice, newRoom, "m.room.member", mallory.UserID.String()); m["membership"] != "ban" || m["reason"] != "spam" {
			t.Errorf("mallory in the new room: %v", m)
		}
		join(t, carol, newRoom.String())
	})
}

// TestUnsignedMembership: every event served in a timeline carries
// unsigned.membership, the reader's membership right after it (spec
// v1.11) — in /sync, /messages, /context, /event, /search and /relations.
func TestUnsignedMembership(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		m1 := sendText(t, alice, room, "before bob")
		join(t, bob, room.String())
		m2 := sendText(t, alice, room, "with bob")
		reaction := s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.reaction/"+txn(), alice.AccessToken, map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": m2, "key": "👍"}}).expect(t, 200).str("event_id")
		membershipIn := func(raw []byte) map[string]string {
			var evs []struct {
				EventID  string `json:"event_id"`
				Unsigned struct {
					Membership *string `json:"membership"`
				} `json:"unsigned"`
			}
			if err := json.Unmarshal(raw, &evs); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			out := map[string]string{}
			for _, e := range evs {
				if e.Unsigned.Membership == nil {
					t.Errorf("event %s without unsigned.membership", e.EventID)
					continue
				}
				out[e.EventID] = *e.Unsigned.Membership
			}
			return out
		}
		field := func(r apiResp, path ...string) []byte {
			var v any = r.JSON
			for _, k := range path {
				v = v.(map[string]any)[k]
			}
			b, _ := json.Marshal(v)
			return b
		}

		// bob's initial sync: alice's first message came before he joined.
		_, sy := s.rawSync(t, bob, nil)
		b, _ := json.Marshal(sy["rooms"].(map[string]any)["join"].(map[string]any)[room.String()].(map[string]any)["timeline"].(map[string]any)["events"])
		got := membershipIn(b)
		if got[m1.String()] != "leave" || got[m2.String()] != "join" {
			t.Errorf("bob's /sync: %v", got)
		}
		// alice had no membership before her own join: the create event is "leave".
		leaves := 0
		for _, m := range membershipIn(field(s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=50", alice.AccessToken, nil).expect(t, 200), "chunk")) {
			if m != "join" {
				leaves++
			}
		}
		if leaves != 1 {
			t.Errorf("alice's /messages: %d events not \"join\"", leaves)
		}
		// bob leaves; what he reads afterwards still says what he was then.
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		// He sees his time in the room: his join, m2, the reaction ("join"), his leave ("leave").
		msgs := membershipIn(field(s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=50", bob.AccessToken, nil).expect(t, 200), "chunk"))
		joins, leaves := 0, 0
		for _, m := range msgs {
			switch m {
			case "join":
				joins++
			case "leave":
				leaves++
			}
		}
		if msgs[m2.String()] != "join" || msgs[reaction] != "join" || joins != 3 || leaves != 1 {
			t.Errorf("bob's /messages after leaving: %v", msgs)
		}
		ev := s.do(t, "GET", v3+"/rooms/"+p(room)+"/event/"+p(m2), bob.AccessToken, nil).expect(t, 200)
		if u, _ := ev.JSON["unsigned"].(map[string]any); u["membership"] != "join" {
			t.Errorf("/event: %s", ev)
		}
		c := s.do(t, "GET", v3+"/rooms/"+p(room)+"/context/"+p(m2)+"?limit=4", bob.AccessToken, nil).expect(t, 200)
		if u, _ := c.JSON["event"].(map[string]any)["unsigned"].(map[string]any); u["membership"] != "join" {
			t.Errorf("/context event: %s", c)
		}
		if before := membershipIn(field(c, "events_before")); len(before) == 0 {
			t.Errorf("/context events_before: %s", c)
		}
		rel := membershipIn(field(s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(room)+"/relations/"+p(m2), alice.AccessToken, nil).expect(t, 200), "chunk"))
		if rel[reaction] != "join" {
			t.Errorf("/relations: %v", rel)
		}
		// alice finds both messages, bob (who left, with shared history) the one of his time.
		for _, c := range []struct {
			cli  *mautrix.Client
			want int
		}{{alice, 2}, {bob, 1}} {
			r := s.do(t, "POST", v3+"/search", c.cli.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "bob"}}}).expect(t, 200)
			res, _ := r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"].([]any)
			if len(res) != c.want {
				t.Errorf("%s's /search: %s", c.cli.UserID, r)
			}
			for _, x := range res {
				ev := x.(map[string]any)["result"].(map[string]any)
				if m := ev["unsigned"].(map[string]any)["membership"]; m != "join" {
					t.Errorf("%s's /search: %v has %v", c.cli.UserID, ev["event_id"], m)
				}
			}
		}
	})
}

// TestMessagesLazyMembers: /messages with lazy_load_members answers, in
// state, the member events of the chunk's senders as of the chunk (with
// include_redundant_members too); without it, no state.
func TestMessagesLazyMembers(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		join(t, carol, room.String())
		sendText(t, bob, room, "one")
		sendText(t, carol, room, "two")
		sendText(t, bob, room, "three")
		stateKeys := func(filter string) []string {
			r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=2&filter="+url.QueryEscape(filter), alice.AccessToken, nil).expect(t, 200)
			var out []string
			st, _ := r.JSON["state"].([]any)
			for _, e := range st {
				ev := e.(map[string]any)
				if ev["type"] != "m.room.member" {
					t.Errorf("non-member state: %v", ev)
				}
				out = append(out, ev["state_key"].(string)+"="+ev["content"].(map[string]any)["membership"].(string))
			}
			sort.Strings(out)
			return out
		}
		want := bob.UserID.String() + "=join," + carol.UserID.String() + "=join"
		for _, f := range []string{`{"lazy_load_members":true}`, `{"lazy_load_members":true,"include_redundant_members":true}`} {
			if got := strings.Join(stateKeys(f), ","); got != want {
				t.Errorf("state with %s: %s, want %s", f, got, want)
			}
		}
		if got := stateKeys(`{}`); len(got) != 0 {
			t.Errorf("state without lazy loading: %v", got)
		}
	})
}

// TestRefreshTokensWire: "refresh_token": true at /register and /login
// gives refresh_token and expires_in_ms; the access token then expires
// (401 M_UNKNOWN_TOKEN, soft_logout true) and POST /refresh rotates both
// tokens; the refresh token used works again until the new tokens are
// used. Clients that do not ask keep tokens that do not expire.
func TestRefreshTokensWire(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_ACCESS_TOKEN_LIFETIME=2s"}, func(t *testing.T, s *server) {
		reg := s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": "password-alice",
			"auth": map[string]any{"type": "m.login.dummy"}, "refresh_token": true}).expect(t, 200)
		if reg.str("refresh_token") == "" || reg.JSON["expires_in_ms"] != float64(2000) {
			t.Fatalf("register: %s", reg)
		}
		plain := s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice"}).expect(t, 200)
		if _, ok := plain.JSON["refresh_token"]; ok {
			t.Errorf("login without refresh_token: %s", plain)
		}
		if _, ok := plain.JSON["expires_in_ms"]; ok {
			t.Errorf("login without refresh_token: %s", plain)
		}
		login := s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice", "refresh_token": true}).expect(t, 200)
		if login.str("refresh_token") == "" || login.JSON["expires_in_ms"] != float64(2000) {
			t.Fatalf("login: %s", login)
		}
		whoami := func(tok string) apiResp { return s.do(t, "GET", v3+"/account/whoami", tok, nil) }
		whoami(login.str("access_token")).expect(t, 200)
		eventually(t, "the access token to expire", func() bool { return whoami(login.str("access_token")).Status == 401 })
		if r := whoami(login.str("access_token")).expectErr(t, 401, "M_UNKNOWN_TOKEN"); r.JSON["soft_logout"] != true {
			t.Errorf("expired token: %s", r)
		}
		whoami(plain.str("access_token")).expect(t, 200)

		refresh := func(tok string) apiResp {
			return s.do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": tok})
		}
		r1 := refresh(login.str("refresh_token")).expect(t, 200)
		if r1.str("access_token") == "" || r1.str("refresh_token") == "" || r1.JSON["expires_in_ms"] != float64(2000) {
			t.Fatalf("refresh: %s", r1)
		}
		// Lost answer: the same refresh token again.
		r2 := refresh(login.str("refresh_token")).expect(t, 200)
		if w := whoami(r2.str("access_token")).expect(t, 200); w.str("device_id") != login.str("device_id") {
			t.Errorf("refreshed token's device: %s", w)
		}
		// The new access token was used: the old refresh token is revoked.
		refresh(login.str("refresh_token")).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		refresh(r1.str("refresh_token")).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		refresh(r2.str("refresh_token")).expect(t, 200)
		refresh("hvr_nonsense").expectErr(t, 401, "M_UNKNOWN_TOKEN")
		// An expired token may still log out; its refresh token ends with it.
		r3 := refresh(r2.str("refresh_token")).expect(t, 200)
		eventually(t, "the refreshed token to expire", func() bool { return whoami(r3.str("access_token")).Status == 401 })
		s.do(t, "POST", v3+"/logout", r3.str("access_token"), map[string]any{}).expect(t, 200)
		refresh(r3.str("refresh_token")).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		s.do(t, "POST", v3+"/refresh", "", map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
	})
}
