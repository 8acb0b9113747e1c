package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// unreadOf returns a joined room's unread_notifications from a sync.
func unreadOf(r *mautrix.RespSync, room id.RoomID) (n, h int, ok bool) {
	jr := r.Rooms.Join[room]
	if jr == nil || jr.UnreadNotifications == nil {
		return 0, 0, false
	}
	return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount, true
}

// TestPushCountsAndNotifications: a mention highlights, a receipt clears
// the counts, threads are counted apart when the filter asks, and
// /notifications lists what notified.
func TestPushCountsAndNotifications(t *testing.T) {
	eachDBEnv(t, loopbackGateways, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		join(t, carol, room.String())
		_, since := syncNow(t, alice, "")

		plain := sendText(t, bob, room, "good morning")
		resp, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "have a look",
			"m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}})
		if err != nil {
			t.Fatal(err)
		}
		mention := resp.EventID
		_, since = syncUntil(t, alice, since, "the mention counted", func(r *mautrix.RespSync) bool {
			n, h, ok := unreadOf(r, room)
			return ok && n == 2 && h == 1
		})

		// /notifications, newest first.
		r := s.do(t, "GET", v3+"/notifications", alice.AccessToken, nil).expect(t, 200)
		var page struct {
			Notifications []struct {
				Actions []any          `json:"actions"`
				Event   map[string]any `json:"event"`
				Read    bool           `json:"read"`
				RoomID  string         `json:"room_id"`
				TS      int64          `json:"ts"`
			} `json:"notifications"`
			NextToken string `json:"next_token"`
		}
		if err := json.Unmarshal(r.Raw, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Notifications) != 2 || page.Notifications[0].Event["event_id"] != mention.String() ||
			page.Notifications[1].Event["event_id"] != plain.String() || page.Notifications[0].RoomID != room.String() ||
			page.Notifications[0].Read || page.Notifications[0].TS == 0 {
			t.Fatalf("notifications: %s", r)
		}
		highlight := false
		for _, a := range page.Notifications[0].Actions {
			if m, ok := a.(map[string]any); ok && m["set_tweak"] == "highlight" {
				highlight = true
			}
		}
		if !highlight {
			t.Errorf("the mention's actions have no highlight: %v", page.Notifications[0].Actions)
		}
		only := s.do(t, "GET", v3+"/notifications?only=highlight", alice.AccessToken, nil).expect(t, 200)
		if list, _ := only.JSON["notifications"].([]any); len(list) != 1 {
			t.Errorf("only=highlight: %s", only)
		}
		first := s.do(t, "GET", v3+"/notifications?limit=1", alice.AccessToken, nil).expect(t, 200)
		next := first.str("next_token")
		if next == "" {
			t.Fatalf("no next_token: %s", first)
		}
		second := s.do(t, "GET", v3+"/notifications?limit=1&from="+url.QueryEscape(next), alice.AccessToken, nil).expect(t, 200)
		if list, _ := second.JSON["notifications"].([]any); len(list) != 1 || second.str("next_token") != "" {
			t.Errorf("second page: %s", second)
		}
		s.do(t, "GET", v3+"/notifications?from=nonsense", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/notifications?limit=-1", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/notifications", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")

		// A read receipt clears the counts and marks the notifications read.
		if err := alice.SendReceipt(ctx, room, mention, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, alice, since, "the counts cleared", func(r *mautrix.RespSync) bool {
			n, h, ok := unreadOf(r, room)
			return ok && n == 0 && h == 0
		})
		r = s.do(t, "GET", v3+"/notifications", alice.AccessToken, nil).expect(t, 200)
		if err := json.Unmarshal(r.Raw, &page); err != nil || len(page.Notifications) != 2 || !page.Notifications[0].Read || !page.Notifications[1].Read {
			t.Errorf("notifications after the receipt: %s", r)
		}

		// Threads, counted apart when the filter asks for it.
		reply, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in the thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": plain.String()}})
		if err != nil {
			t.Fatal(err)
		}
		filter := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		threadCounts := func() (main, thread float64) {
			_, raw := s.rawSync(t, alice, url.Values{"filter": {filter}})
			jr, _ := raw["rooms"].(map[string]any)["join"].(map[string]any)[room.String()].(map[string]any)
			if un, ok := jr["unread_notifications"].(map[string]any); ok {
				main, _ = un["notification_count"].(float64)
			}
			if th, ok := jr["unread_thread_notifications"].(map[string]any); ok {
				if c, ok := th[plain.String()].(map[string]any); ok {
					thread, _ = c["notification_count"].(float64)
				}
			}
			return main, thread
		}
		eventually(t, "the thread reply counted in its thread", func() bool { m, th := threadCounts(); return m == 0 && th == 1 })
		r2, _ := syncNow(t, alice, "")
		if n, _, _ := unreadOf(r2, room); n != 1 {
			t.Errorf("without the filter option the thread counts in the room's total: %d", n)
		}
		// A receipt on the main timeline leaves the thread; one in the thread clears it.
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/receipt/m.read/"+p(reply.EventID), alice.AccessToken, map[string]any{"thread_id": "main"}).expect(t, 200)
		if _, th := threadCounts(); th != 1 {
			t.Errorf("a main-timeline receipt cleared the thread")
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/receipt/m.read/"+p(reply.EventID), alice.AccessToken, map[string]any{"thread_id": plain.String()}).expect(t, 200)
		eventually(t, "the thread read", func() bool { _, th := threadCounts(); return th == 0 })

		// Counts survive a restart.
		r3, _ := syncNow(t, carol, "")
		n3, _, _ := unreadOf(r3, room)
		s.restart()
		r4, _ := syncNow(t, carol, "")
		if n4, _, _ := unreadOf(r4, room); n4 != n3 || n3 != 3 {
			t.Errorf("carol's count %d before a restart, %d after; want 3", n3, n4)
		}
	})
}

// pushGateway is a Push Gateway on loopback that records what it gets.
type pushGateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

func newPushGateway(t *testing.T) *pushGateway {
	g := &pushGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		g.mu.Lock()
		g.bodies = append(g.bodies, body)
		g.mu.Unlock()
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *pushGateway) got() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.bodies...)
}

