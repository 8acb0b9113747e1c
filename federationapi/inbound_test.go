package federationapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

const (
	alice = "@alice:" + localName
	bob   = "@bob:" + localName
	rita  = "@rita:" + remoteName
	eve   = "@eve:" + otherName
)

func sendPath(txnID string) string { return "/_matrix/federation/v1/send/" + txnID }

func message(body string) string { return fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body) }

// TestSend covers /send: PDUs one by one (stored, or refused with their
// reason in the answer), the transaction's bounds and idempotency, EDUs of
// the origin's users only, and the room's server ACL.
func TestSend(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, ver := range []string{"1", "10"} {
			t.Run("v"+ver, func(t *testing.T) { testSend(t, db, ver) })
		}
	})
}

func testSend(t *testing.T, db *storage.DB, ver string) {
	e := newEnv(t, db)
	roomID := e.publicRoom(ver)
	e.joinRemote(roomID, rita)
	wrongKey := newKey(t, string(e.remote.ID))

	good := e.build(roomID, rita, "m.room.message", nil, message("hello"), remoteName, e.remote)
	res := pduResults(t, e.do("PUT", sendPath("t1"), remoteName, txn([]json.RawMessage{good.JSON()})))
	if r, ok := res[good.EventID()]; !ok || r.Error != "" {
		t.Fatalf("good PDU: %v", res)
	}
	if !e.stored(good.EventID()) {
		t.Fatal("good PDU not stored")
	}

	// Refused PDUs, each on its own with its reason, beside a good one.
	badSig := e.build(roomID, rita, "m.room.message", nil, message("forged"), remoteName, wrongKey)
	stranger := e.build(roomID, "@stranger:"+remoteName, "m.room.message", nil, message("not in room"), remoteName, e.remote)
	unknownRoom := map[string]any{"event_id": "$unknown:remote.test", "room_id": "!nowhere:" + remoteName, "type": "m.room.message",
		"sender": rita, "content": map[string]any{}, "prev_events": []any{}, "auth_events": []any{}, "depth": 1, "origin_server_ts": 1}
	unknownJSON, _ := json.Marshal(unknownRoom)
	malformed := fmt.Sprintf(`{"event_id":"$malformed:remote.test","room_id":%q,"type":5}`, roomID)
	good2 := e.build(roomID, rita, "m.room.message", nil, message("second"), remoteName, e.remote)
	body := txn([]json.RawMessage{badSig.JSON(), stranger.JSON(), unknownJSON, json.RawMessage(malformed),
		json.RawMessage(`"not an event"`), json.RawMessage(`[1,2]`), json.RawMessage(`{}`), good2.JSON()})
	res = pduResults(t, e.do("PUT", sendPath("t2"), remoteName, body))
	for _, c := range []struct {
		name, id, want string
	}{
		{"bad signature", badSig.EventID(), "signature"},
		{"sender not in room", stranger.EventID(), "not"},
		{"unknown room", "$unknown:remote.test", "Unknown room"},
		{"malformed", "$malformed:remote.test", "Invalid event"},
	} {
		r, ok := res[c.id]
		if !ok || !strings.Contains(r.Error, c.want) {
			t.Errorf("%s: result %+v (present %v), want an error with %q; all %v", c.name, r, ok, c.want, res)
		}
	}
	if r, ok := res[good2.EventID()]; !ok || r.Error != "" {
		t.Errorf("good PDU beside bad ones: %v", res)
	}
	if e.stored(badSig.EventID()) || e.stored(stranger.EventID()) {
		t.Error("a refused PDU is in the timeline")
	}
	if !e.stored(good2.EventID()) {
		t.Error("the good PDU beside bad ones is not stored")
	}

	t.Run("idempotent", func(t *testing.T) {
		m := e.build(roomID, rita, "m.room.message", nil, message("once"), remoteName, e.remote)
		first := e.do("PUT", sendPath("again"), remoteName, txn([]json.RawMessage{m.JSON()}))
		wantOK(t, first)
		// The same transaction ID again, even with other content: the
		// first answer, nothing stored.
		other := e.build(roomID, rita, "m.room.message", nil, message("twice"), remoteName, e.remote)
		second := e.do("PUT", sendPath("again"), remoteName, txn([]json.RawMessage{other.JSON()}))
		if second.status != first.status || string(second.body) != string(first.body) {
			t.Fatalf("second answer %d %s, first %d %s", second.status, second.body, first.status, first.body)
		}
		if e.stored(other.EventID()) {
			t.Fatal("a repeated transaction stored its events")
		}
		// The same ID from another origin is another transaction.
		res := pduResults(t, e.do("PUT", sendPath("again"), otherName, txn([]json.RawMessage{other.JSON()})))
		if _, ok := res[other.EventID()]; !ok {
			t.Fatalf("same txn ID from another origin: %v", res)
		}
	})

	t.Run("bounds", func(t *testing.T) {
		many := make([]json.RawMessage, 51)
		for i := range many {
			many[i] = good.JSON()
		}
		wantErr(t, e.do("PUT", sendPath("many"), remoteName, txn(many)), http.StatusBadRequest, "M_BAD_JSON")
		edus := make([]map[string]any, 101)
		for i := range edus {
			edus[i] = map[string]any{"edu_type": "m.typing", "content": map[string]any{}}
		}
		wantErr(t, e.do("PUT", sendPath("edus"), remoteName, txn(nil, edus...)), http.StatusBadRequest, "M_BAD_JSON")
		wantErr(t, e.do("PUT", sendPath("notjson"), remoteName, "{"), http.StatusBadRequest, "M_NOT_JSON")
		// Exactly 50 is fine.
		wantOK(t, e.do("PUT", sendPath("fifty"), remoteName, txn(many[:50])))
	})

	t.Run("edus", func(t *testing.T) {
		typing := func(user string) map[string]any {
			return map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": user, "typing": true}}
		}
		receipt := func(user string) map[string]any {
			return map[string]any{"edu_type": "m.receipt", "content": map[string]any{roomID: map[string]any{
				"m.read": map[string]any{user: map[string]any{"event_ids": []string{good.EventID()}, "data": map[string]any{"ts": 1}}}}}}
		}
		wantOK(t, e.do("PUT", sendPath("edu1"), remoteName, txn(nil,
			typing(rita), typing(eve), typing(alice), receipt(rita), receipt(eve),
			map[string]any{"edu_type": "m.unknown", "content": 5},
			map[string]any{"edu_type": "m.typing", "content": "junk"})))
		ty, rc := e.eph.seen()
		if want := []string{rita + "|" + roomID + "|true"}; !slices.Equal(ty, want) {
			t.Errorf("typing %v, want %v", ty, want)
		}
		if want := []string{rita + "|" + roomID + "|" + good.EventID()}; !slices.Equal(rc, want) {
			t.Errorf("receipts %v, want %v", rc, want)
		}
	})

	t.Run("server ACL", func(t *testing.T) {
		if _, err := e.rs.Send(e.ctx, roomserver.Sender{UserID: alice}, roomserver.SendRequest{RoomID: roomID,
			Type: "m.room.server_acl", StateKey: strp(""), Content: json.RawMessage(`{"allow":["*"],"deny":["remote.test"]}`)}); err != nil {
			t.Fatal(err)
		}
		m := e.build(roomID, rita, "m.room.message", nil, message("banned"), remoteName, e.remote)
		res := pduResults(t, e.do("PUT", sendPath("acl"), remoteName, txn([]json.RawMessage{m.JSON()},
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": rita, "typing": false}})))
		if r, ok := res[m.EventID()]; !ok || !strings.Contains(r.Error, "ACL") {
			t.Errorf("PDU of a server the ACL denies: %v", res)
		}
		if e.stored(m.EventID()) {
			t.Error("PDU of a denied server stored")
		}
		if ty, _ := e.eph.seen(); len(ty) != 1 {
			t.Errorf("typing of a denied server taken: %v", ty)
		}
		wantErr(t, e.do("GET", "/_matrix/federation/v1/make_join/"+roomID+"/@new:remote.test?ver="+ver, remoteName, nil),
			http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, e.do("GET", "/_matrix/federation/v1/make_leave/"+roomID+"/"+rita, remoteName, nil),
			http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestMakeJoin covers the make_join template and its refusals.
func TestMakeJoin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		public := e.publicRoom("10")
		res, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: "private_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		private := res.RoomID
		path := func(roomID, userID, query string) string {
			return "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID) + query
		}

		r := e.do("GET", path(public, rita, "?ver=9&ver=10"), remoteName, nil)
		wantOK(t, r)
		var tmpl struct {
			RoomVersion string         `json:"room_version"`
			Event       map[string]any `json:"event"`
		}
		r.decode(t, &tmpl)
		ev := tmpl.Event
		content, _ := ev["content"].(map[string]any)
		if tmpl.RoomVersion != "10" || ev["sender"] != rita || ev["state_key"] != rita || ev["type"] != "m.room.member" ||
			ev["room_id"] != public || content["membership"] != "join" {
			t.Fatalf("template %s", r.body)
		}
		ext, _ := e.rs.Extremities(e.ctx, public)
		if prev, _ := ev["prev_events"].([]any); len(prev) != 1 || prev[0] != ext[0] {
			t.Errorf("prev_events %v, want %v", ev["prev_events"], ext)
		}
		if auth, _ := ev["auth_events"].([]any); len(auth) != 3 { // create, join rules, power levels
			t.Errorf("auth_events %v", ev["auth_events"])
		}
		if d, _ := ev["depth"].(float64); d < 2 {
			t.Errorf("depth %v", ev["depth"])
		}

		for _, c := range []struct {
			name, path, origin string
			status             int
			errcode            string
		}{
			{"user of another server", path(public, eve, "?ver=10"), remoteName, 403, "M_FORBIDDEN"},
			{"local user", path(public, bob, "?ver=10"), remoteName, 403, "M_FORBIDDEN"},
			{"unknown room", path("!nowhere:"+localName, rita, "?ver=10"), remoteName, 404, "M_NOT_FOUND"},
			{"not a room ID", path("nowhere", rita, "?ver=10"), remoteName, 400, "M_INVALID_PARAM"},
			{"room ID with NUL", path("!a\x00b:"+localName, rita, "?ver=10"), remoteName, 400, "M_INVALID_PARAM"},
			{"room ID not UTF-8", path("!a\xffb:"+localName, rita, "?ver=10"), remoteName, 400, "M_INVALID_PARAM"},
			{"version not supported", path(public, rita, "?ver=1&ver=2"), remoteName, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
			{"no ver means v1", path(public, rita, ""), remoteName, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
			{"invite only", path(private, rita, "?ver=10"), remoteName, 403, "M_FORBIDDEN"},
		} {
			t.Run(c.name, func(t *testing.T) {
				wantErr(t, e.do("GET", c.path, c.origin, nil), c.status, c.errcode)
			})
		}
	})
}

// TestSendJoin covers send_join: a join built from the template is stored
// and answered with the room's state and auth chain; malformed or foreign
// joins are refused.
func TestSendJoin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")
		makeJoin := func(user, from string) reply {
			return e.do("GET", "/_matrix/federation/v1/make_join/"+roomID+"/"+user+"?ver=10", from, nil)
		}
		sendJoin := func(v, eventID, from string, body any) reply {
			return e.do("PUT", "/_matrix/federation/"+v+"/send_join/"+roomID+"/"+eventID, from, body)
		}

		join := e.fromTemplate(makeJoin(rita, remoteName), remoteName, e.remote)
		r := sendJoin("v2", join.EventID(), remoteName, join.JSON())
		wantOK(t, r)
		var ans struct {
			Origin    string            `json:"origin"`
			State     []json.RawMessage `json:"state"`
			AuthChain []json.RawMessage `json:"auth_chain"`
			Event     json.RawMessage   `json:"event"`
		}
		r.decode(t, &ans)
		ids := func(l []json.RawMessage) map[string]string { // event ID -> type
			out := map[string]string{}
			v := e.verImpl(roomID)
			for _, raw := range l {
				p, err := v.NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatalf("answered event: %v", err)
				}
				out[p.EventID()] = p.Type()
			}
			return out
		}
		state, chain := ids(ans.State), ids(ans.AuthChain)
		create, err := e.rs.CurrentStateEvent(e.ctx, roomID, "m.room.create", "")
		if err != nil {
			t.Fatal(err)
		}
		if state[create.EventID] == "" || chain[create.EventID] == "" {
			t.Errorf("create event missing: state %v chain %v", state, chain)
		}
		for _, id := range join.AuthEventIDs() {
			if chain[id] == "" && state[id] == "" {
				t.Errorf("auth event %s of the join neither in the state %v nor in the auth chain %v", id, state, chain)
			}
		}
		if _, ok := state[join.EventID()]; ok {
			t.Error("the join is in the state before it")
		}
		if ans.Origin != localName || len(ans.Event) == 0 {
			t.Errorf("origin %q event %s", ans.Origin, ans.Event)
		}
		if m := e.membership(roomID, rita); m != "join" {
			t.Fatalf("membership after send_join %q", m)
		}

		// v1 answers [200, body].
		join2 := e.fromTemplate(makeJoin("@rob:"+remoteName, remoteName), remoteName, e.remote)
		r = sendJoin("v1", join2.EventID(), remoteName, join2.JSON())
		wantOK(t, r)
		var v1 []json.RawMessage
		r.decode(t, &v1)
		if len(v1) != 2 || string(v1[0]) != "200" {
			t.Fatalf("v1 answer %s", r.body)
		}

		// Joins that must be refused.
		tmpl := func(user, from string) gomatrixserverlib.ProtoEvent {
			var t2 struct {
				Event gomatrixserverlib.ProtoEvent `json:"event"`
			}
			makeJoin(user, from).decode(t, &t2)
			return t2.Event
		}
		sign := func(p gomatrixserverlib.ProtoEvent, server string, key serverkey.Key) gomatrixserverlib.PDU {
			pdu, err := e.verImpl(roomID).NewEventBuilderFromProtoEvent(&p).Build(time.Now(), spec.ServerName(server), key.ID, key.Private)
			if err != nil {
				t.Fatal(err)
			}
			return pdu
		}
		leaveContent := tmpl("@ron:"+remoteName, remoteName)
		leaveContent.Content = spec.RawJSON(`{"membership":"leave"}`)
		notJoin := sign(leaveContent, remoteName, e.remote)
		otherKey := tmpl("@ron:"+remoteName, remoteName)
		otherStateKey := tmpl("@ron:"+remoteName, remoteName)
		otherStateKey.StateKey = strp("@roy:" + remoteName)
		foreign := sign(tmpl(eve, otherName), otherName, e.other) // well signed by other.test
		badSig := sign(otherKey, remoteName, newKey(t, string(e.remote.ID)))
		okJoin := sign(tmpl("@ron:"+remoteName, remoteName), remoteName, e.remote)
		for _, c := range []struct {
			name, eventID string
			body          any
			status        int
			errcode       string
		}{
			{"event ID mismatch", "$other", okJoin.JSON(), 400, "M_BAD_JSON"},
			{"not a join", notJoin.EventID(), notJoin.JSON(), 400, "M_BAD_JSON"},
			{"state_key not the sender", sign(otherStateKey, remoteName, e.remote).EventID(), sign(otherStateKey, remoteName, e.remote).JSON(), 400, "M_BAD_JSON"},
			{"sender of another server", foreign.EventID(), foreign.JSON(), 403, "M_FORBIDDEN"},
			{"bad signature", badSig.EventID(), badSig.JSON(), 403, "M_FORBIDDEN"},
			{"not JSON", "$x", "{", 400, "M_NOT_JSON"},
			{"not an event", "$x", `{"type":"m.room.member"}`, 400, "M_BAD_JSON"},
			{"empty body", "$x", "", 400, "M_NOT_JSON"},
		} {
			t.Run(c.name, func(t *testing.T) {
				wantErr(t, sendJoin("v2", c.eventID, remoteName, c.body), c.status, c.errcode)
			})
		}
		t.Run("unknown room", func(t *testing.T) {
			wantErr(t, e.do("PUT", "/_matrix/federation/v2/send_join/!nowhere:local.test/"+okJoin.EventID(), remoteName, okJoin.JSON()),
				http.StatusNotFound, "M_NOT_FOUND")
		})
		if e.membership(roomID, "@ron:"+remoteName) != "" || e.membership(roomID, eve) != "" {
			t.Error("a refused join changed a membership")
		}
	})
}

// inviteEvent builds an invite of a room that lives on remote.test.
func inviteEvent(t *testing.T, roomID, sender, target, server string, key serverkey.Key) gomatrixserverlib.PDU {
	t.Helper()
	v, err := gomatrixserverlib.GetRoomVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: "m.room.member", StateKey: &target,
		Content: spec.RawJSON(`{"membership":"invite"}`), PrevEvents: []string{"$prev"}, AuthEvents: []string{"$create", "$join"}, Depth: 5}
	pdu, err := v.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), spec.ServerName(server), key.ID, key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return pdu
}

