package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// bridge is a real application service built with mautrix-go's appservice
// package, listening on loopback: it keeps what its transactions bring and
// answers user and alias queries by creating what is asked for.
type bridge struct {
	t    *testing.T
	reg  *appservice.Registration
	file string
	port uint16
	as   *appservice.AppService

	mu        sync.Mutex
	events    []*event.Event // room events, in the order of the transactions
	ephemeral []*event.Event
	queried   []string
	stop      chan struct{}
	serving   chan struct{}
}

const bridgeServer = "localhost"

// newBridge writes the bridge's registration file (with mautrix's own
// writer, as a bridge does) before the server that reads it starts.
func newBridge(t *testing.T) *bridge {
	t.Helper()
	b := &bridge{t: t, port: uint16(freePort(t)), stop: make(chan struct{})}
	reg := appservice.CreateRegistration()
	reg.ID = "sytest-bridge"
	reg.URL = fmt.Sprintf("http://127.0.0.1:%d", b.port)
	reg.SenderLocalpart = "_bridge_bot"
	reg.EphemeralEvents = true
	reg.Protocols = []string{"sytestproto"}
	reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@_bridge_.*:" + bridgeServer, Exclusive: true}}
	reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#_bridge_.*:" + bridgeServer, Exclusive: true}}
	b.reg = reg
	b.file = filepath.Join(t.TempDir(), "bridge-registration.yaml")
	if err := reg.Save(b.file); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(b.stop)
		b.as.Stop()
	})
	return b
}

