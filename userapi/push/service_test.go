package push

import (
	"net/netip"

	"context"
	"encoding/json"
	"fmt"
	"github.com/haven-chat/haven/internal/netguard"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

const (
	alice = "@alice:test"
	bob   = "@bob:test"
	carol = "@carol:test"
)

type profiles struct{}

func (profiles) Profile(_ context.Context, userID string) (string, string, error) {
	name, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return strings.ToUpper(name[:1]) + name[1:], "", nil
}

type accounts struct{}

func (accounts) AccountExists(context.Context, string) (bool, error) { return true, nil }
func (accounts) IsGuest(context.Context, string) (bool, error)       { return false, nil }

// fakeRules compiles the defaults, or a ruleset set by the test; ignored
// holds the ignore lists the test sets.
type fakeRules struct {
	mu      sync.Mutex
	sets    map[string]userapi.Ruleset
	cache   map[string]any
	ignored map[string]map[string]struct{}
}

func (f *fakeRules) IgnoredUsers(_ context.Context, userID string) (map[string]struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ignored[userID], nil
}

func (f *fakeRules) CompiledPushRules(_ context.Context, userID string, compile func(string, userapi.Ruleset) (any, error)) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.cache[userID]; ok {
		return c, nil
	}
	rs, ok := f.sets[userID]
	if !ok {
		var err error
		if rs, err = userapi.DefaultPushRules(userID); err != nil {
			return nil, err
		}
	}
	c, err := compile(userID, rs)
	if err == nil {
		f.cache[userID] = c
	}
	return c, err
}

type env struct {
	t     testing.TB
	ctx   context.Context
	db    *storage.DB
	b     *bus.Bus
	rs    *roomserver.Service
	rules *fakeRules
	ps    *Service
	unsub func()
	txn   int
}

func newEnv(t testing.TB, db *storage.DB) *env {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Namespace: "pushtest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(ctx, db, b, profiles{}, accounts{}, roomserver.Options{ServerName: "test", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	e := &env{t: t, ctx: ctx, db: db, b: b, rs: rs, rules: &fakeRules{sets: map[string]userapi.Ruleset{}, cache: map[string]any{}}}
	t.Cleanup(e.stop)
	return e
}

