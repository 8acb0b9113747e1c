package sytest

import (
	"net/url"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// advertisedFlags are the unstable flags /versions must carry: each names a
// feature Haven has, and TestVersionsFlaggedFeaturesWork proves it.
var advertisedFlags = []string{
	"org.matrix.e2e_cross_signing",
	"org.matrix.msc2285.stable",
	"org.matrix.msc2432",
	"org.matrix.msc3440.stable",
	"org.matrix.msc3715",
	"org.matrix.msc3771",
	"org.matrix.msc3773",
	"org.matrix.msc3827.stable",
	"org.matrix.msc3856",
	"org.matrix.msc3916.stable",
	"org.matrix.msc3981",
	"org.matrix.simplified_msc3575",
}

// TestVersionsAdvertised: /versions lists exactly the unstable flags of
// the features Haven has, all true. Element Web with Rust crypto reports
// "Your homeserver does not support cross-signing" without
// org.matrix.e2e_cross_signing, and never shows public spaces in the room
// directory without org.matrix.msc3827.stable.
func TestVersionsAdvertised(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		r := s.do(t, "GET", "/_matrix/client/versions", "", nil).expect(t, 200)
		unstable, _ := r.JSON["unstable_features"].(map[string]any)
		var got []string
		for k, v := range unstable {
			if v != true {
				t.Errorf("%s is %v: advertise only what is on", k, v)
			}
			got = append(got, k)
		}
		sort.Strings(got)
		if len(got) != len(advertisedFlags) {
			t.Fatalf("unstable_features %v, want %v", got, advertisedFlags)
		}
		for i := range got {
			if got[i] != advertisedFlags[i] {
				t.Fatalf("unstable_features %v, want %v", got, advertisedFlags)
			}
		}
	})
}

// TestVersionsFlaggedFeaturesWork: every advertised flag's feature answers
// as its MSC says (a flag without a probe here fails the test).
func TestVersionsFlaggedFeaturesWork(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "flags"})
		join(t, bob, room.String())
		root := sendText(t, alice, room, "thread root")
		reply := sendContent(t, bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in the thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", CreationContent: map[string]any{"type": "m.space"}})
		rooms := v3 + "/rooms/" + p(room)
		relations := "/_matrix/client/v1/rooms/" + p(room) + "/relations/" + p(root)
		probes := map[string]func(t *testing.T){
			"org.matrix.e2e_cross_signing": func(t *testing.T) {
				k := newTestKey(t)
				user := alice.UserID.String()
				s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, map[string]any{"master_key": map[string]any{
					"user_id": user, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + k.pub: k.pub}}}).expect(t, 200)
			},
			"org.matrix.msc2285.stable": func(t *testing.T) {
				s.do(t, "POST", rooms+"/receipt/m.read.private/"+p(reply), alice.AccessToken, map[string]any{}).expect(t, 200)
			},
			"org.matrix.msc2432": func(t *testing.T) {
				r := s.do(t, "GET", rooms+"/aliases", alice.AccessToken, nil).expect(t, 200)
				if a, _ := r.JSON["aliases"].([]any); len(a) != 1 {
					t.Errorf("aliases: %s", r)
				}
			},
			"org.matrix.msc3440.stable": func(t *testing.T) {
				r := s.do(t, "GET", rooms+"/event/"+p(root), alice.AccessToken, nil).expect(t, 200)
				rel, _ := r.JSON["unsigned"].(map[string]any)["m.relations"].(map[string]any)
				if th, _ := rel["m.thread"].(map[string]any); num(th["count"]) < 1 {
					t.Errorf("m.thread aggregation: %s", r)
				}
			},
			"org.matrix.msc3715": func(t *testing.T) {
				r := s.do(t, "GET", relations+"?dir=f", alice.AccessToken, nil).expect(t, 200)
				if c, _ := r.JSON["chunk"].([]any); len(c) < 1 || c[0].(map[string]any)["event_id"] != reply.String() {
					t.Errorf("relations dir=f (the first reply first): %s", r)
				}
			},
			"org.matrix.msc3771": func(t *testing.T) {
				s.do(t, "POST", rooms+"/receipt/m.read/"+p(reply), alice.AccessToken, map[string]any{"thread_id": root.String()}).expect(t, 200)
			},
			"org.matrix.msc3773": func(t *testing.T) {
				// Carol joins, reads nothing, and gets a count for the thread.
				carol := s.register(t, "carol")
				join(t, carol, room.String())
				sendContent(t, bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "more",
					"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
				f := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
				eventually(t, "a thread count", func() bool {
					_, raw := s.rawSync(t, carol, url.Values{"filter": {f}})
					jr, _ := raw["rooms"].(map[string]any)["join"].(map[string]any)[room.String()].(map[string]any)
					th, _ := jr["unread_thread_notifications"].(map[string]any)
					c, _ := th[root.String()].(map[string]any)
					return num(c["notification_count"]) >= 1
				})
			},
			"org.matrix.msc3827.stable": func(t *testing.T) {
				r := s.do(t, "POST", v3+"/publicRooms", alice.AccessToken, map[string]any{"filter": map[string]any{"room_types": []string{"m.space"}}}).expect(t, 200)
				if c, _ := r.JSON["chunk"].([]any); len(c) != 1 || c[0].(map[string]any)["room_id"] != space.String() {
					t.Errorf("room_types m.space: %s", r)
				}
			},
			"org.matrix.msc3856": func(t *testing.T) {
				r := s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(room)+"/threads", alice.AccessToken, nil).expect(t, 200)
				if c, _ := r.JSON["chunk"].([]any); len(c) != 1 {
					t.Errorf("threads: %s", r)
				}
			},
			"org.matrix.msc3916.stable": func(t *testing.T) {
				s.do(t, "GET", "/_matrix/client/v1/media/config", alice.AccessToken, nil).expect(t, 200)
			},
			"org.matrix.msc3981": func(t *testing.T) {
				s.do(t, "GET", relations+"?recurse=true", alice.AccessToken, nil).expect(t, 200)
			},
			"org.matrix.simplified_msc3575": func(t *testing.T) {
				r := s.sliding(t, alice, "", 0, map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1}}})
				if r.Lists["all"].Count != 2 || len(r.Rooms) != 1 {
					t.Errorf("sliding sync: count %d, rooms %v", r.Lists["all"].Count, keys(r.Rooms))
				}
			},
		}
		r := s.do(t, "GET", "/_matrix/client/versions", "", nil).expect(t, 200)
		unstable, _ := r.JSON["unstable_features"].(map[string]any)
		// In a fixed order: msc3773's probe adds a thread reply that the
		// msc3440 and msc3715 probes must not see yet.
		flags := make([]string, 0, len(unstable))
		for flag := range unstable {
			flags = append(flags, flag)
		}
		sort.Strings(flags)
		for _, flag := range flags {
			probe := probes[flag]
			if probe == nil {
				t.Errorf("%s is advertised but nothing here proves its feature", flag)
				continue
			}
			t.Run(flag, probe)
		}
	})
}
