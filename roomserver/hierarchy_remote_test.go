package roomserver

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// fakeSpaces answers for rooms of remote.test as its server would.
type fakeSpaces struct {
	mu     sync.Mutex
	asked  []string // server|room
	answer map[string]*ServerHierarchy
}

func (f *fakeSpaces) RemoteHierarchy(_ context.Context, server, roomID string, _ bool) (*ServerHierarchy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, server+"|"+roomID)
	if h, ok := f.answer[roomID]; ok && server == "remote.test" {
		return h, nil
	}
	return nil, merr.NotFound("unknown room")
}

func (f *fakeSpaces) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.asked...)
	sort.Strings(out)
	return out
}

func childEvent(roomID string, via ...string) ChildState {
	c, _ := json.Marshal(map[string]any{"via": via})
	return ChildState{Type: "m.space.child", StateKey: roomID, Sender: "@carol:remote.test", Content: c, OriginServerTS: 1}
}

// TestHierarchyRemoteChildren: a space's children this server is not in
// are asked of their via servers once (and their own children taken
// from the same answer); what the user may not see, what no server
// answers for and what a server answers wrongly are left out.
func TestHierarchyRemoteChildren(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		const alice, bob = "@alice:test", "@bob:test"
		fake := &fakeSpaces{answer: map[string]*ServerHierarchy{}}
		h.s.opts.Spaces = fake
		name := "Space"
		res, err := h.s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", Name: &name,
			CreationContent: map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}})
		if err != nil {
			t.Fatal(err)
		}
		space := res.RoomID
		for i, c := range []struct{ id, via string }{
			{"!far:remote.test", "remote.test"}, {"!sub:remote.test", "remote.test"}, {"!secret:remote.test", "remote.test"},
			{"!gone:remote.test", "down.test"}, {"!liar:remote.test", "remote.test"}, {"!self:remote.test", "test"},
		} {
			key := c.id
			order := string(rune('a' + i))
			if _, err := h.s.Send(ctx, Sender{alice, "D"}, SendRequest{RoomID: space, Type: "m.space.child", StateKey: &key,
				Content: json.RawMessage(`{"via":["` + c.via + `"],"order":"` + order + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		room := func(id, joinRule, typ string, children ...ChildState) HierarchyRoom {
			return HierarchyRoom{PublicRoom: PublicRoom{RoomID: id, Name: strings.TrimPrefix(id, "!"), JoinRule: joinRule, RoomType: typ, NumJoinedMembers: 2},
				RoomVersion: "10", ChildrenState: children}
		}
		fake.answer["!far:remote.test"] = &ServerHierarchy{Room: room("!far:remote.test", "public", "")}
		// The subspace's answer carries its children: leaf is not asked again.
		fake.answer["!sub:remote.test"] = &ServerHierarchy{
			Room: room("!sub:remote.test", "public", "m.space", childEvent("!leaf:remote.test", "remote.test"), childEvent("!hidden:remote.test", "remote.test"),
				ChildState{Type: "m.space.child", StateKey: "not a room", Sender: "@carol:remote.test", Content: json.RawMessage(`{"via":["remote.test"]}`)}),
			Children:             []HierarchyRoom{room("!leaf:remote.test", "knock", "")},
			InaccessibleChildren: []string{"!hidden:remote.test"},
		}
		fake.answer["!secret:remote.test"] = &ServerHierarchy{Room: room("!secret:remote.test", "invite", "")}
		// An answer about another room than the one asked.
		fake.answer["!liar:remote.test"] = &ServerHierarchy{Room: room("!far:remote.test", "public", "")}

		resp, err := h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: bob, MaxDepth: -1})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{space, "!far:remote.test", "!sub:remote.test", "!leaf:remote.test"}
		if got := roomIDs(resp); !reflect.DeepEqual(got, want) {
			t.Fatalf("bob sees %v, want %v", got, want)
		}
		if far := resp.Rooms[1]; far.Name != "far:remote.test" || far.RoomVersion != "10" || far.NumJoinedMembers != 2 {
			t.Fatalf("remote room's summary %+v", far)
		}
		if sub := resp.Rooms[2]; len(sub.ChildrenState) != 2 {
			t.Fatalf("remote subspace's children %+v", sub.ChildrenState)
		}
		wantAsked := []string{"down.test|!gone:remote.test", "remote.test|!far:remote.test", "remote.test|!liar:remote.test", "remote.test|!secret:remote.test", "remote.test|!sub:remote.test"}
		if got := fake.questions(); !reflect.DeepEqual(got, wantAsked) {
			t.Fatalf("asked %v, want %v", got, wantAsked)
		}
		// The next page (or request) asks nobody again.
		page, err := h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: bob, MaxDepth: -1, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		page, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: bob, MaxDepth: -1, Limit: 2, From: page.NextBatch})
		if err != nil || !reflect.DeepEqual(roomIDs(page), want[2:]) {
			t.Fatalf("second page %v %v", roomIDs(page), err)
		}
		if got := fake.questions(); !reflect.DeepEqual(got, wantAsked) {
			t.Fatalf("asked again: %v", got)
		}

		// A root this server is not in is asked of its room ID's server.
		fake.answer["!root:remote.test"] = &ServerHierarchy{Room: room("!root:remote.test", "public", "m.space", childEvent("!far:remote.test", "remote.test"))}
		resp, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "!root:remote.test", UserID: bob, MaxDepth: -1})
		if err != nil || !reflect.DeepEqual(roomIDs(resp), []string{"!root:remote.test", "!far:remote.test"}) {
			t.Fatalf("remote root: %v %v", roomIDs(resp), err)
		}
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "!secret:remote.test", UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "!unknown:elsewhere.test", UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_FORBIDDEN")
	})
}