// start starts the push service and feeds it the room events, as the sync engine does.
func (e *env) start(opts Options) {
	e.t.Helper()
	opts.ServerName = "test"
	if opts.GatewayAllowed == nil {
		// The test gateways are on loopback.
		opts.GatewayAllowed = netguard.MustPrefixes("127.0.0.0/8")
	}
	ps, err := New(e.ctx, e.db, e.b, e.rs, e.rules, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ps = ps
	e.subscribe()
}

// subscribe feeds the room events on the bus to the running service.
func (e *env) subscribe() {
	e.t.Helper()
	ps := e.ps
	unsub, err := e.b.Subscribe(roomserver.Topic, func(d []byte) {
		var n roomserver.Notice
		if err := json.Unmarshal(d, &n); err == nil {
			ps.OnRoomEvent(context.Background(), &n)
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.unsub = unsub
}

func (e *env) stop() {
	if e.unsub != nil {
		e.unsub()
		e.unsub = nil
	}
	if e.ps != nil {
		e.ps.Close()
		e.ps = nil
	}
}

// settle waits until every committed event is evaluated.
func (e *env) settle() {
	e.t.Helper()
	waitFor(e.t, "evaluation", func() bool { return e.ps.Position() >= e.rs.Position() })
}

func (e *env) room(members ...string) string {
	e.t.Helper()
	res, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, m := range members {
		if _, err := e.rs.Join(e.ctx, m, res.RoomID, ""); err != nil {
			e.t.Fatal(err)
		}
	}
	return res.RoomID
}

func (e *env) send(room, sender, content string) (string, int64) {
	e.t.Helper()
	e.txn++
	id, err := e.rs.Send(e.ctx, roomserver.Sender{UserID: sender, DeviceID: "DEV"}, roomserver.SendRequest{
		RoomID: room, Type: "m.room.message", Content: json.RawMessage(content), TxnID: fmt.Sprint("t", e.txn)})
	if err != nil {
		e.t.Fatal(err)
	}
	ev, err := e.rs.GetEvent(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id, ev.Pos
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) wantUnread(user, room string, n, h int) {
	e.t.Helper()
	if gn, gh := e.ps.Unread(room, user); gn != n || gh != h {
		e.t.Errorf("%s: notification_count %d highlight_count %d, want %d and %d", user, gn, gh, n, h)
	}
}

func TestCountsAndNotifications(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		ctx := e.ctx
		room := e.room(bob, carol)
		plain, _ := e.send(room, bob, `{"msgtype":"m.text","body":"plain"}`)
		e.send(room, bob, `{"msgtype":"m.notice","body":"notice"}`)
		mention, mentionPos := e.send(room, bob, `{"msgtype":"m.text","body":"look","m.mentions":{"user_ids":["@alice:test"]}}`)
		e.settle()
		e.wantUnread(alice, room, 2, 1)
		e.wantUnread(carol, room, 2, 0)
		e.wantUnread(bob, room, 0, 0)

		list, next, err := e.ps.Notifications(ctx, alice, "", 10, "")
		if err != nil || len(list) != 2 || next != "" {
			t.Fatalf("notifications: %v %+v %q", err, list, next)
		}
		if list[0].EventID != mention || list[1].EventID != plain || list[0].Read || list[0].RoomID != room || !json.Valid([]byte(list[0].Actions)) {
			t.Errorf("notifications: %+v", list)
		}
		page, next, err := e.ps.Notifications(ctx, alice, "", 1, "")
		if err != nil || len(page) != 1 || next == "" {
			t.Fatalf("page 1: %v %+v %q", err, page, next)
		}
		page, next, err = e.ps.Notifications(ctx, alice, next, 1, "")
		if err != nil || len(page) != 1 || page[0].EventID != plain || next != "" {
			t.Fatalf("page 2: %v %+v %q", err, page, next)
		}
		if hl, _, _ := e.ps.Notifications(ctx, alice, "", 10, "highlight"); len(hl) != 1 || hl[0].EventID != mention {
			t.Errorf("only=highlight: %+v", hl)
		}
		if _, _, err := e.ps.Notifications(ctx, alice, "nonsense", 10, ""); !merr.Is(err, "M_INVALID_PARAM") {
			t.Errorf("bad from: %v", err)
		}

		// A receipt reads everything up to its event.
		e.ps.OnReceipt(ctx, room, alice, "", mentionPos, 0)
		e.wantUnread(alice, room, 0, 0)
		list, _, _ = e.ps.Notifications(ctx, alice, "", 10, "")
		for _, n := range list {
			if !n.Read {
				t.Errorf("not read after the receipt: %+v", n)
			}
		}

		// Threads count apart; a main-timeline receipt leaves them.
		_, threadPos := e.send(room, bob, `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"`+plain+`"}}`)
		e.settle()
		byThread := func(user string) map[string]int {
			out := map[string]int{}
			e.ps.UnreadByThread(room, user, func(th string, n, _ int) { out[th] = n })
			return out
		}
		if got := byThread(alice); got[""] != 0 || got[plain] != 1 {
			t.Errorf("alice by thread: %v", got)
		}
		e.ps.OnReceipt(ctx, room, alice, "main", threadPos, 0)
		e.wantUnread(alice, room, 1, 0)
		e.ps.OnReceipt(ctx, room, alice, plain, threadPos, 0)
		e.wantUnread(alice, room, 0, 0)

		// Carol's own message reads her main timeline, not the thread.
		e.send(room, carol, `{"msgtype":"m.text","body":"carol here"}`)
		e.settle()
		e.wantUnread(carol, room, 1, 0)
		if got := byThread(carol); got[""] != 0 || got[plain] != 1 {
			t.Errorf("carol by thread: %v", got)
		}
		e.wantUnread(alice, room, 1, 0)
		e.wantUnread(bob, room, 1, 0)

		// A restart reloads the counts and the read marks.
		if err := e.ps.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		e.stop()
		e.start(Options{})
		e.wantUnread(carol, room, 1, 0)
		e.wantUnread(alice, room, 1, 0)

		// Events committed while nothing evaluated are caught up at start.
		e.stop()
		e.send(room, bob, `{"msgtype":"m.text","body":"while down"}`)
		e.start(Options{})
		e.wantUnread(alice, room, 2, 0)
		e.wantUnread(carol, room, 2, 0)
	})
}

func TestMutedRoomAndInvite(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		rs, _ := userapi.DefaultPushRules(carol)
		e.start(Options{})
		room := e.room(bob, carol)
		rs.Room = []userapi.PushRule{{RuleID: room, Enabled: true, Actions: []json.RawMessage{}}}
		e.rules.mu.Lock()
		e.rules.sets[carol] = rs
		delete(e.rules.cache, carol)
		e.rules.mu.Unlock()
		e.send(room, bob, `{"msgtype":"m.text","body":"hello everyone"}`)
		if err := e.rs.Invite(e.ctx, alice, room, "@dave:test", "", false); err != nil {
			t.Fatal(err)
		}
		e.settle()
		e.wantUnread(carol, room, 0, 0)
		e.wantUnread(alice, room, 1, 0)
		e.wantUnread("@dave:test", room, 1, 0)
	})
}

// gateway is a push gateway on loopback.
type gateway struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   []map[string]any
	requests int
	fail     int      // answer 500 to this many requests
	rejected []string // answer with these rejected pushkeys
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.requests++
		if r.URL.Path != "/_matrix/push/v1/notify" {
			w.WriteHeader(404)
			return
		}
		if g.fail > 0 {
			g.fail--
			w.WriteHeader(500)
			return
		}
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		g.bodies = append(g.bodies, body)
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": g.rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) received() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.bodies...)
}