// TestPushersAndDelivery: pushers are set, listed, checked and deleted, and
// a message reaches the pusher's gateway.
func TestPushersAndDelivery(t *testing.T) {
	eachDBEnv(t, loopbackGateways, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		gw := newPushGateway(t)
		notify := gw.srv.URL + "/_matrix/push/v1/notify"
		pusher := func(data map[string]any) map[string]any {
			return map[string]any{"pushkey": "alice-phone", "kind": "http", "app_id": "com.example.chat", "app_display_name": "Chat",
				"device_display_name": "Phone", "lang": "en", "data": data}
		}
		// Refused pushers.
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, pusher(map[string]any{})).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, pusher(map[string]any{"url": gw.srv.URL + "/push"})).expectErr(t, 400, "M_INVALID_PARAM")
		bad := pusher(map[string]any{"url": notify})
		bad["kind"] = "carrier-pigeon"
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, bad).expectErr(t, 400, "M_INVALID_PARAM")
		delete(bad, "app_id")
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, bad).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, "{not json").expectErr(t, 400, "M_NOT_JSON")
		s.do(t, "POST", v3+"/pushers/set", "", pusher(map[string]any{"url": notify})).expectErr(t, 401, "M_MISSING_TOKEN")

		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, pusher(map[string]any{"url": notify, "format": "event_id_only"})).expect(t, 200)
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, pusher(map[string]any{"url": notify})).expect(t, 200)
		list := s.do(t, "GET", v3+"/pushers", alice.AccessToken, nil).expect(t, 200)
		ps, _ := list.JSON["pushers"].([]any)
		if len(ps) != 1 {
			t.Fatalf("pushers: %s", list)
		}
		if p0 := ps[0].(map[string]any); p0["pushkey"] != "alice-phone" || p0["kind"] != "http" || p0["data"].(map[string]any)["url"] != notify {
			t.Errorf("pusher: %v", p0)
		}

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Ringing", RoomAliasName: "ringing"})
		join(t, bob, room.String())
		msg := sendText(t, bob, room, "ring ring")
		eventually(t, "the push at the gateway", func() bool {
			for _, b := range gw.got() {
				if n, ok := b["notification"].(map[string]any); ok && n["event_id"] == msg.String() {
					return true
				}
			}
			return false
		})
		for _, b := range gw.got() {
			n := b["notification"].(map[string]any)
			if n["event_id"] != msg.String() {
				continue
			}
			devs, _ := n["devices"].([]any)
			if n["room_id"] != room.String() || n["sender"] != bob.UserID.String() || n["type"] != "m.room.message" || len(devs) != 1 {
				t.Errorf("push: %v", b)
			} else if d := devs[0].(map[string]any); d["pushkey"] != "alice-phone" || d["app_id"] != "com.example.chat" {
				t.Errorf("push device: %v", d)
			}
			if c, _ := n["counts"].(map[string]any); c["unread"] != float64(1) {
				t.Errorf("push counts: %v", n["counts"])
			}
			content, _ := n["content"].(map[string]any)
			if n["room_name"] != "Ringing" || n["room_alias"] != "#ringing:localhost" || n["sender_display_name"] != "bob" ||
				n["prio"] != "high" || content["body"] != "ring ring" {
				t.Errorf("push fields: %v", n)
			}
		}

		// kind null deletes.
		s.do(t, "POST", v3+"/pushers/set", alice.AccessToken, map[string]any{"pushkey": "alice-phone", "app_id": "com.example.chat", "kind": nil}).expect(t, 200)
		if ps, _ := s.do(t, "GET", v3+"/pushers", alice.AccessToken, nil).expect(t, 200).JSON["pushers"].([]any); len(ps) != 0 {
			t.Errorf("pushers after delete: %v", ps)
		}

		// A pusher goes with the device that set it: after its logout, the
		// user's other devices see no pusher.
		phone := s.login(t, "alice")
		s.do(t, "POST", v3+"/pushers/set", phone.AccessToken, pusher(map[string]any{"url": notify})).expect(t, 200)
		if ps, _ := s.do(t, "GET", v3+"/pushers", alice.AccessToken, nil).expect(t, 200).JSON["pushers"].([]any); len(ps) != 1 {
			t.Fatalf("pushers after the phone set one: %v", ps)
		}
		s.do(t, "POST", v3+"/logout", phone.AccessToken, map[string]any{}).expect(t, 200)
		if ps, _ := s.do(t, "GET", v3+"/pushers", alice.AccessToken, nil).expect(t, 200).JSON["pushers"].([]any); len(ps) != 0 {
			t.Errorf("pushers after the phone logged out: %v", ps)
		}
	})
}