// TestInvite covers invite v2.
func TestInvite(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		remoteRoom := "!elsewhere:" + remoteName
		invite := func(ev gomatrixserverlib.PDU, from, ver string) reply {
			body := map[string]any{"event": json.RawMessage(ev.JSON()), "room_version": ver,
				"invite_room_state": []any{map[string]any{"type": "m.room.name", "state_key": "", "sender": rita, "content": map[string]any{"name": "Elsewhere"}}}}
			return e.do("PUT", "/_matrix/federation/v2/invite/"+ev.RoomID().String()+"/"+ev.EventID(), from, body)
		}

		ev := inviteEvent(t, remoteRoom, rita, bob, remoteName, e.remote)
		r := invite(ev, remoteName, "10")
		wantOK(t, r)
		var ans struct {
			Event struct {
				Signatures map[string]map[string]string `json:"signatures"`
			} `json:"event"`
		}
		r.decode(t, &ans)
		if len(ans.Event.Signatures[localName]) != 1 || len(ans.Event.Signatures[remoteName]) != 1 {
			t.Fatalf("signatures %v", ans.Event.Signatures)
		}
		if m := e.membership(remoteRoom, bob); m != "invite" {
			t.Fatalf("bob's membership %q", m)
		}

		// An invite into a room of this server, by a remote member.
		local := e.publicRoom("10")
		e.joinRemote(local, rita)
		in := e.build(local, rita, "m.room.member", strp(bob), `{"membership":"invite"}`, remoteName, e.remote)
		wantOK(t, invite(in, remoteName, "10"))
		if m := e.membership(local, bob); m != "invite" {
			t.Fatalf("bob's membership in the local room %q", m)
		}

		unknown := inviteEvent(t, remoteRoom, rita, "@nobody:"+localName, remoteName, e.remote)
		foreignInvitee := inviteEvent(t, remoteRoom, rita, "@x:"+otherName, remoteName, e.remote)
		foreignInviter := inviteEvent(t, remoteRoom, eve, bob, otherName, e.other)
		badSig := inviteEvent(t, remoteRoom, rita, bob, remoteName, newKey(t, string(e.remote.ID)))
		for _, c := range []struct {
			name    string
			do      func() reply
			status  int
			errcode string
		}{
			{"unknown local user", func() reply { return invite(unknown, remoteName, "10") }, 404, "M_NOT_FOUND"},
			{"invitee of another server", func() reply { return invite(foreignInvitee, remoteName, "10") }, 400, "M_BAD_JSON"},
			{"inviter of another server", func() reply { return invite(foreignInviter, remoteName, "10") }, 403, "M_FORBIDDEN"},
			{"bad signature", func() reply { return invite(badSig, remoteName, "10") }, 403, "M_FORBIDDEN"},
			{"unsupported version", func() reply { return invite(ev, remoteName, "999") }, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
			{"event ID mismatch", func() reply {
				return e.do("PUT", "/_matrix/federation/v2/invite/"+remoteRoom+"/$other", remoteName,
					map[string]any{"event": json.RawMessage(ev.JSON()), "room_version": "10"})
			}, 400, "M_BAD_JSON"},
			{"no event", func() reply {
				return e.do("PUT", "/_matrix/federation/v2/invite/"+remoteRoom+"/$x", remoteName, `{"room_version":"10"}`)
			}, 400, "M_BAD_JSON"},
			{"not JSON", func() reply {
				return e.do("PUT", "/_matrix/federation/v2/invite/"+remoteRoom+"/$x", remoteName, `[`)
			}, 400, "M_NOT_JSON"},
		} {
			t.Run(c.name, func(t *testing.T) { wantErr(t, c.do(), c.status, c.errcode) })
		}
	})
}

