package sytest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/haven-chat/haven/internal/testca"
)

// site is a Haven process with federation on, named localhost:<its
// federation port>, trusting the test's CA.
type site struct {
	*server
	name    string
	fedAddr string
}

// startSites starts two sites that federate only with each other, with
// certificates from a throwaway CA: the first on SQLite, the second on
// PostgreSQL, so that both engines serve both directions.
func startSites(t *testing.T) (*site, *site) {
	t.Helper()
	ca := testca.New(t)
	cert, key := ca.Issue(t, "localhost")
	portA, portB := freePort(t), freePort(t)
	nameA, nameB := fmt.Sprintf("localhost:%d", portA), fmt.Sprintf("localhost:%d", portB)
	return startSite(t, "sqlite", ca, cert, key, portA, nameB), startSite(t, "postgres", ca, cert, key, portB, nameA)
}

// startSite starts Haven named localhost:<port>, serving federation on
// that port with cert and key, trusting ca, and federating only with
// partners.
func startSite(t *testing.T, db string, ca *testca.CA, cert, key string, port int, partners ...string) *site {
	t.Helper()
	name := fmt.Sprintf("localhost:%d", port)
	s := startServer(t, db,
		"HAVEN_SERVER_NAME="+name,
		"HAVEN_FEDERATION_ENABLED=true",
		fmt.Sprintf("HAVEN_FEDERATION_LISTEN=127.0.0.1:%d", port),
		"HAVEN_FEDERATION_TLS_CERT="+cert,
		"HAVEN_FEDERATION_TLS_KEY="+key,
		"HAVEN_FEDERATION_CA_FILE="+ca.File(),
		"HAVEN_FEDERATION_ALLOWED_SERVERS="+strings.Join(append([]string{name}, partners...), ","),
	)
	return &site{server: s, name: name, fedAddr: fmt.Sprintf("127.0.0.1:%d", port)}
}