func sp(s string) *string { return &s }

func httpPusher(pushkey, url, format string) SetPusherRequest {
	data := `{"url":"` + url + `","extra":"kept"`
	if format != "" {
		data += `,"format":"` + format + `"`
	}
	return SetPusherRequest{Pushkey: sp(pushkey), Kind: json.RawMessage(`"http"`), AppID: sp("com.example.app"),
		AppDisplayName: sp("Example"), DeviceDisplayName: sp("Phone"), Lang: sp("en"), Data: json.RawMessage(data + "}")}
}

// startDelivery starts the service with quick retries and a gateway on
// loopback; it returns the gateway and its notify URL.
func (e *env) startDelivery(t *testing.T) (*gateway, string) {
	e.start(Options{RetryBase: 200 * time.Millisecond, GatewayTimeout: time.Second})
	g := newGateway(t)
	return g, g.srv.URL + "/_matrix/push/v1/notify"
}

func TestPushDelivery(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		g, url := e.startDelivery(t)
		room := e.room(bob)
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", httpPusher("pk1", url, "")); err != nil {
			t.Fatal(err)
		}
		id, _ := e.send(room, bob, `{"msgtype":"m.text","body":"hello alice"}`)
		waitFor(t, "a push", func() bool { return len(g.received()) == 1 })
		n, _ := g.received()[0]["notification"].(map[string]any)
		if n["event_id"] != id || n["room_id"] != room || n["type"] != "m.room.message" || n["sender"] != bob || n["sender_display_name"] != "Bob" {
			t.Errorf("notification: %v", n)
		}
		if c, _ := n["counts"].(map[string]any); c["unread"] != float64(1) {
			t.Errorf("counts: %v", n["counts"])
		}
		if content, _ := n["content"].(map[string]any); content["body"] != "hello alice" {
			t.Errorf("content: %v", n["content"])
		}
		devs, _ := n["devices"].([]any)
		if len(devs) != 1 {
			t.Fatalf("devices: %v", n["devices"])
		}
		dev := devs[0].(map[string]any)
		data, _ := dev["data"].(map[string]any)
		if dev["app_id"] != "com.example.app" || dev["pushkey"] != "pk1" || dev["pushkey_ts"] == nil || data["extra"] != "kept" || data["url"] != nil {
			t.Errorf("device: %v", dev)
		}
		if tw, _ := dev["tweaks"].(map[string]any); tw["sound"] != "default" {
			t.Errorf("tweaks of a one-to-one message: %v", dev["tweaks"])
		}

		// A gateway that fails gets the push again after a backoff.
		g.mu.Lock()
		g.fail = 2
		g.mu.Unlock()
		id2, _ := e.send(room, bob, `{"msgtype":"m.text","body":"second"}`)
		waitFor(t, "the retried push", func() bool { return len(g.received()) == 2 })
		if n, _ := g.received()[1]["notification"].(map[string]any); n["event_id"] != id2 {
			t.Errorf("retried push: %v", n)
		}

		// event_id_only
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", httpPusher("pk1", url, "event_id_only")); err != nil {
			t.Fatal(err)
		}
		id3, _ := e.send(room, bob, `{"msgtype":"m.text","body":"third"}`)
		waitFor(t, "the event_id_only push", func() bool { return len(g.received()) == 3 })
		n, _ = g.received()[2]["notification"].(map[string]any)
		if n["event_id"] != id3 || n["type"] != nil || n["content"] != nil || n["sender"] != nil {
			t.Errorf("event_id_only: %v", n)
		}

		// Pushes queued while the gateway is down survive a restart.
		g.mu.Lock()
		g.fail = 1 << 30
		g.mu.Unlock()
		before := len(g.received())
		id4, _ := e.send(room, bob, `{"msgtype":"m.text","body":"while the gateway is down"}`)
		waitFor(t, "a failed attempt", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.fail < 1<<30 })
		e.stop()
		g.mu.Lock()
		g.fail = 0
		g.mu.Unlock()
		e.start(Options{RetryBase: 20 * time.Millisecond, GatewayTimeout: time.Second})
		waitFor(t, "the queued push after a restart", func() bool { return len(g.received()) > before })
		if n, _ := g.received()[before]["notification"].(map[string]any); n["event_id"] != id4 {
			t.Errorf("push after the restart: %v", n)
		}

		// A rejected pushkey deletes the pusher.
		g.mu.Lock()
		g.rejected = []string{"pk1"}
		g.mu.Unlock()
		e.send(room, bob, `{"msgtype":"m.text","body":"fourth"}`)
		waitFor(t, "the pusher deleted", func() bool { return len(e.ps.Pushers(e.ctx, alice)) == 0 })
		if err := e.ps.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.stop()
		e.start(Options{})
		if ps := e.ps.Pushers(e.ctx, alice); len(ps) != 0 {
			t.Errorf("rejected pusher back after a restart: %+v", ps)
		}
	})
}