// TestSoftFailed sends events that pass the auth rules at their place in
// the DAG but not against the room's current state (their sender banned
// since): kept, never shown, and never a 500.
func TestSoftFailed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")
		join := e.joinRemote(roomID, rita)
		if err := e.rs.Ban(e.ctx, alice, roomID, rita, "spam"); err != nil {
			t.Fatal(err)
		}
		m := e.buildAfter(roomID, join.EventID(), rita, "m.room.message", nil, message("late"), remoteName, e.remote)
		res := pduResults(t, e.do("PUT", sendPath("sf"), remoteName, txn([]json.RawMessage{m.JSON()})))
		if r, ok := res[m.EventID()]; !ok || r.Error != "" {
			t.Errorf("soft-failed PDU: %v", res)
		}
		if e.stored(m.EventID()) {
			t.Error("a soft-failed PDU is in the timeline")
		}
		inv := e.buildAfter(roomID, join.EventID(), rita, "m.room.member", strp(bob), `{"membership":"invite"}`, remoteName, e.remote)
		wantErr(t, e.do("PUT", "/_matrix/federation/v2/invite/"+roomID+"/"+inv.EventID(), remoteName,
			map[string]any{"event": json.RawMessage(inv.JSON()), "room_version": "10"}), http.StatusForbidden, "M_FORBIDDEN")
		if m := e.membership(roomID, bob); m != "" {
			t.Errorf("bob's membership after a soft-failed invite %q", m)
		}
		// An invite refused by the auth rules (rita is banned in the state
		// it is built on).
		inv2 := e.build(roomID, rita, "m.room.member", strp(bob), `{"membership":"invite"}`, remoteName, e.remote)
		wantErr(t, e.do("PUT", "/_matrix/federation/v2/invite/"+roomID+"/"+inv2.EventID(), remoteName,
			map[string]any{"event": json.RawMessage(inv2.JSON()), "room_version": "10"}), http.StatusForbidden, "M_FORBIDDEN")
		// A leave built before the ban, sent after it.
		leave := e.buildAfter(roomID, join.EventID(), rita, "m.room.member", strp(rita), `{"membership":"leave"}`, remoteName, e.remote)
		wantErr(t, e.do("PUT", "/_matrix/federation/v2/send_leave/"+roomID+"/"+leave.EventID(), remoteName, leave.JSON()),
			http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestLeave covers make_leave and send_leave of a remote member.
func TestLeave(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")
		rob := "@rob:" + remoteName
		e.joinRemote(roomID, rita)
		e.joinRemote(roomID, rob)
		makeLeave := func(user, from string) reply {
			return e.do("GET", "/_matrix/federation/v1/make_leave/"+roomID+"/"+user, from, nil)
		}

		r := makeLeave(rita, remoteName)
		wantOK(t, r)
		var tmpl struct {
			Event struct {
				Content struct {
					Membership string `json:"membership"`
				} `json:"content"`
			} `json:"event"`
		}
		r.decode(t, &tmpl)
		if tmpl.Event.Content.Membership != "leave" {
			t.Fatalf("template %s", r.body)
		}
		leave := e.fromTemplate(r, remoteName, e.remote)
		r = e.do("PUT", "/_matrix/federation/v2/send_leave/"+roomID+"/"+leave.EventID(), remoteName, leave.JSON())
		wantOK(t, r)
		if string(r.body) != "{}" {
			t.Errorf("v2 answer %s", r.body)
		}
		if m := e.membership(roomID, rita); m != "leave" {
			t.Fatalf("membership after send_leave %q", m)
		}

		leave2 := e.fromTemplate(makeLeave(rob, remoteName), remoteName, e.remote)
		r = e.do("PUT", "/_matrix/federation/v1/send_leave/"+roomID+"/"+leave2.EventID(), remoteName, leave2.JSON())
		wantOK(t, r)
		if string(r.body) != "[200,{}]" {
			t.Errorf("v1 answer %s", r.body)
		}

		join := e.fromTemplate(e.do("GET", "/_matrix/federation/v1/make_join/"+roomID+"/"+rita+"?ver=10", remoteName, nil), remoteName, e.remote)
		wantErr(t, makeLeave(eve, remoteName), 403, "M_FORBIDDEN")
		wantErr(t, makeLeave(rita, remoteName+"x"), 403, "M_FORBIDDEN")
		wantErr(t, e.do("GET", "/_matrix/federation/v1/make_leave/!nowhere:local.test/"+rita, remoteName, nil), 404, "M_NOT_FOUND")
		wantErr(t, e.do("PUT", "/_matrix/federation/v2/send_leave/"+roomID+"/"+join.EventID(), remoteName, join.JSON()), 400, "M_BAD_JSON")
	})
}

