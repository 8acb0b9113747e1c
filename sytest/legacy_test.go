package sytest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Tests of the endpoints older clients and bots still call though the
// spec dropped them (POST /send without a transaction ID, GET /events,
// GET /initialSync, GET /rooms/{roomId}/initialSync, GET /events/{eventId}),
// answered as Synapse answers them.

// chunkOf returns the "chunk" list of an answer as objects.
func chunkOf(m map[string]any) []map[string]any {
	list, _ := m["chunk"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, v := range list {
		if o, ok := v.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

// findIn returns the first object of the list with the type (and, if not
// empty, the body or event ID).
func findIn(list []map[string]any, typ, idOrBody string) map[string]any {
	for _, o := range list {
		if o["type"] != typ {
			continue
		}
		c, _ := o["content"].(map[string]any)
		if idOrBody == "" || o["event_id"] == idOrBody || c["body"] == idOrBody {
			return o
		}
	}
	return nil
}

// TestLegacySendWithoutTxn: POST /rooms/{roomId}/send/{eventType} stores a
// new event on every call (no transaction ID to deduplicate on).
func TestLegacySendWithoutTxn(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		body := map[string]any{"msgtype": "m.text", "body": "same body"}
		for _, prefix := range []string{v3, "/_matrix/client/r0"} {
			a := s.do(t, "POST", prefix+"/rooms/"+p(room)+"/send/m.room.message", alice.AccessToken, body).expect(t, 200).str("event_id")
			b := s.do(t, "POST", prefix+"/rooms/"+p(room)+"/send/m.room.message", alice.AccessToken, body).expect(t, 200).str("event_id")
			if a == "" || a == b {
				t.Fatalf("%s: two sends gave %q and %q", prefix, a, b)
			}
		}
		n := 0
		for _, ev := range allMessages(t, alice, room) {
			if ev.Content.Raw["body"] == "same body" {
				n++
			}
		}
		if n != 4 {
			t.Fatalf("%d events stored, want 4", n)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/send/m.room.message", alice.AccessToken, "[]").expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/send/m.room.message", "", body).expectErr(t, 401, "M_MISSING_TOKEN")
	})
}

// TestLegacyEventStream: GET /events answers from a token at once when
// something happened after it, waits for the next event when nothing did
// (waking as soon as it commits), and answers empty at the timeout. Events
// carry their room_id, typing too; an invite reaches the invitee.
func TestLegacyEventStream(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		from := s.do(t, "GET", v3+"/initialSync?limit=1", alice.AccessToken, nil).expect(t, 200).str("end")
		if from == "" {
			t.Fatal("no end token from /initialSync")
		}

		// The first call sets Alice online, which the stream then carries:
		// follow it until nothing is new.
		for i := 0; ; i++ {
			r := s.do(t, "GET", v3+"/events?timeout=300&from="+url.QueryEscape(from), alice.AccessToken, nil).expect(t, 200)
			if r.str("start") != from || r.str("end") == "" {
				t.Fatalf("tokens: %s", r)
			}
			if len(chunkOf(r.JSON)) == 0 {
				break
			}
			if i == 20 {
				t.Fatalf("never settles: %s", r)
			}
			from = r.str("end")
		}
		// Nothing new: an empty answer at the timeout.
		start := time.Now()
		r := s.do(t, "GET", v3+"/events?timeout=300&from="+url.QueryEscape(from), alice.AccessToken, nil).expect(t, 200)
		if len(chunkOf(r.JSON)) != 0 || time.Since(start) < 250*time.Millisecond {
			t.Fatalf("timeout: after %v: %s", time.Since(start), r)
		}

		// A wait wakes when a message commits.
		got := make(chan apiResp, 1)
		go func() {
			got <- s.do(t, "GET", v3+"/events?timeout=20000&from="+url.QueryEscape(from), alice.AccessToken, nil)
		}()
		time.Sleep(200 * time.Millisecond) // let the request start waiting; the answer is the same either way
		start = time.Now()
		eid := sendText(t, alice, room, "hello stream")
		var woke apiResp
		select {
		case woke = <-got:
		case <-time.After(15 * time.Second):
			t.Fatal("GET /events did not wake")
		}
		woke.expect(t, 200)
		if time.Since(start) > 10*time.Second {
			t.Fatalf("woke after %v", time.Since(start))
		}
		ev := findIn(chunkOf(woke.JSON), "m.room.message", eid.String())
		if ev == nil || ev["room_id"] != room.String() || woke.str("end") == from || woke.str("start") != from {
			t.Fatalf("woken answer: %s", woke)
		}

		// From the new token: typing, with its room_id.
		next := woke.str("end")
		if _, err := alice.UserTyping(context.Background(), room, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		eventually(t, "typing in the event stream", func() bool {
			r := s.do(t, "GET", v3+"/events?timeout=1000&from="+url.QueryEscape(next), alice.AccessToken, nil).expect(t, 200)
			typing := findIn(chunkOf(r.JSON), "m.typing", "")
			return typing != nil && typing["room_id"] == room.String()
		})

		// The invitee hears of the invite.
		bobFrom := s.do(t, "GET", v3+"/events?timeout=0", bob.AccessToken, nil).expect(t, 200).str("end")
		invite(t, alice, room, bob.UserID)
		r = s.do(t, "GET", "/_matrix/client/r0/events?timeout=10000&from="+url.QueryEscape(bobFrom), bob.AccessToken, nil).expect(t, 200)
		if m := findIn(chunkOf(r.JSON), "m.room.member", ""); m == nil || m["room_id"] != room.String() || m["state_key"] != bob.UserID.String() {
			t.Fatalf("bob's invite: %s", r)
		}

		s.do(t, "GET", v3+"/events?timeout=0&from=bogus", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/events?timeout=-1", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/events", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
	})
}

// roomIn returns the room's entry of a /initialSync answer.
func roomIn(m map[string]any, room id.RoomID) map[string]any {
	list, _ := m["rooms"].([]any)
	for _, v := range list {
		if o, _ := v.(map[string]any); o["room_id"] == room.String() {
			return o
		}
	}
	return nil
}

// messageBodies lists the bodies of a messages section's chunk, in order.
func messageBodies(section map[string]any) []string {
	var out []string
	for _, ev := range chunkOf(section) {
		if c, _ := ev["content"].(map[string]any); c["body"] != nil {
			out = append(out, c["body"].(string))
		}
	}
	return out
}

func hasState(list any, typ string) bool {
	evs, _ := list.([]any)
	for _, v := range evs {
		if o, _ := v.(map[string]any); o["type"] == typ {
			return true
		}
	}
	return false
}

// TestLegacyInitialSync: GET /initialSync lists the rooms the user is in
// (each with its membership, visibility, latest messages oldest first with
// tokens to page on, state and account data) and invited to (with the
// inviter), left rooms only with archived=true, and the end token for
// GET /events.
func TestLegacyInitialSync(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Legacy"})
		for _, b := range []string{"one", "two", "three"} {
			sendText(t, alice, room, b)
		}
		if err := alice.AddTag(ctx, room, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "org.example.global", map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
		left := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		sendText(t, alice, left, "before leaving")
		if _, err := alice.LeaveRoom(ctx, left); err != nil {
			t.Fatal(err)
		}
		invited := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		invite(t, bob, invited, alice.UserID)

		r := s.do(t, "GET", v3+"/initialSync?limit=2", alice.AccessToken, nil).expect(t, 200)
		if r.str("end") == "" || !hasState(r.JSON["account_data"], "org.example.global") {
			t.Fatalf("top level: %s", r)
		}
		if _, ok := r.JSON["presence"].([]any); !ok {
			t.Errorf("no presence list: %s", r)
		}
		jr := roomIn(r.JSON, room)
		if jr == nil || jr["membership"] != "join" || jr["visibility"] != "public" {
			t.Fatalf("joined room: %s", r)
		}
		msgs, _ := jr["messages"].(map[string]any)
		if b := messageBodies(msgs); len(b) != 2 || b[0] != "two" || b[1] != "three" || msgs["start"] == "" || msgs["end"] == "" {
			t.Fatalf("messages: %v", msgs)
		}
		if !hasState(jr["state"], "m.room.name") || !hasState(jr["state"], "m.room.create") || !hasState(jr["account_data"], "m.tag") {
			t.Fatalf("state or account data of the room: %v", jr)
		}
		// start pages back to the earlier message.
		back := s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=1&from="+url.QueryEscape(msgs["start"].(string)), alice.AccessToken, nil).expect(t, 200)
		if b := messageBodies(back.JSON); len(b) != 1 || b[0] != "one" {
			t.Fatalf("paging back from start: %s", back)
		}
		ir := roomIn(r.JSON, invited)
		if ir == nil || ir["membership"] != "invite" || ir["inviter"] != bob.UserID.String() {
			t.Fatalf("invite: %v", ir)
		}
		if roomIn(r.JSON, left) != nil {
			t.Fatalf("a left room without archived: %s", r)
		}

		r = s.do(t, "GET", "/_matrix/client/r0/initialSync?limit=0&archived=true", alice.AccessToken, nil).expect(t, 200)
		lr := roomIn(r.JSON, left)
		if lr == nil || lr["membership"] != "leave" {
			t.Fatalf("archived: %s", r)
		}
		if jr := roomIn(r.JSON, room); jr == nil || len(messageBodies(jr["messages"].(map[string]any))) != 0 {
			t.Fatalf("limit=0: %v", jr)
		}
		s.do(t, "GET", v3+"/initialSync?limit=x", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
	})
}

// TestLegacyRoomInitialSync: GET /rooms/{roomId}/initialSync gives one
// room as the member sees it; a former member sees it as they left it; a
// user who was never in it is refused.
func TestLegacyRoomInitialSync(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Snapshot"})
		join(t, bob, room.String())
		sendText(t, alice, room, "seen by bob")
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "after bob left")

		r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/initialSync", alice.AccessToken, nil).expect(t, 200)
		if r.str("room_id") != room.String() || r.str("membership") != "join" || r.str("visibility") != "private" {
			t.Fatalf("alice: %s", r)
		}
		for _, k := range []string{"state", "presence", "account_data"} {
			if _, ok := r.JSON[k].([]any); !ok {
				t.Errorf("no %s list: %s", k, r)
			}
		}
		msgs, _ := r.JSON["messages"].(map[string]any)
		if b := messageBodies(msgs); len(b) != 2 || b[1] != "after bob left" {
			t.Fatalf("alice's messages: %v", msgs)
		}
		if !hasState(r.JSON["state"], "m.room.name") {
			t.Fatalf("state: %s", r)
		}

		r = s.do(t, "GET", "/_matrix/client/r0/rooms/"+p(room)+"/initialSync?limit=5", bob.AccessToken, nil).expect(t, 200)
		msgs, _ = r.JSON["messages"].(map[string]any)
		if b := messageBodies(msgs); r.str("membership") != "leave" || len(b) != 1 || b[0] != "seen by bob" {
			t.Fatalf("bob after leaving: %s", r)
		}
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/initialSync", carol.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+p("!nosuch:localhost")+"/initialSync", carol.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
	})
}

// TestLegacyEventByID: GET /events/{eventId} gives an event the user may
// see, and 404 M_NOT_FOUND for one they may not see and one that does not
// exist alike.
func TestLegacyEventByID(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		eid := sendText(t, alice, room, "by id")
		r := s.do(t, "GET", v3+"/events/"+p(eid), alice.AccessToken, nil).expect(t, 200)
		if r.str("event_id") != eid.String() || r.str("room_id") != room.String() || r.JSON["content"].(map[string]any)["body"] != "by id" {
			t.Fatalf("alice: %s", r)
		}
		s.do(t, "GET", "/_matrix/client/r0/events/"+p(eid), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/events/"+p(eid), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/events/"+p("$nosuchevent"), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
	})
}