// start connects the bridge to the server and starts its HTTP listener.
func (b *bridge) start(serverURL string) {
	b.t.Helper()
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration: b.reg, HomeserverDomain: bridgeServer, HomeserverURL: serverURL,
		HostConfig: appservice.HostConfig{Hostname: "127.0.0.1", Port: b.port},
	})
	if err != nil {
		b.t.Fatal(err)
	}
	as.QueryHandler = b
	as.Router.HandleFunc("GET /_matrix/app/v1/thirdparty/protocol/{protocol}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://x/y","field_types":{},"instances":[{"desc":"Sytest network","network_id":"net1","fields":{}}]}`)
	})
	as.Router.HandleFunc("GET /_matrix/app/v1/thirdparty/user/{protocol}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `[{"userid":"@_bridge_%s:%s","protocol":%q,"fields":{"nick":%q}}]`, r.URL.Query().Get("nick"), bridgeServer, r.PathValue("protocol"), r.URL.Query().Get("nick"))
	})
	b.as = as
	go func() {
		for {
			select {
			case evt := <-as.Events:
				b.mu.Lock()
				if evt.Type.Class == event.EphemeralEventType {
					b.ephemeral = append(b.ephemeral, evt)
				} else {
					b.events = append(b.events, evt)
				}
				b.mu.Unlock()
			case <-b.stop:
				return
			}
		}
	}()
	b.listen()
}

// listen (re)starts the bridge's HTTP server and waits until it answers.
func (b *bridge) listen() {
	b.t.Helper()
	b.serving = make(chan struct{})
	go func(done chan struct{}) { b.as.Start(); close(done) }(b.serving)
	eventually(b.t, "the bridge listens", func() bool {
		resp, err := http.Get(b.reg.URL + "/_matrix/mau/live")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// down stops the bridge's HTTP server: the server's transactions fail.
func (b *bridge) down() {
	b.as.Stop()
	<-b.serving
}

// QueryUser creates the ghost the server asks about, as bridges do.
func (b *bridge) QueryUser(userID id.UserID) bool {
	b.mu.Lock()
	b.queried = append(b.queried, string(userID))
	b.mu.Unlock()
	if !strings.HasPrefix(string(userID), "@_bridge_q") {
		return false
	}
	return b.as.Intent(userID).EnsureRegistered(context.Background()) == nil
}

// QueryAlias creates the room the server asks about, with the alias.
func (b *bridge) QueryAlias(alias id.RoomAlias) bool {
	b.mu.Lock()
	b.queried = append(b.queried, string(alias))
	b.mu.Unlock()
	lp, _, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	if !strings.HasPrefix(lp, "_bridge_q") {
		return false
	}
	_, err := b.as.BotIntent().CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomAliasName: lp, Preset: "public_chat"})
	return err == nil
}

// bodies are the bodies of the messages from sender the bridge has, in order.
func (b *bridge) bodies(sender id.UserID) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.events {
		if e.Sender == sender && e.Type == event.EventMessage {
			out = append(out, e.Content.AsMessage().Body)
		}
	}
	return out
}

func (b *bridge) hasEvent(cond func(e *event.Event) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(b.events, cond)
}

func (b *bridge) hasEphemeral(cond func(e *event.Event) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(b.ephemeral, cond)
}

func (b *bridge) wasQueried(what string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.queried, what)
}

// TestAppService runs a mautrix-go bridge against the server: ghosts
// registered and logged in through the service, masquerading, exclusive
// namespaces, transactions in order and without loss while the bridge or
// the server is down, queries, ping and third-party lookups.
func TestAppService(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			b := newBridge(t)
			s := startServer(t, db, "HAVEN_APP_SERVICES="+b.file)
			b.start(s.URL)
			asToken := b.reg.AppToken

			// Ping: the server calls the bridge back.
			if !b.as.BotIntent().EnsureAppserviceConnection(ctx) {
				t.Fatal("ping failed")
			}
			s.do(t, "POST", "/_matrix/client/v1/appservice/other/ping", asToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
			s.do(t, "POST", "/_matrix/client/v1/appservice/sytest-bridge/ping", "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")

			// The service acts as its sender without user_id.
			if who := s.do(t, "GET", v3+"/account/whoami", asToken, nil).expect(t, 200); who.str("user_id") != "@_bridge_bot:localhost" || who.JSON["device_id"] != nil {
				t.Fatalf("whoami of the service: %s", who)
			}

			// A ghost registers through the service (inhibit_login) and logs in through it.
			ghostID := id.UserID("@_bridge_alice:localhost")
			ghost := b.as.Intent(ghostID)
			if err := ghost.EnsureRegistered(ctx); err != nil {
				t.Fatalf("register the ghost: %v", err)
			}
			if who, err := ghost.Whoami(ctx); err != nil || who.UserID != ghostID || who.DeviceID != "" {
				t.Fatalf("whoami as the ghost: %+v %v", who, err)
			}
			login := s.do(t, "POST", v3+"/login", asToken, map[string]any{"type": "m.login.application_service",
				"identifier": map[string]string{"type": "m.id.user", "user": "_bridge_alice"}}).expect(t, 200)
			if login.str("user_id") != string(ghostID) || login.str("access_token") == "" {
				t.Fatalf("login through the service: %s", login)
			}
			if who := s.do(t, "GET", v3+"/account/whoami", login.str("access_token"), nil).expect(t, 200); who.str("user_id") != string(ghostID) || who.str("device_id") != login.str("device_id") {
				t.Fatalf("whoami with the ghost's token: %s", who)
			}
			s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.application_service",
				"identifier": map[string]string{"type": "m.id.user", "user": "_bridge_alice"}}).expectErr(t, 401, "M_MISSING_TOKEN")
			s.do(t, "POST", v3+"/register", asToken, map[string]any{"type": "m.login.application_service", "username": "notbridged"}).expectErr(t, 400, "M_EXCLUSIVE")

			// Exclusive namespaces: nobody else registers a ghost's name or takes its aliases.
			alice := s.register(t, "alice")
			s.do(t, "GET", v3+"/register/available?username=_bridge_bob", "", nil).expectErr(t, 400, "M_EXCLUSIVE")
			_, err := (&mautrix.Client{HomeserverURL: alice.HomeserverURL, Client: alice.Client}).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "_bridge_bob", Password: "password-bob"})
			mustErr(t, "register a ghost's name", err, 400, "M_EXCLUSIVE")

			// Masquerading only as registered users of the namespace.
			s.do(t, "GET", v3+"/account/whoami?user_id="+p(alice.UserID), asToken, nil).expectErr(t, 403, "M_FORBIDDEN")
			s.do(t, "GET", v3+"/account/whoami?user_id="+p("@_bridge_nobody:localhost"), asToken, nil).expectErr(t, 403, "M_FORBIDDEN")
			s.do(t, "GET", v3+"/account/whoami?user_id="+p(ghostID)+"&device_id=NOPE", asToken, nil).expectErr(t, 400, "M_UNKNOWN_DEVICE")

			// The ghost creates a room and invites a real user, who joins.
			created, err := ghost.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "bridged", Invite: []id.UserID{alice.UserID}})
			if err != nil {
				t.Fatalf("ghost creates a room: %v", err)
			}
			room := created.RoomID
			join(t, alice, room.String())
			s.do(t, "PUT", v3+"/directory/room/"+p("#_bridge_taken:localhost"), alice.AccessToken, map[string]string{"room_id": room.String()}).expectErr(t, 400, "M_EXCLUSIVE")

			// The real user's messages reach the bridge, in order.
			send := func(from, to int) {
				for i := from; i <= to; i++ {
					sendText(t, alice, room, fmt.Sprintf("m%d", i))
				}
			}
			want := func(n int) []string {
				var out []string
				for i := 1; i <= n; i++ {
					out = append(out, fmt.Sprintf("m%d", i))
				}
				return out
			}
			waitBodies := func(n int) {
				t.Helper()
				eventually(t, fmt.Sprintf("the bridge has m1..m%d", n), func() bool { return len(b.bodies(alice.UserID)) >= n })
				if got := b.bodies(alice.UserID); !slices.Equal(got, want(n)) {
					t.Fatalf("the bridge got %v, want %v", got, want(n))
				}
			}
			send(1, 5)
			waitBodies(5)
			if !b.hasEvent(func(e *event.Event) bool {
				return e.Type == event.StateMember && e.GetStateKey() == alice.UserID.String() && e.Content.AsMember().Membership == event.MembershipJoin
			}) {
				t.Error("the bridge did not get the real user's join")
			}

			// The bridge goes away for a while; nothing is lost, nothing comes out of order.
			b.down()
			send(6, 10)
			b.listen()
			if !b.as.BotIntent().EnsureAppserviceConnection(ctx) { // the ping also ends the server's wait before a retry
				t.Fatal("ping after the bridge came back")
			}
			waitBodies(10)

			// The server restarts while the bridge is down: the queue survives.
			b.down()
			send(11, 12)
			s.restart()
			b.listen()
			waitBodies(12)

			// Ephemeral events: the real user types.
			if _, err := alice.UserTyping(ctx, room, true, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the bridge sees alice typing", func() bool {
				return b.hasEphemeral(func(e *event.Event) bool {
					return e.Type == event.EphemeralEventTyping && e.RoomID == room && slices.Contains(e.Content.AsTyping().UserIDs, alice.UserID)
				})
			})

			// User query: a profile lookup of an unknown ghost asks the bridge, which creates it.
			s.do(t, "GET", v3+"/profile/"+p("@_bridge_q1:localhost"), alice.AccessToken, nil).expect(t, 200)
			s.do(t, "GET", v3+"/profile/"+p("@_bridge_none:localhost"), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
			if !b.wasQueried("@_bridge_q1:localhost") || !b.wasQueried("@_bridge_none:localhost") {
				t.Error("the bridge was not asked about the users")
			}
			// ... and so does an invite of one.
			invite(t, alice, room, "@_bridge_q2:localhost")
			eventually(t, "the bridge gets the invite of its user", func() bool {
				return b.hasEvent(func(e *event.Event) bool {
					return e.Type == event.StateMember && e.GetStateKey() == "@_bridge_q2:localhost" && e.Content.AsMember().Membership == event.MembershipInvite
				})
			})

			// Alias query: an unknown alias of the bridge's namespace is asked of it.
			res := s.do(t, "GET", v3+"/directory/room/"+p("#_bridge_qroom:localhost"), alice.AccessToken, nil).expect(t, 200)
			if !strings.HasPrefix(res.str("room_id"), "!") {
				t.Fatalf("alias resolved to %s", res)
			}
			s.do(t, "GET", v3+"/directory/room/"+p("#_bridge_other:localhost"), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")

			// Third-party lookups go to the bridge that declares the protocol.
			protos := s.do(t, "GET", v3+"/thirdparty/protocols", alice.AccessToken, nil).expect(t, 200)
			if _, ok := protos.JSON["sytestproto"]; !ok {
				t.Fatalf("protocols: %s", protos)
			}
			s.do(t, "GET", v3+"/thirdparty/protocol/nope", alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
			users := s.do(t, "GET", v3+"/thirdparty/user/sytestproto?nick=zed", alice.AccessToken, nil).expect(t, 200)
			var list []map[string]any
			if json.Unmarshal(users.Raw, &list) != nil || len(list) != 1 || list[0]["userid"] != "@_bridge_zed:localhost" {
				t.Fatalf("third-party users: %s", users)
			}

			// The service lists its room in the directory.
			s.do(t, "PUT", v3+"/directory/list/appservice/net1/"+p(room), asToken, map[string]string{"visibility": "public"}).expect(t, 200)
			if v := s.do(t, "GET", v3+"/directory/list/room/"+p(room), "", nil).expect(t, 200); v.str("visibility") != "public" {
				t.Fatalf("visibility: %s", v)
			}
			s.do(t, "PUT", v3+"/directory/list/appservice/net1/"+p(room), alice.AccessToken, map[string]string{"visibility": "public"}).expectErr(t, 403, "M_FORBIDDEN")
		})
	}
}

// A registration file that is not right keeps the server from starting.
func TestAppServiceBadRegistration(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("id: x\nurl: http://127.0.0.1:1\nas_token: same\nhs_token: same\nsender_localpart: _x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"check-config", "serve"} {
		cmd := exec.Command(havenBin, sub)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HAVEN_APP_SERVICES="+bad, "HAVEN_DATA_DIR="+filepath.Join(dir, "data"),
			fmt.Sprintf("HAVEN_LISTEN=127.0.0.1:%d", freePort(t)))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "as_token and hs_token are the same") {
			t.Fatalf("%s with a bad registration: %v\n%s", sub, err, out)
		}
	}
}