// TestQueries covers query/profile and query/directory.
func TestQueries(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")
		if err := e.rs.SetAlias(e.ctx, alice, "#pub:"+localName, roomID); err != nil {
			t.Fatal(err)
		}
		e.joinRemote(roomID, rita)
		q := func(path string, params url.Values) reply {
			return e.do("GET", "/_matrix/federation/v1/query/"+path+"?"+params.Encode(), remoteName, nil)
		}
		v := func(kv ...string) url.Values {
			out := url.Values{}
			for i := 0; i < len(kv); i += 2 {
				out.Set(kv[i], kv[i+1])
			}
			return out
		}
		for _, c := range []struct {
			name   string
			params url.Values
			want   string
		}{
			{"all", v("user_id", bob), `{"avatar_url":"mxc://local.test/bob","displayname":"Bob"}`},
			{"displayname", v("user_id", bob, "field", "displayname"), `{"displayname":"Bob"}`},
			{"avatar_url", v("user_id", bob, "field", "avatar_url"), `{"avatar_url":"mxc://local.test/bob"}`},
			{"empty profile", v("user_id", alice), `{}`},
		} {
			t.Run("profile "+c.name, func(t *testing.T) {
				r := q("profile", c.params)
				wantOK(t, r)
				if string(r.body) != c.want {
					t.Errorf("got %s, want %s", r.body, c.want)
				}
			})
		}
		for _, c := range []struct {
			name    string
			path    string
			params  url.Values
			status  int
			errcode string
		}{
			{"profile no user", "profile", v(), 400, "M_INVALID_PARAM"},
			{"profile bad user", "profile", v("user_id", "bob"), 400, "M_INVALID_PARAM"},
			{"profile remote user", "profile", v("user_id", rita), 400, "M_INVALID_PARAM"},
			{"profile unknown field", "profile", v("user_id", bob, "field", "email"), 400, "M_INVALID_PARAM"},
			{"profile unknown user", "profile", v("user_id", "@nobody:"+localName), 404, "M_NOT_FOUND"},
			{"profile user with NUL", "profile", v("user_id", "@a\x00b:"+localName), 400, "M_INVALID_PARAM"},
			{"directory no alias", "directory", v(), 400, "M_INVALID_PARAM"},
			{"directory bad alias", "directory", v("room_alias", "pub"), 400, "M_INVALID_PARAM"},
			{"directory other server", "directory", v("room_alias", "#pub:"+remoteName), 404, "M_NOT_FOUND"},
			{"directory unknown alias", "directory", v("room_alias", "#nope:"+localName), 404, "M_NOT_FOUND"},
			{"directory alias with NUL", "directory", v("room_alias", "#a\x00b:"+localName), 400, "M_INVALID_PARAM"},
			{"directory alias not UTF-8", "directory", v("room_alias", "#a\xffb:"+localName), 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) { wantErr(t, q(c.path, c.params), c.status, c.errcode) })
		}
		r := q("directory", v("room_alias", "#pub:"+localName))
		wantOK(t, r)
		var dir struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		r.decode(t, &dir)
		if dir.RoomID != roomID || !slices.Equal(dir.Servers, []string{localName, remoteName}) {
			t.Errorf("directory answer %s", r.body)
		}
	})
}

