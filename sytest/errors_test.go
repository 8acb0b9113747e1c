package sytest

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
)

// TestErrorsAuth: requests without a token, with a wrong token (header and
// query parameter) and with a logged-out token.
func TestErrorsAuth(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		whoami := v3 + "/account/whoami"

		s.do(t, "GET", whoami, "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "GET", v3+"/sync", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "POST", v3+"/createRoom", "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")

		for _, r := range []apiResp{
			s.do(t, "GET", whoami, "not-a-token", nil),
			s.do(t, "GET", whoami+"?access_token=not-a-token", "", nil),
			s.do(t, "GET", v3+"/sync", "syt_bogus_bogus", nil),
		} {
			r.expectErr(t, 401, "M_UNKNOWN_TOKEN")
			if sl, ok := r.JSON["soft_logout"].(bool); !ok || sl {
				t.Errorf("want soft_logout false: %s", r)
			}
		}

		// The real token works, also as a query parameter.
		r := s.do(t, "GET", whoami, alice.AccessToken, nil).expect(t, 200)
		if r.str("user_id") != alice.UserID.String() {
			t.Fatalf("whoami: %s", r)
		}
		s.do(t, "GET", whoami+"?access_token="+url.QueryEscape(alice.AccessToken), "", nil).expect(t, 200)

		// A logged-out token is unknown, not soft-logged-out.
		second := s.login(t, "alice")
		if _, err := second.Logout(context.Background()); err != nil {
			t.Fatal(err)
		}
		r = s.do(t, "GET", whoami, second.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		if r.JSON["soft_logout"] != false {
			t.Errorf("want soft_logout false after logout: %s", r)
		}
	})
}

// TestErrorsRouting: unknown endpoints and wrong methods.
func TestErrorsRouting(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		tok := alice.AccessToken

		s.do(t, "GET", v3+"/no/such/endpoint", tok, nil).expectErr(t, 404, "M_UNRECOGNIZED")
		s.do(t, "GET", v3+"/no/such/endpoint", "", nil).expectErr(t, 404, "M_UNRECOGNIZED")
		s.do(t, "POST", "/_matrix/client/v3/nonsense", tok, map[string]any{}).expectErr(t, 404, "M_UNRECOGNIZED")
		s.do(t, "GET", "/_matrix/client/unknown_version/sync", tok, nil).expectErr(t, 404, "M_UNRECOGNIZED")

		s.do(t, "POST", v3+"/account/whoami", tok, map[string]any{}).expectErr(t, 405, "M_UNRECOGNIZED")
		s.do(t, "GET", v3+"/createRoom", tok, nil).expectErr(t, 405, "M_UNRECOGNIZED")
		s.do(t, "DELETE", v3+"/sync", tok, nil).expectErr(t, 405, "M_UNRECOGNIZED")
		s.do(t, "PUT", v3+"/login", "", map[string]any{}).expectErr(t, 405, "M_UNRECOGNIZED")
	})
}

// TestErrorsBadBodies: bodies that are not JSON, not objects, or have fields
// of the wrong type.
func TestErrorsBadBodies(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		tok := alice.AccessToken
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		send := v3 + "/rooms/" + p(room) + "/send/m.room.message/"

		for _, c := range []struct {
			method, path string
			token        string
			body         string
		}{
			{"POST", v3 + "/createRoom", tok, "this is not json"},
			{"POST", v3 + "/createRoom", tok, `{"name": "x"`},
			{"POST", v3 + "/login", "", "{not json}"},
			{"PUT", send + txn(), tok, `{"msgtype": "m.text", "body": }`},
			{"PUT", v3 + "/rooms/" + p(room) + "/state/m.room.topic", tok, "topic!"},
			{"POST", v3 + "/user/" + p(alice.UserID) + "/filter", tok, "<xml/>"},
			{"PUT", v3 + "/presence/" + p(alice.UserID) + "/status", tok, "online"},
		} {
			s.do(t, c.method, c.path, c.token, c.body).expectErr(t, 400, "M_NOT_JSON")
		}

		for _, c := range []struct {
			method, path string
			token        string
			body         string
		}{
			{"POST", v3 + "/createRoom", tok, `{"name": 5}`},
			{"POST", v3 + "/createRoom", tok, `{"invite": "@bob:localhost"}`},
			{"POST", v3 + "/createRoom", tok, `{"is_direct": "yes"}`},
			{"POST", v3 + "/createRoom", tok, `{"initial_state": {"type": "m.room.topic"}}`},
			{"POST", v3 + "/createRoom", tok, `[]`},
			{"POST", v3 + "/login", "", `{"type": 1, "password": "x"}`},
			{"POST", v3 + "/rooms/" + p(room) + "/invite", tok, `{"user_id": ["@bob:localhost"]}`},
			{"PUT", send + txn(), tok, `["msgtype", "m.text"]`},
			{"PUT", send + txn(), tok, `"just a string"`},
			{"PUT", v3 + "/rooms/" + p(room) + "/typing/" + p(alice.UserID), tok, `{"typing": "yes"}`},
			{"PUT", v3 + "/presence/" + p(alice.UserID) + "/status", tok, `{"presence": true}`},
		} {
			s.do(t, c.method, c.path, c.token, c.body).expectErr(t, 400, "M_BAD_JSON")
		}

		// Nothing of the above was stored in the room.
		for _, ev := range allMessages(t, alice, room) {
			if ev.Type.Type == "m.room.message" || ev.Type.Type == "m.room.topic" {
				t.Errorf("a rejected request stored %s %s", ev.Type.Type, ev.ID)
			}
		}
	})
}

