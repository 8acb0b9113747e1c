package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/userapi"
)

// fakeUsers knows some accounts, each with the device DEV1.
type fakeUsers struct{ accounts map[string]bool }

func (f *fakeUsers) AccountExists(ctx context.Context, userID string) (bool, error) {
	return f.accounts[userID], nil
}

func (f *fakeUsers) DeviceByID(ctx context.Context, userID, deviceID string) (userapi.DeviceInfo, error) {
	if f.accounts[userID] && deviceID == "DEV1" {
		return userapi.DeviceInfo{DeviceID: deviceID}, nil
	}
	return userapi.DeviceInfo{}, merr.NotFound("Unknown device %s", deviceID)
}

func (f *fakeUsers) Register(ctx context.Context, req userapi.RegisterRequest) (userapi.Session, error) {
	return userapi.Session{}, nil
}

func testRegistry(t *testing.T, url string) *Registry {
	t.Helper()
	body := strings.Replace(goodReg, "http://127.0.0.1:9999", url, 1)
	if url == "" {
		body = strings.Replace(goodReg, "url: http://127.0.0.1:9999", "url: null", 1)
	}
	regs, probs := Load([]string{writeReg(t, t.TempDir(), "irc.yaml", body)}, "example.org")
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	return NewRegistry(regs)
}