func TestSaneRemoteRoom(t *testing.T) {
	long := strings.Repeat("x", maxSummaryText+1)
	h := HierarchyRoom{PublicRoom: PublicRoom{RoomID: "!r:x", Name: long, Topic: "ok", NumJoinedMembers: -5, JoinRule: "restricted"},
		AllowedRoomIDs: []string{"!a:x", "nope"}, ChildrenState: []ChildState{
			childEvent("!c:x", "x"),
			childEvent("!c:x", "x"), // twice
			{Type: "m.space.child", StateKey: "!d:x", Sender: "not a user", Content: json.RawMessage(`{"via":["x"]}`)},
			{Type: "m.room.name", StateKey: "!e:x", Sender: "@u:x", Content: json.RawMessage(`{"via":["x"]}`)},
			{Type: "m.space.child", StateKey: "!f:x", Sender: "@u:x", Content: json.RawMessage(`[1]`)},
			{Type: "m.space.child", StateKey: "!g:x", Sender: "@u:x", Content: json.RawMessage(`{"via":[]}`)},
		}}
	sum := saneRemoteRoom(h)
	if sum == nil || sum.Name != "" || sum.Topic != "ok" || sum.NumJoinedMembers != 0 || !reflect.DeepEqual(sum.AllowedRoomIDs, []string{"!a:x"}) ||
		len(sum.children) != 1 || len(sum.ChildrenState) != 1 || sum.children[0].roomID != "!c:x" {
		t.Fatalf("sane: %+v", sum)
	}
	if saneRemoteRoom(HierarchyRoom{PublicRoom: PublicRoom{RoomID: "r:x"}}) != nil {
		t.Fatal("a bad room ID is kept")
	}
	if sum := saneRemoteRoom(HierarchyRoom{PublicRoom: PublicRoom{RoomID: "!r:x"}}); sum.JoinRule != "invite" || sum.ChildrenState == nil {
		t.Fatalf("defaults: %+v", sum)
	}
}

// TestHierarchyForServer: what another server is told about a space: the
// children it may see, the IDs of those it may not; 404 for a room it may
// not see and for unknown rooms.
func TestHierarchyForServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		const alice = "@alice:test"
		create := func(preset string, space bool) string {
			t.Helper()
			req := CreateRoomRequest{Preset: preset}
			if space {
				req.CreationContent = map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}
			}
			res, err := h.s.CreateRoom(ctx, alice, req)
			if err != nil {
				t.Fatal(err)
			}
			return res.RoomID
		}
		send := func(roomID, typ, key, content string) {
			t.Helper()
			if _, err := h.s.Send(ctx, Sender{alice, "D"}, SendRequest{RoomID: roomID, Type: typ, StateKey: &key, Content: json.RawMessage(content)}); err != nil {
				t.Fatal(err)
			}
		}
		space := create("public_chat", true)
		pub := create("public_chat", false)
		priv := create("private_chat", false)
		restricted := create("private_chat", false)
		send(restricted, "m.room.join_rules", "", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"`+space+`"}]}`)
		readable := create("private_chat", false)
		send(readable, "m.room.history_visibility", "", `{"history_visibility":"world_readable"}`)
		banned := create("public_chat", false)
		send(banned, "m.room.server_acl", "", `{"allow":["*"],"deny":["remote.test"]}`)
		for _, c := range []string{pub, priv, restricted, readable, banned, "!nowhere:test"} {
			send(space, "m.space.child", c, `{"via":["test"]}`)
		}
		send(space, "m.space.child", "!notsuggested:test", `{"via":["test"]}`)

		out, err := h.s.HierarchyForServer(ctx, space, "remote.test", false)
		if err != nil {
			t.Fatal(err)
		}
		var children []string
		for _, c := range out.Children {
			children = append(children, c.RoomID)
		}
		sort.Strings(children)
		wantChildren := []string{pub, readable}
		sort.Strings(wantChildren)
		wantHidden := []string{priv, restricted, banned}
		sort.Strings(wantHidden)
		sort.Strings(out.InaccessibleChildren)
		if out.Room.RoomID != space || len(out.Room.ChildrenState) != 7 || !reflect.DeepEqual(children, wantChildren) || !reflect.DeepEqual(out.InaccessibleChildren, wantHidden) {
			t.Fatalf("space for remote.test: room %s (%d children) children %v inaccessible %v", out.Room.RoomID, len(out.Room.ChildrenState), children, out.InaccessibleChildren)
		}
		if out, err := h.s.HierarchyForServer(ctx, space, "remote.test", true); err != nil || len(out.Room.ChildrenState) != 0 || len(out.Children) != 0 {
			t.Fatalf("suggested only: %+v %v", out, err)
		}
		_, err = h.s.HierarchyForServer(ctx, priv, "remote.test", false)
		wantCode(t, err, "M_NOT_FOUND")
		_, err = h.s.HierarchyForServer(ctx, banned, "remote.test", false)
		wantCode(t, err, "M_NOT_FOUND")
		_, err = h.s.HierarchyForServer(ctx, "!nowhere:test", "remote.test", false)
		wantCode(t, err, "M_NOT_FOUND")
		_, err = h.s.HierarchyForServer(ctx, "nope", "remote.test", false)
		wantCode(t, err, "M_INVALID_PARAM")
		// A server with a user in the room sees it.
		if _, err := h.s.HierarchyForServer(ctx, restricted, "test", false); err != nil {
			t.Fatalf("restricted room for a server with a member: %v", err)
		}
	})
}