// TestErrorsTooLarge: events over 65,536 bytes and bodies over max_request_bytes.
func TestErrorsTooLarge(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		tok := alice.AccessToken
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		_, since := syncNow(t, alice, "")

		// Content just under 64 KiB: the body is accepted by size, but the
		// event with its envelope, hashes and signatures is over 65,536 bytes.
		nearly := `{"msgtype":"m.text","body":"big-1-` + strings.Repeat("x", 65536-200) + `"}`
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), tok, nearly).expectErr(t, 413, "M_TOO_LARGE")
		// Content itself over 64 KiB.
		over := `{"msgtype":"m.text","body":"big-2-` + strings.Repeat("x", 70000) + `"}`
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), tok, over).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), tok, over, chunked()).expectErr(t, 413, "M_TOO_LARGE")
		// The same for a state event.
		bigTopic := `{"topic":"big-3-` + strings.Repeat("y", 65536-150) + `"}`
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.topic/", tok, bigTopic).expectErr(t, 413, "M_TOO_LARGE")

		// A message of a normal size still goes through, and nothing big was stored.
		if _, err := alice.SendText(ctx, room, "small"); err != nil {
			t.Fatal(err)
		}
		for _, ev := range allMessages(t, alice, room) {
			for _, key := range []string{"body", "topic"} {
				if b, _ := ev.Content.Raw[key].(string); strings.HasPrefix(b, "big-") {
					t.Errorf("an oversized event was stored: %s (%d bytes)", ev.ID, len(b))
				}
			}
		}
		resp, _ := syncUntil(t, alice, since, "the small message", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "small") })
		for _, b := range bodies(resp.Rooms.Join[room].Timeline.Events) {
			if strings.HasPrefix(b, "big-") {
				t.Errorf("an oversized event came through /sync")
			}
		}

		// A body over max_request_bytes (1 MiB by default) on an endpoint that
		// takes large bodies, with and without a Content-Length.
		huge := `{"data":"` + strings.Repeat("z", 1<<20+10) + `"}`
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.huge", tok, huge).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.huge", tok, huge, chunked()).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "POST", v3+"/createRoom", tok, huge).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "POST", v3+"/login", "", huge, chunked()).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "GET", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.huge", tok, nil).expectErr(t, 404, "M_NOT_FOUND")
	})
}

// TestErrorsMaxRequestBytes: a server started with a lower max_request_bytes
// refuses bodies above it with 413 M_TOO_LARGE, also on endpoints whose own
// limit is higher.
func TestErrorsMaxRequestBytes(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_MAX_REQUEST_BYTES=100000"}, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		tok := alice.AccessToken
		body := `{"data":"` + strings.Repeat("z", 150000) + `"}`
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.big", tok, body).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.big", tok, body, chunked()).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "POST", v3+"/createRoom", tok, `{"name":"`+strings.Repeat("n", 150000)+`"}`).expectErr(t, 413, "M_TOO_LARGE")
		// Under the limit is fine.
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.big", tok, `{"data":"`+strings.Repeat("z", 50000)+`"}`).expect(t, 200)
	})
}