func TestAuthenticateAppService(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry(t, "http://127.0.0.1:1")
	s := &Service{q: NewQueries(reg, QueryOptions{ServerName: "example.org"}), reg: reg,
		d: Deps{Users: &fakeUsers{accounts: map[string]bool{"@_irc_alice:example.org": true, "@alice:example.org": true, "@_irc_bot:example.org": true}}}}
	for _, c := range []struct {
		name, token, user, device string
		ok                        bool
		code, wantUser, wantDev   string
	}{
		{"user token", "hvt_other", "", "", false, "", "", ""},
		{"sender", "as-irc-token", "", "", true, "", "@_irc_bot:example.org", ""},
		{"sender named", "as-irc-token", "@_irc_bot:example.org", "", true, "", "@_irc_bot:example.org", ""},
		{"ghost", "as-irc-token", "@_irc_alice:example.org", "", true, "", "@_irc_alice:example.org", ""},
		{"ghost device", "as-irc-token", "@_irc_alice:example.org", "DEV1", true, "", "@_irc_alice:example.org", "DEV1"},
		{"unknown device", "as-irc-token", "@_irc_alice:example.org", "DEV2", true, "M_UNKNOWN_DEVICE", "", ""},
		{"outside the namespace", "as-irc-token", "@alice:example.org", "", true, "M_FORBIDDEN", "", ""},
		{"not registered", "as-irc-token", "@_irc_nobody:example.org", "", true, "M_FORBIDDEN", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev, ok, err := s.AuthenticateAppService(ctx, c.token, c.user, c.device)
			if ok != c.ok {
				t.Fatalf("ok = %v", ok)
			}
			if c.code != "" {
				if !merr.Is(err, c.code) {
					t.Fatalf("want %s, got %v", c.code, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok && (dev.UserID != c.wantUser || dev.DeviceID != c.wantDev || dev.AppService != "irc") {
				t.Fatalf("device %+v", dev)
			}
		})
	}
	if s.RateLimited(userapi.Device{UserID: "@_irc_bot:example.org", AppService: "irc"}) || !s.RateLimited(userapi.Device{UserID: "@_irc_alice:example.org", AppService: "irc"}) {
		t.Error("the sender is never rate-limited; its users are by default")
	}
}

func TestQueriesAgainstService(t *testing.T) {
	ctx := context.Background()
	var gotAuth, pingBody string
	status := http.StatusOK
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/app/v1/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.PathValue("user") == "@_irc_known:example.org" {
			w.Write([]byte("{}"))
			return
		}
		w.WriteHeader(404)
	})
	mux.HandleFunc("GET /_matrix/app/v1/rooms/{alias}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) })
	mux.HandleFunc("POST /_matrix/app/v1/ping", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			TxnID string `json:"transaction_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&b)
		pingBody = b.TxnID
		w.WriteHeader(status)
		w.Write([]byte(`{"errcode":"M_UNKNOWN"}`))
	})
	mux.HandleFunc("GET /_matrix/app/v1/thirdparty/protocol/irc", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"instances":[{"network_id":"libera"}]}`))
	})
	mux.HandleFunc("GET /_matrix/app/v1/thirdparty/location/irc", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"alias":"#_irc_` + r.URL.Query().Get("channel") + `:example.org","protocol":"irc","fields":{}}]`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	q := NewQueries(testRegistry(t, srv.URL), QueryOptions{ServerName: "example.org", Timeout: 2 * time.Second})

	if !q.QueryUser(ctx, "@_irc_known:example.org") || gotAuth != "Bearer hs-irc-token" {
		t.Fatalf("query of a known user (auth %q)", gotAuth)
	}
	if q.QueryUser(ctx, "@_irc_new:example.org") || q.QueryUser(ctx, "@alice:example.org") || q.QueryUser(ctx, "@_irc_known:other.org") {
		t.Fatal("query answered true for a user the service does not have")
	}
	if q.QueryAlias(ctx, "#_irc_x:example.org") {
		t.Fatal("alias query")
	}
	if err := q.MayCreateAlias("@alice:example.org", "#_irc_x:example.org"); !merr.Is(err, "M_EXCLUSIVE") {
		t.Fatalf("exclusive alias for others: %v", err)
	}
	if err := q.MayCreateAlias("@_irc_bob:example.org", "#_irc_x:example.org"); err != nil {
		t.Fatalf("the service's own user: %v", err)
	}

	if _, err := q.Ping(ctx, "irc", "irc", "t1"); err != nil || pingBody != "t1" {
		t.Fatalf("ping: %v %q", err, pingBody)
	}
	if _, err := q.Ping(ctx, "other", "irc", ""); !merr.Is(err, "M_FORBIDDEN") {
		t.Fatalf("ping of another service: %v", err)
	}
	status = http.StatusBadRequest
	_, err := q.Ping(ctx, "irc", "irc", "")
	if me, ok := merr.As(err); !ok || me.Code != "M_BAD_STATUS" || me.Status != 502 || me.Extra["status"] != 400 {
		t.Fatalf("ping of a failing service: %v", err)
	}
	down := NewQueries(testRegistry(t, "http://127.0.0.1:1"), QueryOptions{ServerName: "example.org"})
	if _, err := down.Ping(ctx, "irc", "irc", ""); !merr.Is(err, "M_CONNECTION_FAILED") {
		t.Fatalf("ping of a service that is down: %v", err)
	}
	if _, err := NewQueries(testRegistry(t, ""), QueryOptions{}).Ping(ctx, "irc", "irc", ""); !merr.Is(err, "M_URL_NOT_SET") {
		t.Fatalf("ping without a URL: %v", err)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(300 * time.Millisecond) }))
	defer slow.Close()
	if _, err := NewQueries(testRegistry(t, slow.URL), QueryOptions{Timeout: 50 * time.Millisecond}).Ping(ctx, "irc", "irc", ""); !merr.Is(err, "M_CONNECTION_TIMEOUT") {
		t.Fatalf("ping of a slow service: %v", err)
	}

	ps, _ := q.Protocols(ctx)
	if !strings.Contains(string(ps["irc"]), "libera") {
		t.Fatalf("protocols %s", ps)
	}
	if _, err := q.Protocol(ctx, "xmpp"); !merr.Is(err, "M_NOT_FOUND") {
		t.Fatalf("unknown protocol: %v", err)
	}
	locs, err := q.Lookup(ctx, "location", "irc", url.Values{"channel": {"matrix"}})
	if err != nil || len(locs) != 1 || !strings.Contains(string(locs[0]), "#_irc_matrix:example.org") {
		t.Fatalf("location lookup: %s %v", locs, err)
	}
	if merged := q.mergeProtocol([]byte(`{"instances":[{"a":1}],"icon":"x"}`), []byte(`{"instances":[{"b":2}]}`)); !strings.Contains(string(merged), `[{"a":1},{"b":2}]`) {
		t.Fatalf("merged %s", merged)
	}
}

// fakeRooms gives !aliased:example.org the alias #_irc_chan:example.org.
type fakeRooms struct{}

func (fakeRooms) Position() int64 { return 0 }
func (fakeRooms) AllRoomMemberships(ctx context.Context, fn func(roomID, userID, membership string, pos int64)) error {
	return nil
}
func (fakeRooms) AliasesOf(ctx context.Context, roomID string) ([]string, error) {
	if roomID == "!aliased:example.org" {
		return []string{"#_irc_chan:example.org"}, nil
	}
	return []string{}, nil
}
func (fakeRooms) RoomsOf(ctx context.Context, userID string) (map[string]string, error) {
	if userID == "@alice:example.org" {
		return map[string]string{"!bridged:example.org": "join", "!left:example.org": "leave"}, nil
	}
	return nil, nil
}

func TestFeedInterest(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry(t, "http://127.0.0.1:1")
	s := &Service{reg: reg, d: Deps{Rooms: fakeRooms{}}}
	f := newFeed(s)
	r := reg.All()[0]
	f.noteMember("!bridged:example.org", "@_irc_bob:example.org", true)
	f.noteMember("!bridged:example.org", "@alice:example.org", true) // not controlled: not indexed
	if _, ok := f.members["!bridged:example.org"]["@alice:example.org"]; ok {
		t.Fatal("the index keeps only the services' users")
	}
	key := func(s string) *string { return &s }
	for _, c := range []struct {
		name string
		n    roomserver.Notice
		want bool
	}{
		{"ghost's room", roomserver.Notice{Event: roomserver.Event{RoomID: "!bridged:example.org", Sender: "@alice:example.org", Type: "m.room.message"}}, true},
		{"other room", roomserver.Notice{Event: roomserver.Event{RoomID: "!other:example.org", Sender: "@alice:example.org", Type: "m.room.message"}}, false},
		{"sent by a ghost", roomserver.Notice{Event: roomserver.Event{RoomID: "!other:example.org", Sender: "@_irc_carol:example.org", Type: "m.room.message"}}, true},
		{"invite of a ghost", roomserver.Notice{Event: roomserver.Event{RoomID: "!other:example.org", Sender: "@alice:example.org", Type: "m.room.member", StateKey: key("@_irc_dan:example.org"), Membership: "invite"}}, true},
		{"alias namespace", roomserver.Notice{Event: roomserver.Event{RoomID: "!aliased:example.org", Sender: "@alice:example.org", Type: "m.room.message"}}, true},
		{"room namespace", roomserver.Notice{Event: roomserver.Event{RoomID: "!ircroom:example.org", Sender: "@alice:example.org", Type: "m.room.message"}}, true},
	} {
		if got := f.interested(ctx, r, &c.n); got != c.want {
			t.Errorf("%s: interested = %v", c.name, got)
		}
	}
	f.noteMember("!bridged:example.org", "@_irc_bob:example.org", false)
	if len(f.members) != 0 {
		t.Fatal("a leave empties the index")
	}
}

func TestFeedEphemeralRouting(t *testing.T) {
	ctx := context.Background()
	body := strings.Replace(goodReg, "receive_ephemeral: true", "receive_ephemeral: true\norg.matrix.msc3202: true", 1)
	regs, probs := Load([]string{writeReg(t, t.TempDir(), "irc.yaml", body)}, "example.org")
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	s := &Service{reg: NewRegistry(regs), d: Deps{Rooms: fakeRooms{}}}
	f := newFeed(s)
	f.noteMember("!bridged:example.org", "@_irc_bob:example.org", true)

	f.onPresence(ctx, []byte(`{"user_id":"@alice:example.org","presence":"online","last_active":1}`))
	f.onPresence(ctx, []byte(`{"user_id":"@stranger:example.org","presence":"online"}`))
	f.onDeviceList(ctx, []byte(`{"user_id":"@alice:example.org","pos":3}`))
	f.onDeviceList(ctx, []byte(`{"user_id":"@alice:example.org","pos":4}`))
	f.onTyping(ctx, []byte(`{"room_id":"!bridged:example.org","user_id":"@alice:example.org","typing":true,"expires_ms":`+strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)+`}`))
	f.onTyping(ctx, []byte(`{"room_id":"!bridged:example.org","user_id":"@alice:example.org","typing":false}`))
	f.onReceipt(ctx, []byte(`{"room_id":"!bridged:example.org","user_id":"@alice:example.org","type":"m.read.private","event_id":"$x"}`))
	f.onReceipt(ctx, []byte(`{"room_id":"!other:example.org","user_id":"@alice:example.org","type":"m.read","event_id":"$x"}`))
	p := f.pend["irc"]
	if p == nil {
		t.Fatal("nothing pending")
	}
	var kinds []string
	for _, e := range p.ephemeral {
		var ev struct {
			Type    string          `json:"type"`
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(e, &ev)
		kinds = append(kinds, ev.Type+" "+ev.Sender+string(ev.Content))
	}
	// One presence (alice shares a room with a ghost; the stranger does
	// not), one m.typing (the newest replaces the first: nobody types), no
	// private receipt, no receipt of a room without ghosts.
	if len(kinds) != 2 || !strings.HasPrefix(kinds[0], "m.presence @alice:example.org") || kinds[1] != `m.typing {"user_ids":[]}` {
		t.Fatalf("ephemeral: %q", kinds)
	}
	if strings.Join(p.deviceLists, ",") != "@alice:example.org" {
		t.Fatalf("device lists: %v", p.deviceLists)
	}
}
