package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestSortChildren(t *testing.T) {
	cs := []child{
		{roomID: "!d", ts: 1},
		{roomID: "!c", order: "b", ts: 9},
		{roomID: "!b", order: "a", ts: 5},
		{roomID: "!a", ts: 1},
		{roomID: "!e", ts: 0},
		{roomID: "!f", order: "a", ts: 2},
	}
	sortChildren(cs)
	var got []string
	for _, c := range cs {
		got = append(got, c.roomID)
	}
	want := []string{"!f", "!b", "!c", "!e", "!a", "!d"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestParseChild(t *testing.T) {
	for _, tc := range []struct {
		key, content string
		ok           bool
		order        string
		suggested    bool
	}{
		{"!r:x", `{"via":["x"]}`, true, "", false},
		{"!r:x", `{"via":["x"],"order":"abc","suggested":true}`, true, "abc", true},
		{"!r:x", `{"via":["x"],"order":"\u00e9"}`, true, "", false},
		{"!r:x", `{"via":["x"],"order":"012345678901234567890123456789012345678901234567890"}`, true, "", false},
		{"!r:x", `{"via":["x"],"order":5,"suggested":"yes"}`, true, "", false},
		{"!r:x", `{}`, false, "", false},
		{"!r:x", `{"via":[]}`, false, "", false},
		{"!r:x", `{"via":"x"}`, false, "", false},
		{"#alias:x", `{"via":["x"]}`, false, "", false},
	} {
		c, ok := parseChild(tc.key, "@a:x", 1, json.RawMessage(tc.content))
		if ok != tc.ok || c.order != tc.order || c.suggested != tc.suggested {
			t.Errorf("parseChild(%s, %s) = %+v %v", tc.key, tc.content, c, ok)
		}
	}
}

func roomIDs(resp *HierarchyResponse) []string {
	var out []string
	for _, r := range resp.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func TestHierarchy(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		const alice, bob = "@alice:test", "@bob:test"
		create := func(preset, name string, space bool) string {
			t.Helper()
			req := CreateRoomRequest{Preset: preset, Name: &name}
			if space {
				req.CreationContent = map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}
			}
			res, err := h.s.CreateRoom(ctx, alice, req)
			if err != nil {
				t.Fatal(err)
			}
			return res.RoomID
		}
		addChild := func(parent, child, content string) {
			t.Helper()
			key := child
			if _, err := h.s.Send(ctx, Sender{alice, "D"}, SendRequest{RoomID: parent, Type: "m.space.child", StateKey: &key, Content: json.RawMessage(content)}); err != nil {
				t.Fatal(err)
			}
		}
		space := create("public_chat", "Space", true)
		a := create("public_chat", "A", false)
		b := create("private_chat", "B", false)
		sub := create("public_chat", "Sub", true)
		c := create("public_chat", "C", false)
		addChild(space, a, `{"via":["test"],"order":"b","suggested":true}`)
		addChild(space, b, `{"via":["test"],"order":"a"}`)
		addChild(space, sub, `{"via":["test"],"suggested":true}`)
		addChild(space, "!nowhere:test", `{"via":["test"]}`)
		addChild(space, "!removed:test", `{}`)
		addChild(sub, c, `{"via":["test"]}`)
		// A child that points back up does not loop.
		addChild(sub, space, `{"via":["test"]}`)

		get := func(user string, req HierarchyRequest) *HierarchyResponse {
			t.Helper()
			req.UserID = user
			if req.RoomID == "" {
				req.RoomID = space
			}
			if req.MaxDepth == 0 {
				req.MaxDepth = -1
			}
			resp, err := h.s.Hierarchy(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		if got, want := roomIDs(get(alice, HierarchyRequest{})), []string{space, b, a, sub, c}; !reflect.DeepEqual(got, want) {
			t.Fatalf("alice sees %v, want %v", got, want)
		}
		// bob is in none of them: he sees the public rooms, not B.
		resp := get(bob, HierarchyRequest{})
		if got, want := roomIDs(resp), []string{space, a, sub, c}; !reflect.DeepEqual(got, want) {
			t.Fatalf("bob sees %v, want %v", got, want)
		}
		root := resp.Rooms[0]
		if root.Name != "Space" || root.RoomType != "m.space" || root.JoinRule != "public" || root.NumJoinedMembers != 1 || len(root.ChildrenState) != 4 {
			t.Fatalf("root summary %+v", root)
		}
		for _, cs := range root.ChildrenState {
			if cs.Type != "m.space.child" || cs.Sender != alice || cs.OriginServerTS == 0 || cs.StateKey == "!removed:test" {
				t.Fatalf("child state %+v", cs)
			}
		}
		if len(resp.Rooms[1].ChildrenState) != 0 || resp.Rooms[1].ChildrenState == nil {
			t.Fatalf("a plain room's children_state: %#v", resp.Rooms[1].ChildrenState)
		}
		if got := roomIDs(get(alice, HierarchyRequest{SuggestedOnly: true})); !reflect.DeepEqual(got, []string{space, a, sub}) {
			t.Fatalf("suggested only: %v", got)
		}
		// max_depth 0: the root alone; 1: no grandchildren.
		resp, err := h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: alice, MaxDepth: 0})
		if err != nil || !reflect.DeepEqual(roomIDs(resp), []string{space}) {
			t.Fatalf("max_depth 0: %v %v", roomIDs(resp), err)
		}
		if got := roomIDs(get(alice, HierarchyRequest{MaxDepth: 1})); !reflect.DeepEqual(got, []string{space, b, a, sub}) {
			t.Fatalf("max_depth 1: %v", got)
		}
		// Pages of two.
		var all []string
		from := ""
		for i := 0; i < 5; i++ {
			page := get(alice, HierarchyRequest{Limit: 2, From: from})
			all = append(all, roomIDs(page)...)
			from = page.NextBatch
			if from == "" {
				break
			}
		}
		if !reflect.DeepEqual(all, []string{space, b, a, sub, c}) {
			t.Fatalf("paged: %v", all)
		}
		page := get(alice, HierarchyRequest{Limit: 2})
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: alice, MaxDepth: 1, Limit: 2, From: page.NextBatch})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: alice, MaxDepth: -1, From: "garbage"})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: sub, UserID: alice, MaxDepth: -1, From: page.NextBatch})
		wantCode(t, err, "M_INVALID_PARAM")
		// Rooms one may not see, and unknown rooms, are refused alike.
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: b, UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "!nowhere:test", UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "nope", UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.Hierarchy(ctx, HierarchyRequest{RoomID: "!a\x00:test", UserID: bob, MaxDepth: -1})
		wantCode(t, err, "M_INVALID_PARAM")
		// A room restricted to the space's members is visible to them, with the rooms that allow joining.
		r := create("private_chat", "Members only", false)
		key := ""
		if _, err := h.s.Send(ctx, Sender{alice, "D"}, SendRequest{RoomID: r, Type: "m.room.join_rules", StateKey: &key,
			Content: json.RawMessage(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"` + space + `"}]}`)}); err != nil {
			t.Fatal(err)
		}
		addChild(sub, r, `{"via":["test"]}`)
		if got := roomIDs(get(bob, HierarchyRequest{RoomID: sub, MaxDepth: 1})); !sameRooms(got, []string{sub, c, space}) {
			t.Fatalf("bob outside the space sees %v", got)
		}
		if _, err := h.s.Join(ctx, bob, space, ""); err != nil {
			t.Fatal(err)
		}
		resp = get(bob, HierarchyRequest{RoomID: sub, MaxDepth: 1})
		if got := roomIDs(resp); !sameRooms(got, []string{sub, c, space, r}) {
			t.Fatalf("bob in the space sees %v", got)
		}
		if last := resp.Rooms[3]; last.JoinRule != "restricted" || !reflect.DeepEqual(last.AllowedRoomIDs, []string{space}) {
			t.Fatalf("restricted room entry %+v", last)
		}
		// Invited: B becomes visible to bob.
		if err := h.s.Invite(ctx, alice, b, bob, "", false); err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(get(bob, HierarchyRequest{})); !reflect.DeepEqual(got, []string{space, b, a, sub, c, r}) {
			t.Fatalf("bob invited sees %v", got)
		}
	})
}

// TestHierarchyVisitBound: a space with more children than
// maxHierarchyVisits costs at most that many room look-ups per request
// (children are looked at when the walk reaches them, not all at once).
func TestHierarchyVisitBound(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		const alice = "@alice:test"
		old := maxHierarchyVisits
		maxHierarchyVisits = 10
		t.Cleanup(func() { maxHierarchyVisits = old })
		name := "Space"
		res, err := h.s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", Name: &name,
			CreationContent: map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}})
		if err != nil {
			t.Fatal(err)
		}
		space := res.RoomID
		for i := 0; i < 30; i++ {
			key := fmt.Sprintf("!unknown%02d:test", i)
			if _, err := h.s.Send(ctx, Sender{alice, "D"}, SendRequest{RoomID: space, Type: "m.space.child", StateKey: &key,
				Content: json.RawMessage(`{"via":["test"]}`)}); err != nil {
				t.Fatal(err)
			}
		}
		resp, looked, err := h.s.hierarchy(ctx, HierarchyRequest{RoomID: space, UserID: alice, MaxDepth: -1})
		if err != nil {
			t.Fatal(err)
		}
		if looked > maxHierarchyVisits {
			t.Errorf("looked at %d rooms, the bound is %d", looked, maxHierarchyVisits)
		}
		if got := roomIDs(resp); !reflect.DeepEqual(got, []string{space}) || len(resp.Rooms[0].ChildrenState) != 30 {
			t.Fatalf("rooms %v, %d children", got, len(resp.Rooms[0].ChildrenState))
		}
	})
}

// sameRooms compares a hierarchy's rooms: the root first, then its children
// in any order (children sent in the same millisecond tie on their
// timestamps and are ordered by their random room IDs).
func sameRooms(got, want []string) bool {
	if len(got) != len(want) || len(got) == 0 || got[0] != want[0] {
		return false
	}
	g, w := slices.Clone(got[1:]), slices.Clone(want[1:])
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}