// TestErrorsRegistration: taken and invalid user names.
func TestErrorsRegistration(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		s.register(t, "alice")
		dummy := map[string]any{"type": "m.login.dummy"}

		s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": "another-password-1"}).expectErr(t, 400, "M_USER_IN_USE")
		s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": "another-password-1", "auth": dummy}).expectErr(t, 400, "M_USER_IN_USE")
		s.do(t, "GET", v3+"/register/available?username=alice", "", nil).expectErr(t, 400, "M_USER_IN_USE")
		r := s.do(t, "GET", v3+"/register/available?username=nobody", "", nil).expect(t, 200)
		if r.JSON["available"] != true {
			t.Errorf("available: %s", r)
		}

		for _, name := range []string{"has space", "bad!name", "a:b", "@alice", "ünïcode", strings.Repeat("l", 300)} {
			s.do(t, "POST", v3+"/register", "", map[string]any{"username": name, "password": "another-password-1", "auth": dummy}).expectErr(t, 400, "M_INVALID_USERNAME")
			s.do(t, "GET", v3+"/register/available?username="+url.QueryEscape(name), "", nil).expectErr(t, 400, "M_INVALID_USERNAME")
		}

		// Without auth, /register answers 401 with the flows, m.login.dummy among them.
		r = s.do(t, "POST", v3+"/register", "", map[string]any{"username": "carol", "password": "carol-password-1"}).expect(t, 401)
		if !strings.Contains(string(r.Raw), "m.login.dummy") || r.str("session") == "" {
			t.Errorf("register without auth: %s", r)
		}
	})
}

// TestErrorsRoomAccess: rooms one is not in, and rooms that do not exist.
func TestErrorsRoomAccess(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		msg := sendText(t, alice, room, "secret")
		rid := p(room)
		btok := bob.AccessToken

		// Bob is not in alice's private room.
		s.do(t, "PUT", v3+"/rooms/"+rid+"/send/m.room.message/"+txn(), btok, map[string]any{"msgtype": "m.text", "body": "hi"}).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/state/m.room.topic/", btok, map[string]any{"topic": "mine"}).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+rid+"/join", btok, map[string]any{}).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/state", btok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/state/m.room.create/", btok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/members", btok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/joined_members", btok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/messages?dir=b", btok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/event/"+p(msg), btok, nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/rooms/"+rid+"/context/"+p(msg), btok, nil).wantOneOf(t, "context of an event in a room never joined", 404, "M_NOT_FOUND", 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+rid+"/redact/"+p(msg)+"/"+txn(), btok, map[string]any{}).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+rid+"/invite", btok, map[string]any{"user_id": bob.UserID}).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+rid+"/aliases", btok, nil).wantErr(t, 403, "M_FORBIDDEN")

		// A room that does not exist.
		unknown := p("!doesnotexist:localhost")
		atok := alice.AccessToken
		s.do(t, "GET", v3+"/rooms/"+unknown+"/state", atok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+unknown+"/state/m.room.create/", atok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+unknown+"/members", atok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+unknown+"/messages?dir=b", atok, nil).wantErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/rooms/"+unknown+"/event/"+p("$nope"), atok, nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/directory/room/"+p("#nope:localhost"), atok, nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/directory/list/room/"+unknown, "", nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "PUT", v3+"/rooms/"+unknown+"/send/m.room.message/"+txn(), atok, map[string]any{"msgtype": "m.text", "body": "x"}).
			wantOneOf(t, "send into an unknown room", 403, "M_FORBIDDEN", 404, "M_NOT_FOUND")
		s.do(t, "POST", v3+"/join/"+unknown, atok, map[string]any{}).
			wantOneOf(t, "join an unknown room", 403, "M_FORBIDDEN", 404, "M_NOT_FOUND")
		s.do(t, "POST", v3+"/join/"+p("#nope:localhost"), atok, map[string]any{}).wantErr(t, 404, "M_NOT_FOUND")
		// Malformed room IDs are a bad request, not a server error.
		r := s.do(t, "GET", v3+"/rooms/"+p("not-a-room-id")+"/messages?dir=b", atok, nil)
		if r.Status != 400 && r.Status != 403 && r.Status != 404 {
			t.Errorf("malformed room ID: %s", r)
		}
	})
}