// TestPushRulePaths: the rules of a kind, the malformed paths of upstream
// sytest's 61push (400, never the router's 404 or 405; the legacy r0
// prefix too), and before/after placing a rule among the user's rules of
// its kind.
func TestPushRulePaths(t *testing.T) {
	eachDBEnv(t, loopbackGateways, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		tok := alice.AccessToken
		const r0 = "/_matrix/client/r0/pushrules"
		rule := map[string]any{"actions": []string{"notify"}}

		global := s.do(t, "GET", r0+"/global/", tok, nil).expect(t, 200)
		if _, ok := global.JSON["underride"].([]any); !ok {
			t.Fatalf("global ruleset: %s", global)
		}
		kind := s.do(t, "GET", r0+"/global/underride/", tok, nil).expect(t, 200)
		var list []map[string]any
		if err := json.Unmarshal(kind.Raw, &list); err != nil || len(list) == 0 || list[0]["rule_id"] != ".m.rule.call" {
			t.Fatalf("underride rules: %s", kind)
		}
		s.do(t, "GET", r0+"/global/override/not_a_rule_id", tok, nil).expectErr(t, 404, "M_NOT_FOUND")

		for _, c := range []struct{ method, path string }{
			{"PUT", "/"}, {"PUT", "/not_a_scope/room/spam"}, {"PUT", "/global"}, {"PUT", "/global/room"}, {"PUT", "/global/room/"},
			{"PUT", "/global/not_a_template/foo"}, {"PUT", "/global/override/.m.rule.master/not_an_attr"},
			{"GET", ""}, {"GET", "/global"}, {"GET", "/global/room"}, {"GET", "/not_a_scope/"}, {"GET", "/global/not_a_template/"},
			{"GET", "/global/override/.m.rule.master/not_an_attr"}, {"GET", "//room/"}, {"DELETE", "/device/room/x"},
		} {
			r := s.do(t, c.method, r0+c.path, tok, map[string]any{"actions": []string{"notify"}, "enabled": true})
			r.wantOneOf(t, c.method+" "+c.path, 400, "M_UNRECOGNIZED", 400, "M_INVALID_PARAM")
		}

		order := func() []string {
			var rs []struct {
				RuleID string `json:"rule_id"`
			}
			if err := json.Unmarshal(s.do(t, "GET", v3+"/pushrules/global/room/", tok, nil).expect(t, 200).Raw, &rs); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.RuleID)
			}
			return ids
		}
		put := func(id, query string) apiResp {
			return s.do(t, "PUT", v3+"/pushrules/global/room/"+p(id)+query, tok, rule)
		}
		put("!a:x", "").expect(t, 200)
		put("!b:x", "").expect(t, 200)
		put("!c:x", "?after="+url.QueryEscape("!a:x")).expect(t, 200)
		put("!d:x", "?before="+url.QueryEscape("!b:x")).expect(t, 200)
		// An existing rule moves when given a place, and keeps it otherwise.
		put("!a:x", "?before="+url.QueryEscape("!d:x")).expect(t, 200)
		put("!c:x", "").expect(t, 200)
		if got := fmt.Sprint(order()); got != "[!a:x !d:x !b:x !c:x]" {
			t.Errorf("room rules in order %s, want [!a:x !d:x !b:x !c:x]", got)
		}
		// Relative to a rule that does not exist, to a server-default rule,
		// or to a rule of another kind: 400, and nothing is added.
		put("!e:x", "?before="+url.QueryEscape("!nothing:x")).expectErr(t, 400, "M_UNKNOWN")
		s.do(t, "PUT", v3+"/pushrules/global/override/mine?after=.m.rule.master", tok,
			map[string]any{"actions": []string{"notify"}, "conditions": []any{}}).expect(t, 400)
		s.do(t, "PUT", v3+"/pushrules/global/sender/"+p("@bob:x")+"?after="+url.QueryEscape("!a:x"), tok, rule).expect(t, 400)
		s.do(t, "GET", v3+"/pushrules/global/room/"+p("!e:x"), tok, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/pushrules/global/override/mine", tok, nil).expectErr(t, 404, "M_NOT_FOUND")
		if got := fmt.Sprint(order()); got != "[!a:x !d:x !b:x !c:x]" {
			t.Errorf("room rules after refused changes %s", got)
		}
	})
}

// loopbackGateways lets the server reach the tests' push gateways on
// loopback, which it refuses by default.
var loopbackGateways = []string{"HAVEN_PUSH_GATEWAY_ALLOWED_RANGES=127.0.0.0/8"}