// TestPushGatewayLoopbackRefused: without push.gateway_allowed_ranges, a
// gateway on loopback is never connected to, and the push is dropped
// rather than retried.
func TestPushGatewayLoopbackRefused(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{RetryBase: 20 * time.Millisecond, GatewayTimeout: time.Second, GatewayAllowed: []netip.Prefix{}})
		g := newGateway(t)
		room := e.room(bob)
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", httpPusher("pk1", g.srv.URL+"/_matrix/push/v1/notify", "")); err != nil {
			t.Fatal(err)
		}
		dropped := func() float64 { return testutil.ToFloat64(pushAttempts.WithLabelValues("dropped")) }
		before := dropped()
		e.send(room, bob, `{"msgtype":"m.text","body":"to loopback"}`)
		waitFor(t, "the push dropped", func() bool { return dropped() > before })
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.requests != 0 {
			t.Fatalf("the gateway on loopback got %d requests", g.requests)
		}
	})
}

func TestSetPusherValidation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		const good = "https://push.example.com/_matrix/push/v1/notify"
		mod := func(f func(r *SetPusherRequest)) SetPusherRequest {
			r := httpPusher("pk", good, "")
			f(&r)
			return r
		}
		tests := []struct {
			name string
			req  SetPusherRequest
			code string
		}{
			{"no pushkey", mod(func(r *SetPusherRequest) { r.Pushkey = nil }), "M_MISSING_PARAM"},
			{"no app_id", mod(func(r *SetPusherRequest) { r.AppID = nil }), "M_MISSING_PARAM"},
			{"long app_id", mod(func(r *SetPusherRequest) { r.AppID = sp(strings.Repeat("a", 65)) }), "M_INVALID_PARAM"},
			{"long pushkey", mod(func(r *SetPusherRequest) { r.Pushkey = sp(strings.Repeat("a", 513)) }), "M_INVALID_PARAM"},
			{"no kind", mod(func(r *SetPusherRequest) { r.Kind = nil }), "M_MISSING_PARAM"},
			{"unknown kind", mod(func(r *SetPusherRequest) { r.Kind = json.RawMessage(`"sms"`) }), "M_INVALID_PARAM"},
			{"kind not a string", mod(func(r *SetPusherRequest) { r.Kind = json.RawMessage(`7`) }), "M_BAD_JSON"},
			{"no lang", mod(func(r *SetPusherRequest) { r.Lang = nil }), "M_MISSING_PARAM"},
			{"no app_display_name", mod(func(r *SetPusherRequest) { r.AppDisplayName = nil }), "M_MISSING_PARAM"},
			{"no data", mod(func(r *SetPusherRequest) { r.Data = nil }), "M_MISSING_PARAM"},
			{"data not an object", mod(func(r *SetPusherRequest) { r.Data = json.RawMessage(`[1]`) }), "M_BAD_JSON"},
			{"no url", mod(func(r *SetPusherRequest) { r.Data = json.RawMessage(`{}`) }), "M_MISSING_PARAM"},
			{"url path", mod(func(r *SetPusherRequest) { r.Data = json.RawMessage(`{"url":"https://push.example.com/notify"}`) }), "M_INVALID_PARAM"},
			{"url scheme", mod(func(r *SetPusherRequest) {
				r.Data = json.RawMessage(`{"url":"ftp://push.example.com/_matrix/push/v1/notify"}`)
			}), "M_INVALID_PARAM"},
			{"format not a string", mod(func(r *SetPusherRequest) { r.Data = json.RawMessage(`{"url":"` + good + `","format":1}`) }), "M_INVALID_PARAM"},
			{"delete unknown", mod(func(r *SetPusherRequest) { r.Kind = json.RawMessage(`null`) }), ""},
			{"email", mod(func(r *SetPusherRequest) {
				r.Kind, r.Data, r.Pushkey = json.RawMessage(`"email"`), json.RawMessage(`{"brand":"x"}`), sp("alice@example.com")
			}), ""},
			{"http", mod(func(r *SetPusherRequest) {}), ""},
		}
		for _, tc := range tests {
			err := e.ps.SetPusher(e.ctx, alice, "ADEV", tc.req)
			if tc.code == "" && err != nil || tc.code != "" && !merr.Is(err, tc.code) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.code)
			}
		}
		if got := e.ps.Pushers(e.ctx, alice); len(got) != 2 {
			t.Fatalf("pushers: %+v", got)
		}
		// Another user takes the same app_id and pushkey: alice's goes,
		// unless append.
		if err := e.ps.SetPusher(e.ctx, bob, "BDEV", httpPusher("pk", good, "")); err != nil {
			t.Fatal(err)
		}
		if got := e.ps.Pushers(e.ctx, alice); len(got) != 1 || got[0].Kind != "email" {
			t.Errorf("alice's pushers after bob took the pushkey: %+v", got)
		}
		req := httpPusher("pk", good, "")
		req.Append = true
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", req); err != nil {
			t.Fatal(err)
		}
		if len(e.ps.Pushers(e.ctx, alice)) != 2 || len(e.ps.Pushers(e.ctx, bob)) != 1 {
			t.Errorf("append: alice %+v bob %+v", e.ps.Pushers(e.ctx, alice), e.ps.Pushers(e.ctx, bob))
		}
		del := httpPusher("pk", good, "")
		del.Kind = json.RawMessage(`null`)
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", del); err != nil {
			t.Fatal(err)
		}
		if len(e.ps.Pushers(e.ctx, alice)) != 1 || len(e.ps.Pushers(e.ctx, bob)) != 1 {
			t.Errorf("delete: alice %+v bob %+v", e.ps.Pushers(e.ctx, alice), e.ps.Pushers(e.ctx, bob))
		}
	})
}