// TestErrorsLoginRateLimit: with rate limits on, too many logins from one
// address get 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After.
func TestErrorsLoginRateLimit(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_RATE_LIMITS_ENABLED=true", "HAVEN_RATE_LIMITS_LOGIN_PER_MINUTE=2"}, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		login := map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
			"password":   "password-alice",
		}
		var limited apiResp
		for i := 0; i < 10; i++ {
			r := s.do(t, "POST", v3+"/login", "", login)
			if r.Status == 429 {
				limited = r
				break
			}
			r.expect(t, 200)
		}
		if limited.Status != 429 {
			t.Fatal("10 logins in a row were never rate-limited with login_per_minute=2")
		}
		limited.expectErr(t, 429, "M_LIMIT_EXCEEDED")
		ms, ok := limited.JSON["retry_after_ms"].(float64)
		if !ok || ms <= 0 || ms > 60_000 {
			t.Errorf("retry_after_ms: %s", limited)
		}
		if ra, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After header %q", limited.Header.Get("Retry-After"))
		}
		// Wrong passwords count too, and the limit holds for them.
		bad := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong"}
		s.do(t, "POST", v3+"/login", "", bad).expectErr(t, 429, "M_LIMIT_EXCEEDED")
		// Other endpoints are not limited by the login class.
		s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/login", "", nil).expect(t, 200)
	})
}

// TestErrorsCORS: preflight requests and the CORS headers on real answers,
// errors included.
func TestErrorsCORS(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		for _, path := range []string{v3 + "/sync", v3 + "/login", v3 + "/rooms/" + p("!x:localhost") + "/send/m.room.message/t1", "/_matrix/client/versions", v3 + "/no/such/endpoint"} {
			r := s.do(t, "OPTIONS", path, "", nil,
				withHeader("Origin", "https://app.element.io"),
				withHeader("Access-Control-Request-Method", "PUT"),
				withHeader("Access-Control-Request-Headers", "authorization, content-type"))
			r.expect(t, 200)
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Origin %q", path, got)
			}
			allowed := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers"))
			for _, h := range []string{"authorization", "content-type"} {
				if !strings.Contains(allowed, h) {
					t.Errorf("OPTIONS %s: %q not in Access-Control-Allow-Headers %q", path, h, allowed)
				}
			}
			methods := r.Header.Get("Access-Control-Allow-Methods")
			for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
				if !strings.Contains(methods, m) {
					t.Errorf("OPTIONS %s: %s not in Access-Control-Allow-Methods %q", path, m, methods)
				}
			}
		}
		for _, r := range []apiResp{
			s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil, withHeader("Origin", "https://app.element.io")),
			s.do(t, "GET", v3+"/account/whoami", "", nil, withHeader("Origin", "https://app.element.io")),
			s.do(t, "GET", v3+"/no/such/endpoint", "", nil, withHeader("Origin", "https://app.element.io")),
		} {
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("%s: Access-Control-Allow-Origin %q", r, got)
			}
		}
	})
}

// TestErrorsMessageRateLimit: with rate limits on, a user sending faster than
// messages_per_second beyond the burst gets 429 M_LIMIT_EXCEEDED; other users
// and reads are not affected.
func TestErrorsMessageRateLimit(t *testing.T) {
	env := []string{"HAVEN_RATE_LIMITS_ENABLED=true", "HAVEN_RATE_LIMITS_MESSAGES_PER_SECOND=0.5", "HAVEN_RATE_LIMITS_MESSAGE_BURST=3", "HAVEN_RATE_LIMITS_REGISTER_PER_MINUTE=100"}
	eachDBEnv(t, env, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}) // one token of alice's burst
		join(t, bob, room.String())
		var limited apiResp
		sent := 0
		for i := 0; i < 10; i++ {
			r := s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "spam"})
			if r.Status == 429 {
				limited = r
				break
			}
			r.expect(t, 200)
			sent++
		}
		if limited.Status != 429 {
			t.Fatalf("10 quick messages with messages_per_second=0.5 and a burst of 3 were never limited")
		}
		limited.expectErr(t, 429, "M_LIMIT_EXCEEDED")
		if ms, ok := limited.JSON["retry_after_ms"].(float64); !ok || ms <= 0 {
			t.Errorf("retry_after_ms: %s", limited)
		}
		if sent > 3 {
			t.Errorf("%d messages passed a burst of 3", sent)
		}
		// Bob has his own bucket; reads are not limited.
		sendText(t, bob, room, "bob is fine")
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b", alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/sync?timeout=0", alice.AccessToken, nil).expect(t, 200)
	})
}
