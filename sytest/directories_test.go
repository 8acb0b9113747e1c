package sytest

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestFederationDirectories: the directories across two sites. A room
// published on B is listed and found on A with server=B; a space on A with
// a child room on B shows the child in A's and B's /hierarchy (also to a
// user of B not in the space); the user directory of A finds B's users
// once they share a room, or are in a public room, with their names.
func TestFederationDirectories(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	if err := bob.SetDisplayName(ctx, "Robert Remote"); err != nil {
		t.Fatal(err)
	}

	// A room published in B's directory, listed and searched from A.
	lounge, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "B Lounge", Topic: "coffee talk"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: b.name})
	if err != nil {
		t.Fatalf("B's directory from A: %v", err)
	}
	if len(list.Chunk) != 1 || list.Chunk[0].RoomID != lounge.RoomID || list.Chunk[0].Name != "B Lounge" || list.Chunk[0].NumJoinedMembers != 1 {
		t.Fatalf("B's directory from A: %+v", list.Chunk)
	}
	if own, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); err != nil || len(own.Chunk) != 0 {
		t.Fatalf("A's own directory: %+v %v", own, err)
	}
	path := "/_matrix/client/v3/publicRooms?server=" + url.QueryEscape(b.name)
	found := a.do(t, "POST", path, alice.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "COFFEE"}}).expect(t, 200)
	if chunk, _ := found.JSON["chunk"].([]any); len(chunk) != 1 {
		t.Fatalf("search of B's directory: %s", found)
	}
	none := a.do(t, "POST", path, alice.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "tea"}}).expect(t, 200)
	if chunk, _ := none.JSON["chunk"].([]any); len(chunk) != 0 {
		t.Fatalf("search of B's directory for nothing: %s", none)
	}
	// A server outside the allowlist, and a malformed name.
	a.do(t, "GET", "/_matrix/client/v3/publicRooms?server=evil.example.com", alice.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
	a.do(t, "GET", "/_matrix/client/v3/publicRooms?server=no%20such", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
	if _, err := alice.JoinRoom(ctx, lounge.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.name}}); err != nil {
		t.Fatalf("join the listed room: %v", err)
	}

	// A space on A with a child room on B that no user of A is in.
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "A Space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	child, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "B Child"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, space.RoomID, event.StateSpaceChild, child.RoomID.String(), map[string]any{"via": []string{b.name}}); err != nil {
		t.Fatal(err)
	}
	hierarchyHas := func(c *mautrix.Client, root, want id.RoomID, name string) {
		t.Helper()
		resp, err := c.Hierarchy(ctx, root, nil)
		if err != nil {
			t.Fatalf("%s's /hierarchy: %v", c.UserID, err)
		}
		for _, r := range resp.Rooms {
			if r.RoomID == want && r.Name == name {
				return
			}
		}
		raw, _ := json.Marshal(resp.Rooms)
		t.Fatalf("%s's /hierarchy of %s has no %s: %s", c.UserID, root, want, raw)
	}
	hierarchyHas(alice, space.RoomID, space.RoomID, "A Space")
	hierarchyHas(alice, space.RoomID, child.RoomID, "B Child")
	// carol on B is in no room of the space: B asks A about it.
	carol := b.register(t, "carol")
	hierarchyHas(carol, space.RoomID, space.RoomID, "A Space")
	hierarchyHas(carol, space.RoomID, child.RoomID, "B Child")
	// bob joins the space: B has it now.
	if _, err := bob.JoinRoom(ctx, space.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	hierarchyHas(bob, space.RoomID, child.RoomID, "B Child")

	// The user directory of A finds bob (he shares the space and the
	// lounge with alice), with his name from his member events.
	// (The spec's field is display_name; mautrix reads displayname.)
	search := func(c *mautrix.Client, term string) []map[string]any {
		t.Helper()
		r := a.do(t, "POST", "/_matrix/client/v3/user_directory/search", c.AccessToken, map[string]any{"search_term": term}).expect(t, 200)
		var out []map[string]any
		for _, x := range r.JSON["results"].([]any) {
			out = append(out, x.(map[string]any))
		}
		return out
	}
	waitUntil(t, "bob in A's user directory", func() bool {
		res := search(alice, "robert")
		return len(res) == 1 && res[0]["user_id"] == bob.UserID.String() && res[0]["display_name"] == "Robert Remote"
	})
	// dave on B joins a public room of A: erin on A, who shares no room
	// with him, finds him there.
	dave := b.register(t, "dave")
	if err := dave.SetDisplayName(ctx, "Dave Distant"); err != nil {
		t.Fatal(err)
	}
	erin := a.register(t, "erin")
	if res := search(erin, "distant"); len(res) != 0 {
		t.Fatalf("dave before he is in a room of A: %+v", res)
	}
	if _, err := dave.JoinRoom(ctx, space.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "dave in A's user directory", func() bool {
		res := search(erin, "distant")
		return len(res) == 1 && res[0]["user_id"] == dave.UserID.String() && res[0]["display_name"] == "Dave Distant"
	})
}
