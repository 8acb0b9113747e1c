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

// peekSync is a /sync (timeout 0) whose rooms.peek section (which
// mautrix does not know) is decoded too.
type peekSync struct {
	*mautrix.RespSync
	Peek map[id.RoomID]*mautrix.SyncJoinedRoom
}

func (s *server) peekSync(t *testing.T, cli *mautrix.Client, since string) (peekSync, string) {
	t.Helper()
	q := url.Values{"timeout": {"0"}}
	if since != "" {
		q.Set("since", since)
	}
	r, raw := s.rawSync(t, cli, q)
	out := peekSync{RespSync: r}
	if rooms, ok := raw["rooms"].(map[string]any); ok && rooms["peek"] != nil {
		b, _ := json.Marshal(rooms["peek"])
		if err := json.Unmarshal(b, &out.Peek); err != nil {
			t.Fatal(err)
		}
	}
	return out, r.NextBatch
}

func peeked(r peekSync, room id.RoomID) (tl []*event.Event, state []*event.Event, ok bool) {
	jr := r.Peek[room]
	if jr == nil {
		return nil, nil, false
	}
	return jr.Timeline.Events, jr.State.Events, true
}

// TestPeeking: a device peeks into a world-readable room (by ID or alias)
// and follows it in /sync under rooms.peek, without joining: the room whole
// in the first response, then only what is new; other devices of the same
// user do not see it; rooms whose history is not world-readable cannot be
// peeked into; unpeeking and joining end the peek. Users who never joined
// read a world-readable room's state and history.
func TestPeeking(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		owner, viewer := s.register(t, "owner"), s.register(t, "viewer")
		room := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "peekable"})
		if _, err := owner.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}); err != nil {
			t.Fatal(err)
		}
		other := s.login(t, "viewer") // a second device of viewer
		_, since := s.peekSync(t, viewer, "")
		_, otherSince := s.peekSync(t, other, "")

		r := s.do(t, "POST", "/_matrix/client/r0/peek/"+p(room), viewer.AccessToken, map[string]any{}).expect(t, 200)
		if r.str("room_id") != room.String() {
			t.Fatalf("peek answered %s", r)
		}
		sendText(t, owner, room, "something to peek")
		resp, since := s.peekSync(t, viewer, since)
		tl, state, ok := peeked(resp, room)
		if !ok || len(resp.Rooms.Join) != 0 {
			t.Fatalf("first sync after the peek: peek %v, join %v", ok, resp.Rooms.Join)
		}
		if len(tl) == 0 || tl[0].Type.Type != "m.room.create" || tl[len(tl)-1].Content.Raw["body"] != "something to peek" || len(state) != 0 {
			t.Fatalf("the peeked room is not whole in its timeline: %v (state %d)", eventIDs(tl), len(state))
		}
		if resp, _ := s.peekSync(t, viewer, since); resp.Peek[room] != nil {
			t.Fatalf("an unchanged peeked room came again")
		}
		sendText(t, owner, room, "something else")
		resp, since = s.peekSync(t, viewer, since)
		if tl, _, ok := peeked(resp, room); !ok || len(tl) != 1 || tl[0].Content.Raw["body"] != "something else" {
			t.Fatalf("the new message in the peeked room: %v", eventIDs(tl))
		}
		// The other device does not peek.
		if resp, _ := s.peekSync(t, other, otherSince); len(resp.Peek) != 0 {
			t.Fatalf("another device of the user sees the peek")
		}
		// A waiting sync of the peeker wakes for the room's messages.
		waitSync(t, viewer, since, func() { sendText(t, owner, room, "wake the peeker") })

		// Non-members read a world-readable room.
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/state", viewer.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=5", viewer.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/rooms/"+p(room)+"/initialSync", viewer.AccessToken, nil).expect(t, 200)

		// Unpeek: nothing more of the room.
		s.do(t, "POST", "/_matrix/client/r0/unpeek/"+p(room), viewer.AccessToken, map[string]any{}).expect(t, 200)
		_, since = s.peekSync(t, viewer, since)
		sendText(t, owner, room, "after the unpeek")
		if resp, _ := s.peekSync(t, viewer, since); resp.Peek[room] != nil {
			t.Fatalf("the room came after the unpeek")
		}

		// By alias; joining moves the room to join, leaving does not bring
		// the peek back.
		s.do(t, "POST", v3+"/peek/"+p("#peekable:localhost"), viewer.AccessToken, map[string]any{}).expect(t, 200)
		if resp, _ := s.peekSync(t, viewer, since); resp.Peek[room] == nil {
			t.Fatalf("peek by alias: the room is not in rooms.peek")
		}
		join(t, viewer, room.String())
		resp, since = s.peekSync(t, viewer, since)
		if resp.Rooms.Join[room] == nil || resp.Peek[room] != nil {
			t.Fatalf("after joining: join %v peek %v", resp.Rooms.Join[room] != nil, resp.Peek[room] != nil)
		}
		if _, err := viewer.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		sendText(t, owner, room, "after the leave")
		if resp, _ := s.peekSync(t, viewer, since); resp.Peek[room] != nil {
			t.Fatalf("leaving a room joined after a peek brought the peek back")
		}

		// Rooms whose history is not world-readable cannot be peeked into.
		for _, vis := range []string{"shared", "invited", "joined"} {
			closed := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := owner.SendStateEvent(ctx, closed, event.StateHistoryVisibility, "", map[string]any{"history_visibility": vis}); err != nil {
				t.Fatal(err)
			}
			s.do(t, "POST", "/_matrix/client/r0/peek/"+p(closed), viewer.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		}
	})
}