func TestFederationTwoSites(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	aliceSync, bobSync := startSyncer(t, alice), startSyncer(t, bob)

	// alice invites bob across the sites; bob sees the invite and joins.
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Across"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite across sites: %v", err)
	}
	bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
	if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatalf("join across sites: %v", err)
	}
	aliceSync.waitFor(t, "bob's join", func(r *mautrix.RespSync) bool {
		jr := r.Rooms.Join[room.RoomID]
		if jr == nil {
			return false
		}
		for _, ev := range jr.Timeline.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "join" {
				return true
			}
		}
		return false
	})
	bobSync.waitFor(t, "the room's name", func(r *mautrix.RespSync) bool {
		jr := r.Rooms.Join[room.RoomID]
		if jr == nil {
			return false
		}
		for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
			if ev.Type == event.StateRoomName {
				return true
			}
		}
		return false
	})

	// Messages both ways, in order.
	for i := 0; i < 5; i++ {
		send(t, alice, room.RoomID, fmt.Sprintf("from A %d", i))
		send(t, bob, room.RoomID, fmt.Sprintf("from B %d", i))
	}
	bobSync.waitFor(t, "alice's last message", func(r *mautrix.RespSync) bool { return timelineHas(r, room.RoomID, "from A 4") })
	aliceSync.waitFor(t, "bob's last message", func(r *mautrix.RespSync) bool { return timelineHas(r, room.RoomID, "from B 4") })
	for _, c := range []*mautrix.Client{alice, bob} {
		var bodies []string
		msgs, err := c.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(msgs.Chunk) - 1; i >= 0; i-- {
			if body, _ := msgs.Chunk[i].Content.Raw["body"].(string); body != "" {
				bodies = append(bodies, body)
			}
		}
		// Each side's own messages stay in the order they were sent.
		for _, prefix := range []string{"from A ", "from B "} {
			n := 0
			for _, body := range bodies {
				if strings.HasPrefix(body, prefix) {
					if body != fmt.Sprintf("%s%d", prefix, n) {
						t.Fatalf("%s sees %v: out of order", c.UserID, bodies)
					}
					n++
				}
			}
			if n != 5 {
				t.Fatalf("%s sees %v", c.UserID, bodies)
			}
		}
	}

	// A direct chat started with bob on the other site (createRoom's
	// invite list, as Element's "Start chat" does).
	dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	bobSync.waitFor(t, "the direct chat's invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[dm.RoomID] != nil })
	if _, err := bob.JoinRoom(ctx, dm.RoomID.String(), nil); err != nil {
		t.Fatalf("join the direct chat (no via: the invite names the server): %v", err)
	}

	// carol on site B joins a room that had history before any user of
	// B was in it: /messages fetches it from site A.
	public, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		send(t, alice, public.RoomID, fmt.Sprintf("history %d", i))
	}
	dave := b.register(t, "dave")
	if _, err := dave.JoinRoom(ctx, public.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	var history []string
	from := ""
	for page := 0; page < 10 && len(history) < 30; page++ {
		msgs, err := dave.Messages(ctx, public.RoomID, from, "", mautrix.DirectionBackward, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			if body, _ := ev.Content.Raw["body"].(string); strings.HasPrefix(body, "history ") {
				history = append(history, body)
			}
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	if len(history) != 30 || history[0] != "history 29" || history[29] != "history 0" {
		t.Fatalf("history backfilled on site B: %v", history)
	}

	// A room restricted to the members of the first one: bob joins it from
	// site B, authorised by alice's server; carol on B, in no allowed
	// room, is refused.
	restricted := createRestricted(t, alice, room.RoomID)
	if _, err := bob.JoinRoom(ctx, restricted.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatalf("restricted join across sites: %v", err)
	}
	carol := b.register(t, "carol")
	if _, err := carol.JoinRoom(ctx, restricted.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("restricted join of a non-member: %v", err)
	}

	// alice reads bob's profile from his site.
	if err := bob.SetDisplayName(ctx, "Bob at B"); err != nil {
		t.Fatal(err)
	}
	prof, err := alice.GetProfile(ctx, bob.UserID)
	if err != nil || prof.DisplayName != "Bob at B" {
		t.Fatalf("bob's profile through site A: %+v %v", prof, err)
	}

	// Both sides agree on the room's state.
	waitUntil(t, "the same state on both sites", func() bool {
		return strings.Join(stateIDs(t, alice, room.RoomID), ",") == strings.Join(stateIDs(t, bob, room.RoomID), ",")
	})

	// Site B stops while A sends; everything arrives after B restarts.
	bobSync.stopNow()
	b.stop()
	// More than the 50 newest a room's catch-up sends: B fills the gap
	// in the middle of its history when its users page back into it.
	const whileDown = 70
	for i := 0; i < whileDown; i++ {
		send(t, alice, room.RoomID, fmt.Sprintf("while B was down %d", i))
	}
	b.start()
	bobSync = startSyncer(t, bob)
	bobSync.waitFor(t, "the messages sent while B was down", func(r *mautrix.RespSync) bool {
		return timelineHas(r, room.RoomID, fmt.Sprintf("while B was down %d", whileDown-1))
	})
	var order []string
	from = ""
	for page := 0; page < 20; page++ {
		msgs, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 25)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			if body, _ := ev.Content.Raw["body"].(string); strings.HasPrefix(body, "while B was down ") {
				order = append(order, body)
			}
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	if len(order) != whileDown {
		t.Fatalf("B's history of the outage: %d of %d messages: %v", len(order), whileDown, order)
	}
	for i, body := range order {
		if want := fmt.Sprintf("while B was down %d", whileDown-1-i); body != want {
			t.Fatalf("B's history of the outage out of order at %d: %q, want %q", i, body, want)
		}
	}
}

// TestFederationRefusals: a request with a forged signature is refused
// with 401, a server outside the allowlist with 403 before any work, and
// an invite to a server outside the allowlist is never sent.
func TestFederationRefusals(t *testing.T) {
	a, b := startSites(t)
	_ = b
	ctx := context.Background()
	cli := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	do := func(origin, keyID string, priv ed25519.PrivateKey, tamper bool) (int, string) {
		req := fclient.NewFederationRequest("GET", spec.ServerName(origin), spec.ServerName(a.name), "/_matrix/federation/v1/query/profile?user_id=@alice:"+a.name)
		if err := req.Sign(spec.ServerName(origin), gomatrixserverlib.KeyID(keyID), priv); err != nil {
			t.Fatal(err)
		}
		hr, err := req.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		hr.URL.Scheme, hr.URL.Host = "https", a.fedAddr
		if tamper {
			hr.URL.RawQuery = "user_id=@bob:" + a.name
		}
		resp, err := cli.Do(hr.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct {
			Errcode string `json:"errcode"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Errcode
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	a.register(t, "alice")
	// An allowed name whose key this request was not signed with.
	if code, errcode := do(b.name, "ed25519:forged", priv, false); code != 401 || errcode != "M_UNAUTHORIZED" {
		t.Fatalf("forged request: %d %s", code, errcode)
	}
	// A server outside the allowlist.
	if code, errcode := do("evil.example.com", "ed25519:x", priv, false); code != 403 || errcode != "M_FORBIDDEN" {
		t.Fatalf("server outside the allowlist: %d %s", code, errcode)
	}
	// Without any signature.
	resp, err := cli.Get("https://" + a.fedAddr + "/_matrix/federation/v1/query/profile?user_id=@alice:" + a.name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("unsigned request: %d", resp.StatusCode)
	}
	// The key server answers anyone.
	resp, err = cli.Get("https://" + a.fedAddr + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("key server: %d", resp.StatusCode)
	}
	// An invite to a server outside the allowlist is refused here.
	alice := a.login(t, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: id.UserID("@mallory:evil.example.com")})
	if err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("invite outside the allowlist: %v", err)
	}
}

func send(t *testing.T, c *mautrix.Client, room id.RoomID, body string) {
	t.Helper()
	if _, err := c.SendText(context.Background(), room, body); err != nil {
		t.Fatalf("%s sends %q: %v", c.UserID, body, err)
	}
}

func stateIDs(t *testing.T, c *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	var evs []struct {
		EventID string `json:"event_id"`
	}
	if _, err := c.MakeRequest(context.Background(), "GET", c.BuildClientURL("v3", "rooms", room, "state"), nil, &evs); err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	sort.Strings(out)
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

// createRestricted makes a room only members of allowed may join.
func createRestricted(t *testing.T, c *mautrix.Client, allowed id.RoomID) id.RoomID {
	t.Helper()
	resp, err := c.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
		Type: event.StateJoinRules, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed.String()}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}

// TestRestrictedJoin: on one server, a member of the allowed room joins a
// restricted room without an invite; a non-member is refused.
func TestRestrictedJoin(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		restricted := createRestricted(t, alice, space.RoomID)
		if _, err := bob.JoinRoom(ctx, restricted.String(), nil); err == nil {
			t.Fatal("bob joined before being in the allowed room")
		}
		if _, err := bob.JoinRoom(ctx, space.RoomID.String(), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoom(ctx, restricted.String(), nil); err != nil {
			t.Fatalf("restricted join: %v", err)
		}
		var member struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if _, err := bob.MakeRequest(ctx, "GET", bob.BuildClientURL("v3", "rooms", restricted, "state", "m.room.member", bob.UserID), nil, &member); err != nil {
			t.Fatal(err)
		}
		if member.Via != alice.UserID.String() {
			t.Fatalf("join authorised via %q", member.Via)
		}
		if _, err := carol.JoinRoom(ctx, restricted.String(), nil); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
			t.Fatalf("carol's join: %v", err)
		}
	})
}