// BenchmarkOnRoomEvent: one message into a ten-member room, evaluated for
// the nine others and stored (SQLite), as the sync engine drives it.
func BenchmarkOnRoomEvent(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	e := newEnv(b, db)
	e.start(Options{})
	defer e.stop()
	members := []string{bob, carol}
	for i := 0; i < 7; i++ {
		members = append(members, fmt.Sprintf("@member%d:test", i))
	}
	room := e.room(members...)
	e.settle()
	e.stop()
	ps, err := New(e.ctx, db, e.b, e.rs, e.rules, Options{ServerName: "test"})
	if err != nil {
		b.Fatal(err)
	}
	defer ps.Close()
	base := e.rs.Position()
	content := json.RawMessage(`{"type":"m.room.message","content":{"msgtype":"m.text","body":"a perfectly ordinary message about lunch"}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		n := roomserver.Notice{Event: roomserver.Event{Pos: base + int64(i) + 1, EventID: fmt.Sprintf("$ev%d", i), RoomID: room,
			Type: "m.room.message", Sender: bob, OriginTS: 1, JSON: content}}
		ps.OnRoomEvent(e.ctx, &n)
	}
	if err := ps.Flush(e.ctx); err != nil {
		b.Fatal(err)
	}
}

func TestPruneNotifications(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		old := time.Now().Add(-keepNotified - time.Hour).UnixMilli()
		for i, ts := range []int64{old, time.Now().UnixMilli()} {
			if _, err := db.Exec(e.ctx, `INSERT INTO push_notified (pos, room_id, event_id, ts, data)
VALUES ($1, '!r:test', $2, $3, '{"a":[["notify"]],"h":[false],"u":{"@alice:test":0}}')`, i+1, fmt.Sprint("$e", i), ts); err != nil {
				t.Fatal(err)
			}
		}
		e.ps.w.prune(e.ctx)
		var n int
		if err := db.QueryRow(e.ctx, `SELECT COUNT(*) FROM push_notified`).Scan(&n); err != nil || n != 1 {
			t.Errorf("after pruning: %d rows (%v), want 1 (the recent one)", n, err)
		}
	})
}

// crash stops the service the way a crash would: no last checkpoint.
func (e *env) crash() {
	e.unsub()
	e.unsub = nil
	close(e.ps.cpStop)
	<-e.ps.cpDone
	e.ps.cpStop = nil
	e.ps.Close()
	e.ps = nil
}

// TestCrashBeforeCheckpoint: counts changed after the last checkpoint come
// back after a crash (the events are evaluated again), and the stored
// notifications are not doubled.
func TestCrashBeforeCheckpoint(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{CheckpointEvery: time.Hour})
		room := e.room(bob, carol)
		e.send(room, bob, `{"msgtype":"m.text","body":"one"}`)
		e.send(room, bob, `{"msgtype":"m.text","body":"two @alice:test","m.mentions":{"user_ids":["@alice:test"]}}`)
		e.send(room, carol, `{"msgtype":"m.text","body":"carol reads"}`)
		e.settle()
		e.wantUnread(alice, room, 3, 1)
		e.wantUnread(carol, room, 0, 0)
		if err := e.ps.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.crash()
		e.start(Options{CheckpointEvery: time.Hour})
		e.wantUnread(alice, room, 3, 1)
		e.wantUnread(carol, room, 0, 0)
		e.wantUnread(bob, room, 1, 0)
		list, next, err := e.ps.Notifications(e.ctx, alice, "", 10, "")
		if err != nil || len(list) != 3 || next != "" {
			t.Fatalf("notifications after the crash: %v %+v %q", err, list, next)
		}
		// A clean stop checkpoints: nothing is evaluated again.
		e.stop()
		var pos int64
		if err := db.QueryRow(e.ctx, `SELECT pos FROM push_position WHERE id = 0`).Scan(&pos); err != nil || pos != e.rs.Position() {
			t.Errorf("checkpoint position %d (%v), want %d", pos, err, e.rs.Position())
		}
		e.start(Options{CheckpointEvery: time.Hour})
		e.wantUnread(alice, room, 3, 1)
	})
}

// TestLegacyNotifications: rows of the old per-user notifications table are
// moved at start.
func TestLegacyNotifications(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		for _, r := range []struct {
			user string
			pos  int64
			hl   bool
			read bool
		}{{alice, 10, false, true}, {alice, 11, true, false}, {bob, 11, false, false}, {alice, 12, false, false}} {
			if _, err := db.Exec(e.ctx, `INSERT INTO notifications (user_id, pos, room_id, event_id, thread_id, highlight, actions, ts, is_read)
VALUES ($1, $2, '!r:test', $3, '', $4, '["notify"]', $5, $6)`, r.user, r.pos, fmt.Sprint("$e", r.pos), r.hl, time.Now().UnixMilli(), r.read); err != nil {
				t.Fatal(err)
			}
		}
		e.start(Options{})
		e.wantUnread(alice, "!r:test", 2, 1)
		e.wantUnread(bob, "!r:test", 1, 0)
		list, _, err := e.ps.Notifications(e.ctx, alice, "", 10, "")
		if err != nil || len(list) != 3 || list[0].EventID != "$e12" || list[2].EventID != "$e10" || !list[2].Read || list[1].Read {
			t.Fatalf("notifications: %v %+v", err, list)
		}
		var n int
		if err := db.QueryRow(e.ctx, `SELECT COUNT(*) FROM notifications`).Scan(&n); err != nil || n != 0 {
			t.Errorf("old table: %d rows (%v)", n, err)
		}
		e.stop()
		e.start(Options{})
		e.wantUnread(alice, "!r:test", 2, 1)
	})
}

// TestGapInNotices: events whose bus notices went missing are read from the
// database when the next notice shows the gap.
func TestGapInNotices(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		room := e.room(bob)
		e.settle()
		e.unsub() // notices from now on are lost
		e.unsub = nil
		e.send(room, bob, `{"msgtype":"m.text","body":"lost 1"}`)
		e.send(room, bob, `{"msgtype":"m.text","body":"lost 2"}`)
		e.wantUnread(alice, room, 0, 0)
		e.subscribe()
		e.send(room, bob, `{"msgtype":"m.text","body":"seen"}`)
		e.settle()
		e.wantUnread(alice, room, 3, 0)
	})
}

// TestGapCatchUpFailure: when the events of a gap cannot be read (a
// database error), the gap is not skipped: the next notice tries again,
// and every event is counted once.
func TestGapCatchUpFailure(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		room := e.room(bob)
		e.settle()
		e.unsub() // notices from now on are lost
		e.unsub = nil
		e.send(room, bob, `{"msgtype":"m.text","body":"lost 1"}`)
		e.send(room, bob, `{"msgtype":"m.text","body":"lost 2"}`)
		id3, _ := e.send(room, bob, `{"msgtype":"m.text","body":"three"}`)
		id4, _ := e.send(room, bob, `{"msgtype":"m.text","body":"four"}`)
		notice := func(id string) *roomserver.Notice {
			ev, err := e.rs.GetEvent(e.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return &roomserver.Notice{Event: ev}
		}
		// The gap's events cannot be read: the context is cancelled.
		failing, cancel := context.WithCancel(e.ctx)
		cancel()
		e.ps.OnRoomEvent(failing, notice(id3))
		e.ps.OnRoomEvent(e.ctx, notice(id4))
		e.settle()
		e.wantUnread(alice, room, 4, 0)
	})
}

// TestStateAtTheEvent: when evaluation runs behind (here: events committed
// while the service was stopped), a room's members are those at each
// event, not the current ones: the invite notifies bob even though he has
// joined since, and carol, who joined after the message, is not notified
// of it.
func TestStateAtTheEvent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.start(Options{})
		e.stop()
		res, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: "public_chat", Invite: []string{bob}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.rs.Join(e.ctx, bob, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		e.send(res.RoomID, alice, `{"msgtype":"m.text","body":"hello"}`)
		if _, err := e.rs.Join(e.ctx, carol, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		e.start(Options{})
		e.settle()
		e.wantUnread(bob, res.RoomID, 2, 0) // the invite and the message
		e.wantUnread(carol, res.RoomID, 0, 0)
	})
}

// TestPushNotificationFields: a push carries every field of the Push
// Gateway API's notification that applies (the room's name and canonical
// alias, the target of a member event, the counts with the missed calls),
// and event_id_only pushers get the reduced form.
func TestPushNotificationFields(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		g, url := e.startDelivery(t)
		name := "Planning"
		res, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: "public_chat", Name: &name, RoomAliasName: "planning"})
		if err != nil {
			t.Fatal(err)
		}
		room := res.RoomID
		if _, err := e.rs.Join(e.ctx, bob, room, ""); err != nil {
			t.Fatal(err)
		}
		for _, p := range []SetPusherRequest{httpPusher("full", url, ""), httpPusher("ids", url, "event_id_only")} {
			if err := e.ps.SetPusher(e.ctx, bob, "BDEV", p); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.ps.SetPusher(e.ctx, carol, "CDEV", httpPusher("carol", url, "")); err != nil {
			t.Fatal(err)
		}
		pushes := func(eventID string, want int) map[string]map[string]any {
			t.Helper()
			byKey := map[string]map[string]any{}
			waitFor(t, "the pushes of "+eventID, func() bool {
				for _, b := range g.received() {
					n, _ := b["notification"].(map[string]any)
					devs, _ := n["devices"].([]any)
					if n["event_id"] == eventID && len(devs) == 1 {
						byKey[devs[0].(map[string]any)["pushkey"].(string)] = n
					}
				}
				return len(byKey) == want
			})
			return byKey
		}

		e.txn++
		call, err := e.rs.Send(e.ctx, roomserver.Sender{UserID: alice, DeviceID: "DEV"}, roomserver.SendRequest{RoomID: room, Type: "m.call.invite",
			Content: json.RawMessage(`{"call_id":"c1","lifetime":60000,"version":"1","offer":{"type":"offer","sdp":"v=0"}}`), TxnID: fmt.Sprint("t", e.txn)})
		if err != nil {
			t.Fatal(err)
		}
		got := pushes(call, 2)
		full, _ := json.Marshal(got["full"])
		content, _ := json.Marshal(got["full"]["content"])
		want := fmt.Sprintf(`{"content":%s,"counts":{"missed_calls":1,"unread":1},"devices":[{"app_id":"com.example.app","data":{"extra":"kept"},"pushkey":"full","pushkey_ts":%d,"tweaks":{"sound":"ring"}}],"event_id":%q,"prio":"high","room_alias":"#planning:test","room_id":%q,"room_name":"Planning","sender":%q,"sender_display_name":"Alice","type":"m.call.invite"}`,
			content, int64(got["full"]["devices"].([]any)[0].(map[string]any)["pushkey_ts"].(float64)), call, room, alice)
		if string(full) != want {
			t.Errorf("full push\n got %s\nwant %s", full, want)
		}
		if string(content) != `{"call_id":"c1","lifetime":60000,"offer":{"sdp":"v=0","type":"offer"},"version":"1"}` {
			t.Errorf("content %s", content)
		}
		ids := got["ids"]
		var keys []string
		for k := range ids {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if fmt.Sprint(keys) != "[counts devices event_id prio room_id]" || ids["room_id"] != room {
			t.Errorf("event_id_only push: %v", ids)
		}

		// An invite: the invitee is the target of the member event.
		if err := e.rs.Invite(e.ctx, alice, room, carol, "", false); err != nil {
			t.Fatal(err)
		}
		e.settle()
		ev, err := e.rs.CurrentStateEvent(e.ctx, room, "m.room.member", carol)
		if err != nil {
			t.Fatal(err)
		}
		inv := pushes(ev.EventID, 1)["carol"]
		if inv["type"] != "m.room.member" || inv["membership"] != "invite" || inv["user_is_target"] != true || inv["room_alias"] != "#planning:test" {
			t.Errorf("invite push: %v", inv)
		}

		// Once Bob has read the room, his call is no longer missed; zero counts are left out.
		_, pos := e.send(room, alice, `{"msgtype":"m.text","body":"are you there?"}`)
		e.settle()
		e.ps.OnReceipt(e.ctx, room, bob, "", pos, 1)
		msg, _ := e.send(room, alice, `{"msgtype":"m.text","body":"later then"}`)
		if c, _ := pushes(msg, 2)["full"]["counts"].(map[string]any); fmt.Sprint(c) != "map[unread:1]" {
			t.Errorf("counts after the receipt: %v", c)
		}
	})
}