// TestSignedRequests goes through keys.Authenticate: the origin is the
// request's signer, and what the handlers check against it holds.
func TestSignedRequests(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")

		// A join made through signed requests.
		r := e.doSigned("GET", "/_matrix/federation/v1/make_join/"+roomID+"/"+url.PathEscape(rita)+"?ver=10", remoteName, e.remote, nil)
		join := e.fromTemplate(r, remoteName, e.remote)
		wantOK(t, e.doSigned("PUT", "/_matrix/federation/v2/send_join/"+roomID+"/"+url.PathEscape(join.EventID()), remoteName, e.remote, json.RawMessage(join.JSON())))

		m := e.build(roomID, rita, "m.room.message", nil, message("signed"), remoteName, e.remote)
		res := pduResults(t, e.doSigned("PUT", sendPath("s1"), remoteName, e.remote, txn([]json.RawMessage{m.JSON()})))
		if r, ok := res[m.EventID()]; !ok || r.Error != "" {
			t.Fatalf("signed /send: %v", res)
		}

		// other.test, well signed, cannot make a join for remote.test's user.
		wantErr(t, e.doSigned("GET", "/_matrix/federation/v1/make_join/"+roomID+"/"+url.PathEscape("@new:"+remoteName)+"?ver=10", otherName, e.other, nil),
			http.StatusForbidden, "M_FORBIDDEN")
		// A request signed with a key that is not remote.test's.
		wantErr(t, e.doSigned("PUT", sendPath("s2"), remoteName, newKey(t, string(e.remote.ID)), txn(nil)), http.StatusUnauthorized, "M_UNAUTHORIZED")
		// A server the allowlist refuses.
		wantErr(t, e.doSigned("PUT", sendPath("s3"), "denied.test", e.remote, txn(nil)), http.StatusForbidden, "M_FORBIDDEN")
		// No signature.
		req, err := http.NewRequestWithContext(e.ctx, "PUT", e.authURL+sendPath("s4"), strings.NewReader(`{"pdus":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, e.roundTrip(req), http.StatusUnauthorized, "M_UNAUTHORIZED")
		// The public routes need none.
		req, _ = http.NewRequestWithContext(e.ctx, "GET", e.authURL+"/_matrix/federation/v1/openid/userinfo?access_token=good", nil)
		r = e.roundTrip(req)
		wantOK(t, r)
		if !strings.Contains(string(r.body), bob) {
			t.Errorf("userinfo %s", r.body)
		}
		req, _ = http.NewRequestWithContext(e.ctx, "GET", e.authURL+"/_matrix/federation/v1/openid/userinfo?access_token=bad", nil)
		wantErr(t, e.roundTrip(req), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// escapeAll percent-encodes every byte but the unreserved ones, as some
// servers do for each path segment ("$" as %24, ":" as %3A, "/" as %2F).
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestEscapedPaths sends IDs in the path percent-encoded in full (as
// other servers do) and with literal "!" beside escaped "/" (the event IDs
// of room versions 1 to 3 hold "/"): the handlers see the IDs themselves.
func TestEscapedPaths(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		for _, c := range []struct {
			name string
			esc  func(string) string
		}{
			{"all escaped", escapeAll},
			{"path escaped", url.PathEscape},
			{"literal !", func(s string) string { return strings.ReplaceAll(url.PathEscape(s), "%21", "!") }},
		} {
			t.Run(c.name, func(t *testing.T) {
				roomID := e.publicRoom("3")
				// A join whose event ID holds a "/", when one comes up.
				var join gomatrixserverlib.PDU
				var user string
				for i := 0; i < 50; i++ {
					user = fmt.Sprintf("@u%d:%s", i, remoteName)
					r := e.do("GET", "/_matrix/federation/v1/make_join/"+c.esc(roomID)+"/"+c.esc(user)+"?ver=3", remoteName, nil)
					join = e.fromTemplate(r, remoteName, e.remote)
					if strings.Contains(join.EventID(), "/") {
						break
					}
				}
				wantOK(t, e.do("PUT", "/_matrix/federation/v2/send_join/"+c.esc(roomID)+"/"+c.esc(join.EventID()), remoteName, join.JSON()))
				if m := e.membership(roomID, user); m != "join" {
					t.Fatalf("membership %q", m)
				}
				m := e.build(roomID, user, "m.room.message", nil, message("escaped"), remoteName, e.remote)
				res := pduResults(t, e.do("PUT", "/_matrix/federation/v1/send/"+c.esc("txn/1:"+c.name), remoteName, txn([]json.RawMessage{m.JSON()})))
				if r, ok := res[m.EventID()]; !ok || r.Error != "" {
					t.Fatalf("send: %v", res)
				}
				leave := e.fromTemplate(e.do("GET", "/_matrix/federation/v1/make_leave/"+c.esc(roomID)+"/"+c.esc(user), remoteName, nil), remoteName, e.remote)
				wantOK(t, e.do("PUT", "/_matrix/federation/v2/send_leave/"+c.esc(roomID)+"/"+c.esc(leave.EventID()), remoteName, leave.JSON()))
				inv := inviteEvent(t, "!far/away:"+remoteName, rita, bob, remoteName, e.remote)
				wantOK(t, e.do("PUT", "/_matrix/federation/v2/invite/"+c.esc(inv.RoomID().String())+"/"+c.esc(inv.EventID()), remoteName,
					map[string]any{"event": json.RawMessage(inv.JSON()), "room_version": "10"}))
			})
		}
		// A NUL sent escaped.
		wantErr(t, e.do("GET", "/_matrix/federation/v1/make_join/!x%00:local.test/"+escapeAll(rita), remoteName, nil), 400, "M_INVALID_PARAM")
		wantErr(t, e.do("PUT", "/_matrix/federation/v1/send/a%00b", remoteName, txn(nil)), 400, "M_INVALID_PARAM")
	})
}

// TestUnstorableText sends events holding text a database cannot keep
// (NUL) where it goes into columns: each is refused as bad JSON or
// stored, never a database error.
func TestUnstorableText(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.publicRoom("10")
		e.joinRemote(roomID, rita)
		target := e.build(roomID, rita, "m.room.message", nil, message("target"), remoteName, e.remote)
		pduResults(t, e.do("PUT", sendPath("target"), remoteName, txn([]json.RawMessage{target.JSON()})))
		for i, c := range []struct {
			sender, typ string
			sk          *string
			content     string
			want        string // "" stored, else in the error
		}{
			{rita, "m.x\u0000", nil, `{}`, "cannot be stored"},
			{rita, "m.x", strp("a\u0000b"), `{}`, "cannot be stored"},
			{"@ri\u0000ta:" + remoteName, "m.room.message", nil, `{}`, "signature"},
			{rita, "m.room.message", nil, `{"body":"a\u0000b","msgtype":"m.text"}`, ""},
			{rita, "m.room.message", nil, `{"body":"x","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread\u0000","event_id":"` + target.EventID() + `"}}`, "cannot be stored"},
			{rita, "m.room.message", nil, `{"body":"x","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread","event_id":"$a\u0000"}}`, "cannot be stored"},
			{rita, "m.reaction", nil, `{"m.relates_to":{"rel_type":"m.annotation","key":"\u0000","event_id":"` + target.EventID() + `"}}`, ""},
			{rita, "m.room.member", strp(rita), `{"membership":"join","displayname":"a\u0000b"}`, ""},
			{rita, "m.room.redaction", nil, `{"redacts":"$x\u0000"}`, "cannot be stored"},
		} {
			p := e.build(roomID, c.sender, c.typ, c.sk, c.content, remoteName, e.remote)
			res := pduResults(t, e.do("PUT", sendPath(fmt.Sprint("nul", i)), remoteName, txn([]json.RawMessage{p.JSON()})))
			r, ok := res[p.EventID()]
			if !ok || (c.want == "") != (r.Error == "") || !strings.Contains(r.Error, c.want) {
				t.Errorf("case %d: %+v, want an error with %q", i, res, c.want)
			}
			if e.stored(p.EventID()) != (c.want == "") {
				t.Errorf("case %d: stored %v", i, e.stored(p.EventID()))
			}
		}
		// A join of a sender holding a NUL (well signed, of the origin).
		var tmpl struct {
			Event gomatrixserverlib.ProtoEvent `json:"event"`
		}
		e.do("GET", "/_matrix/federation/v1/make_join/"+roomID+"/@ron:"+remoteName+"?ver=10", remoteName, nil).decode(t, &tmpl)
		tmpl.Event.SenderID, tmpl.Event.StateKey = "@r\u0000n:"+remoteName, strp("@r\u0000n:"+remoteName)
		j, err := e.verImpl(roomID).NewEventBuilderFromProtoEvent(&tmpl.Event).Build(time.Now(), remoteName, e.remote.ID, e.remote.Private)
		if err != nil {
			t.Fatal(err)
		}
		r := e.do("PUT", "/_matrix/federation/v2/send_join/"+roomID+"/"+j.EventID(), remoteName, j.JSON())
		if r.status != 400 && r.status != 403 {
			t.Errorf("join of a sender with a NUL: %d %s", r.status, r.body)
		}
		// An invite of a local user ID holding a NUL.
		inv := inviteEvent(t, "!far:"+remoteName, rita, "@b\u0000b:"+localName, remoteName, e.remote)
		wantErr(t, e.do("PUT", "/_matrix/federation/v2/invite/!far:"+remoteName+"/"+inv.EventID(), remoteName,
			map[string]any{"event": json.RawMessage(inv.JSON()), "room_version": "10"}), 400, "M_BAD_JSON")
	})
}
