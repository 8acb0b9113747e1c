package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/push"
)

// fakePush records what the push handlers ask.
type fakePush struct {
	set    []push.SetPusherRequest
	device string
	setErr error
	list   []push.Notification
	next   string
	from   string
	limit  int
	only   string
}

func (f *fakePush) SetPusher(_ context.Context, _, deviceID string, req push.SetPusherRequest) error {
	f.set, f.device = append(f.set, req), deviceID
	return f.setErr
}

func (f *fakePush) Pushers(context.Context, string) []push.Pusher {
	return []push.Pusher{{Pushkey: "pk", Kind: "http", AppID: "a", AppDisplayName: "A", DeviceDisplayName: "D", Lang: "en", Data: json.RawMessage(`{"url":"https://x/_matrix/push/v1/notify"}`)}}
}

func (f *fakePush) Notifications(_ context.Context, _, from string, limit int, only string) ([]push.Notification, string, error) {
	f.from, f.limit, f.only = from, limit, only
	return f.list, f.next, nil
}

type fakeEvents map[string]json.RawMessage

func (f fakeEvents) ClientEvents(_ context.Context, ids []string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, id := range ids {
		if ev, ok := f[id]; ok {
			out[id] = ev
		}
	}
	return out, nil
}

func TestPushEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		cfg := config.Default()
		cfg.ServerName, cfg.PasswordHashCost, cfg.Registration.Open = "test.local", 4, true
		cfg.RateLimits.Enabled, cfg.MaxRequestBytes = false, 64<<10
		users, err := userapi.New(context.Background(), db, nil, userapi.Options{ServerName: cfg.ServerName, PasswordHashCost: 4})
		if err != nil {
			t.Fatal(err)
		}
		log := logrus.New()
		log.SetOutput(io.Discard)
		fp := &fakePush{}
		events := fakeEvents{"$a": json.RawMessage(`{"event_id":"$a","type":"m.room.message"}`)}
		api := &API{Cfg: cfg, Log: log, Auth: users, Users: users, Limiter: NewLimiter(cfg.RateLimits)}
		api.Areas = append(append(api.BaseAreas(), api.UserAreas()...), api.PushArea(fp, events))
		srv := httptest.NewServer(api.Router())
		t.Cleanup(srv.Close)
		e := &utEnv{t: t, url: srv.URL, users: users}
		tok, dev := e.register("alice", "pw")

		e.want(e.do("GET", "/_matrix/client/v3/pushers", "", nil), 401, "M_MISSING_TOKEN")
		e.want(e.do("GET", "/_matrix/client/v3/notifications", "", nil), 401, "M_MISSING_TOKEN")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", "", map[string]any{}), 401, "M_MISSING_TOKEN")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, "{nope"), 400, "M_NOT_JSON")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, "[1]"), 400, "M_BAD_JSON")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, `{"append":"yes"}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, `{"pushkey":"`+strings.Repeat("x", 40<<10)+`"}`), 413, "M_TOO_LARGE")
		if len(fp.set) != 0 {
			t.Fatalf("bad bodies reached the service: %+v", fp.set)
		}
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, `{"pushkey":"pk","app_id":"a","kind":null}`), 200, "")
		if len(fp.set) != 1 || fp.device != dev || string(fp.set[0].Kind) != "null" {
			t.Fatalf("set: %+v device %q", fp.set, fp.device)
		}
		fp.setErr = merr.MissingParam("Missing lang")
		e.want(e.do("POST", "/_matrix/client/v3/pushers/set", tok, `{"pushkey":"pk","app_id":"a","kind":"http"}`), 400, "M_MISSING_PARAM")

		r := e.do("GET", "/_matrix/client/v3/pushers", tok, nil)
		e.want(r, 200, "")
		if !strings.Contains(r.raw, `"pushers":[{"pushkey":"pk","kind":"http","app_id":"a"`) {
			t.Errorf("pushers: %s", r.raw)
		}

		e.want(e.do("GET", "/_matrix/client/v3/notifications?limit=x", tok, nil), 400, "M_INVALID_PARAM")
		fp.list = []push.Notification{
			{Pos: 9, RoomID: "!r:test.local", EventID: "$a", Actions: `["notify"]`, TS: 5, Read: true},
			{Pos: 8, RoomID: "!r:test.local", EventID: "$gone", Actions: `["notify"]`, TS: 4},
		}
		fp.next = "8"
		r = e.do("GET", "/_matrix/client/v3/notifications?from=10&limit=2&only=highlight", tok, nil)
		e.want(r, 200, "")
		want := `{"next_token":"8","notifications":[{"actions":["notify"],"event":{"event_id":"$a","type":"m.room.message"},"read":true,"room_id":"!r:test.local","ts":5}]}`
		if r.raw != want {
			t.Errorf("notifications:\n%s\nwant\n%s", r.raw, want)
		}
		if fp.from != "10" || fp.limit != 2 || fp.only != "highlight" {
			t.Errorf("query passed as from %q limit %d only %q", fp.from, fp.limit, fp.only)
		}
		fp.list, fp.next = nil, ""
		if r = e.do("GET", "/_matrix/client/v3/notifications", tok, nil); r.raw != `{"notifications":[]}` {
			t.Errorf("no notifications: %s", r.raw)
		}
	})
}
