package syncapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
)

// TestKnockSection: a knock puts the room in rooms.knock with the room's
// stripped state and the knock last; an invite moves it to rooms.invite,
// and a knock turned away (a kick) to rooms.leave.
func TestKnockSection(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		name := "Knock here"
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "private_chat", RoomVersion: "10", Name: &name,
			InitialState: []roomserver.StateInit{{Type: "m.room.join_rules", Content: json.RawMessage(`{"join_rule":"knock"}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		room := res.RoomID
		w.settle()
		sync := func(user, since string) *syncapi.Response {
			t.Helper()
			r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: user, DeviceID: "D", Since: since, Opts: lazyOpts()})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		first := sync("@bob:test", "")
		if _, err := w.rooms.KnockVia(ctx, "@bob:test", room, nil, "let me in"); err != nil {
			t.Fatal(err)
		}
		w.settle()
		for _, since := range []string{"", first.NextBatch} {
			r := sync("@bob:test", since)
			kr := r.Rooms.Knock[room]
			if kr == nil {
				t.Fatalf("since %q: no knock section: %+v", since, r.Rooms)
			}
			evs := kr.KnockState.Events
			var types []string
			var last struct {
				Type     string         `json:"type"`
				StateKey string         `json:"state_key"`
				Content  map[string]any `json:"content"`
			}
			for _, e := range evs {
				_ = json.Unmarshal(e, &last)
				types = append(types, last.Type)
			}
			if len(evs) < 3 || types[0] != "m.room.create" || last.Type != "m.room.member" || last.StateKey != "@bob:test" ||
				last.Content["membership"] != "knock" || last.Content["reason"] != "let me in" {
				t.Fatalf("knock state: %s", evs)
			}
			hasName := false
			for _, ty := range types {
				hasName = hasName || ty == "m.room.name"
			}
			if !hasName {
				t.Fatalf("knock state without the room's name: %v", types)
			}
			if r.Rooms.Invite[room] != nil || r.Rooms.Join[room] != nil || r.Rooms.Leave[room] != nil {
				t.Fatalf("room in another section too: %+v", r.Rooms)
			}
		}
		// Knocking again with the same reason sends nothing new.
		knocked := sync("@bob:test", "")
		if _, err := w.rooms.KnockVia(ctx, "@bob:test", room, nil, "let me in"); err != nil {
			t.Fatal(err)
		}
		w.settle()
		if r := sync("@bob:test", knocked.NextBatch); r.Rooms.Knock[room] != nil {
			t.Fatalf("a repeated knock shows again: %+v", r.Rooms.Knock)
		}

		// Let in: the room moves to invite.
		if err := w.rooms.Invite(ctx, "@alice:test", room, "@bob:test", "", false); err != nil {
			t.Fatal(err)
		}
		w.settle()
		r := sync("@bob:test", knocked.NextBatch)
		if r.Rooms.Invite[room] == nil || r.Rooms.Knock[room] != nil {
			t.Fatalf("after the invite: %+v", r.Rooms)
		}
		if r := sync("@bob:test", ""); r.Rooms.Knock[room] != nil || r.Rooms.Invite[room] == nil {
			t.Fatalf("initial sync after the invite: %+v", r.Rooms)
		}

		// carol knocks and is turned away: the room moves to leave.
		if _, err := w.rooms.KnockVia(ctx, "@carol:test", room, nil, ""); err != nil {
			t.Fatal(err)
		}
		w.settle()
		ck := sync("@carol:test", "")
		if ck.Rooms.Knock[room] == nil {
			t.Fatalf("carol's knock: %+v", ck.Rooms)
		}
		if err := w.rooms.Kick(ctx, "@alice:test", room, "@carol:test", "no"); err != nil {
			t.Fatal(err)
		}
		w.settle()
		r = sync("@carol:test", ck.NextBatch)
		if r.Rooms.Leave[room] == nil || r.Rooms.Knock[room] != nil {
			t.Fatalf("after the refusal: %+v", r.Rooms)
		}
	})
}

// TestKnockRefused: the auth rules refuse a knock on a room whose join
// rule is not knock, and on a room version without knocking; an unknown
// room is 404.
func TestKnockRefused(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		pub, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		old, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "private_chat", RoomVersion: "6",
			InitialState: []roomserver.StateInit{{Type: "m.room.join_rules", Content: json.RawMessage(`{"join_rule":"knock"}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, room := range []string{pub.RoomID, old.RoomID} {
			_, err := w.rooms.KnockVia(ctx, "@bob:test", room, nil, "")
			if !merr.Is(err, "M_FORBIDDEN") {
				t.Fatalf("knock on %s: %v", room, err)
			}
		}
		if _, err := w.rooms.KnockVia(ctx, "@bob:test", "!nowhere:test", nil, ""); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("knock on an unknown room: %v", err)
		}
	})
}
