package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
)

func (w *world) send(t testing.TB, user, roomID, typ string, content any) string {
	t.Helper()
	js, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.rooms.Send(context.Background(), roomserver.Sender{UserID: user, DeviceID: "D"},
		roomserver.SendRequest{RoomID: roomID, Type: typ, Content: js, TxnID: fmt.Sprint(time.Now().UnixNano(), rand.Int())})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (w *world) say(t testing.TB, user, roomID, body string) string {
	t.Helper()
	return w.send(t, user, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func (w *world) room(t testing.TB, creator string, members ...string) string {
	t.Helper()
	ctx := context.Background()
	res, err := w.rooms.CreateRoom(ctx, creator, roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if _, err := w.rooms.Join(ctx, m, res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
	}
	return res.RoomID
}

type searchHit struct {
	Rank   float64 `json:"rank"`
	Result struct {
		EventID string `json:"event_id"`
		RoomID  string `json:"room_id"`
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	} `json:"result"`
	Context *struct {
		EventsBefore []json.RawMessage `json:"events_before"`
		EventsAfter  []json.RawMessage `json:"events_after"`
		ProfileInfo  map[string]struct {
			DisplayName string `json:"displayname"`
		} `json:"profile_info"`
	} `json:"context"`
}

func search(t *testing.T, w *world, req syncapi.SearchRequest) ([]searchHit, *syncapi.RoomEventsResults) {
	t.Helper()
	w.settle()
	resp, err := w.sync.Search(context.Background(), req)
	if err != nil {
		t.Fatalf("search %q: %v", req.Term, err)
	}
	out := &resp.SearchCategories.RoomEvents
	js, _ := json.Marshal(out.Results)
	var hits []searchHit
	if err := json.Unmarshal(js, &hits); err != nil {
		t.Fatal(err)
	}
	return hits, out
}

func hitBodies(hits []searchHit) []string {
	var out []string
	for _, h := range hits {
		out = append(out, h.Result.Content.Body)
	}
	return out
}

func TestSearch(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test")
		other := w.room(t, "@carol:test")
		w.say(t, "@alice:test", room, "the deployment failed tonight")
		w.say(t, "@bob:test", room, "unrelated chatter")
		w.say(t, "@alice:test", room, "deploy deploy deploy again")
		secret := w.say(t, "@carol:test", other, "a deploy in carol's room")
		w.say(t, "@bob:test", room, "Café meeting about the DEPLOY")

		// Words are matched as prefixes, case-insensitively, only in the user's rooms.
		hits, out := search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "deploy", OrderBy: "recent"})
		want := []string{"Café meeting about the DEPLOY", "deploy deploy deploy again", "the deployment failed tonight"}
		if got := hitBodies(hits); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("recent: got %q want %q", got, want)
		}
		if out.Count != 3 || len(out.Highlights) != 1 || out.Highlights[0] != "deploy" || out.NextBatch != "" {
			t.Fatalf("count %d highlights %v next %q", out.Count, out.Highlights, out.NextBatch)
		}
		for _, h := range hits {
			if h.Result.EventID == secret {
				t.Fatal("found an event of a room bob is not in")
			}
		}
		// Rank: the message with the word three times comes first.
		hits, _ = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "deploy"})
		if len(hits) != 3 || hits[0].Result.Content.Body != "deploy deploy deploy again" || hits[0].Rank < hits[2].Rank {
			t.Fatalf("rank: %+v", hits)
		}
		// Several words must all occur; diacritics and case do not matter on SQLite.
		hits, _ = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "meeting DEPLOY"})
		if len(hits) != 1 {
			t.Fatalf("two words: %q", hitBodies(hits))
		}
		// Pagination, both orders: pages of one until the end.
		for _, order := range []string{"recent", "rank"} {
			var seen []string
			next := ""
			for i := 0; i < 5; i++ {
				hits, out := search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "deploy", OrderBy: order, Limit: 1, NextBatch: next})
				seen = append(seen, hitBodies(hits)...)
				if next = out.NextBatch; next == "" {
					break
				}
			}
			if len(seen) != 3 || seen[0] == seen[1] || seen[1] == seen[2] || seen[0] == seen[2] {
				t.Fatalf("%s pages: %q", order, seen)
			}
		}
		// Context and profiles.
		hits, _ = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "again", Context: &syncapi.SearchContext{Before: 2, After: 2, IncludeProfile: true}})
		if len(hits) != 1 || hits[0].Context == nil || len(hits[0].Context.EventsBefore) != 2 || len(hits[0].Context.EventsAfter) != 1 {
			t.Fatalf("context: %+v", hits)
		}
		if _, ok := hits[0].Context.ProfileInfo["@alice:test"]; !ok {
			t.Fatalf("profile_info: %+v", hits[0].Context.ProfileInfo)
		}
		// The filter narrows rooms and senders; groupings group.
		hits, out = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "deploy", NotRooms: []string{room}})
		if len(hits) != 0 {
			t.Fatalf("not_rooms: %q", hitBodies(hits))
		}
		hits, out = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "deploy", GroupBy: []string{"room_id", "sender"},
			Match: func(typ, sender string, hasURL bool) bool { return sender == "@alice:test" }})
		if len(hits) != 2 || len(out.Groups["room_id"][room].Results) != 2 || len(out.Groups["sender"]["@alice:test"].Results) != 2 {
			t.Fatalf("filter+groups: %q %+v", hitBodies(hits), out.Groups)
		}
		// Room names and topics are searchable by key.
		if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test"}, roomserver.SendRequest{RoomID: room, Type: "m.room.topic", StateKey: ptr(""),
			Content: json.RawMessage(`{"topic":"release planning"}`)}); err != nil {
			t.Fatal(err)
		}
		hits, _ = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "planning", Keys: []string{"content.topic"}})
		if len(hits) != 1 {
			t.Fatalf("topic: %+v", hits)
		}
		hits, _ = search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: "planning", Keys: []string{"content.body"}})
		if len(hits) != 0 {
			t.Fatalf("topic found as a body: %+v", hits)
		}
		// A redacted message is no longer found.
		if _, err := w.rooms.Redact(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, room, hitsFor(t, w, "@bob:test", "tonight")[0].Result.EventID, "", "r1"); err != nil {
			t.Fatal(err)
		}
		if hits := hitsFor(t, w, "@bob:test", "tonight"); len(hits) != 0 {
			t.Fatalf("redacted message still found: %+v", hits)
		}
		// Bad requests.
		for _, req := range []syncapi.SearchRequest{
			{UserID: "@bob:test", Term: "x", Keys: []string{"content.url"}},
			{UserID: "@bob:test", Term: "x", OrderBy: "oldest"},
			{UserID: "@bob:test", Term: "x", NextBatch: "zzz"},
			{UserID: "@bob:test", Term: "x", OrderBy: "recent", NextBatch: "o5"},
			{UserID: "@bob:test", Term: "x", GroupBy: []string{"type"}},
		} {
			if _, err := w.sync.Search(ctx, req); !merr.Is(err, "M_INVALID_PARAM") {
				t.Errorf("%+v: want M_INVALID_PARAM, got %v", req, err)
			}
		}
		// Operators in the term are only words.
		if hits, _ := search(t, w, syncapi.SearchRequest{UserID: "@bob:test", Term: `"deploy" OR NEAR(* :* & | !`}); len(hits) != 0 {
			t.Fatalf("operators: %q", hitBodies(hits))
		}
	})
}

func hitsFor(t *testing.T, w *world, user, term string) []searchHit {
	t.Helper()
	hits, _ := search(t, w, syncapi.SearchRequest{UserID: user, Term: term})
	return hits
}

// TestSearchVisibility: a user finds what they could see, in the period
// they were in the room: not before they joined (history_visibility
// joined), not after they left.
func TestSearchVisibility(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test")
		if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test"}, roomserver.SendRequest{RoomID: room, Type: "m.room.history_visibility", StateKey: ptr(""),
			Content: json.RawMessage(`{"history_visibility":"joined"}`)}); err != nil {
			t.Fatal(err)
		}
		w.say(t, "@alice:test", room, "zebra before")
		if _, err := w.rooms.Join(ctx, "@bob:test", room, ""); err != nil {
			t.Fatal(err)
		}
		w.say(t, "@alice:test", room, "zebra during")
		if err := w.rooms.Leave(ctx, "@bob:test", room, ""); err != nil {
			t.Fatal(err)
		}
		w.say(t, "@alice:test", room, "zebra after")
		if got := hitBodies(hitsFor(t, w, "@bob:test", "zebra")); len(got) != 1 || got[0] != "zebra during" {
			t.Fatalf("bob sees %q", got)
		}
		if got := hitBodies(hitsFor(t, w, "@alice:test", "zebra")); len(got) != 3 {
			t.Fatalf("alice sees %q", got)
		}
		if got := hitsFor(t, w, "@mallory:test", "zebra"); len(got) != 0 {
			t.Fatalf("a stranger sees %+v", got)
		}
		// A forgotten room is not searched any more.
		if err := w.rooms.Forget(ctx, "@bob:test", room); err != nil {
			t.Fatal(err)
		}
		if got := hitsFor(t, w, "@bob:test", "zebra"); len(got) != 0 {
			t.Fatalf("bob sees %+v in the room he forgot", got)
		}
	})
}

func TestUserDirectory(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		for u, name := range map[string]string{"@alice:test": "Alice Liddell", "@bob:test": "Bob Builder", "@carol:test": "Carol Adams", "@dave:test": "Dave Bowman"} {
			local := strings.TrimPrefix(strings.TrimSuffix(u, ":test"), "@")
			if _, err := w.users.CreateAccount(ctx, local, "password-"+local, false, "test"); err != nil {
				t.Fatal(err)
			}
			if err := w.users.SetDisplayName(ctx, u, name); err != nil {
				t.Fatal(err)
			}
		}
		// alice and bob share a private room; carol is in a public room; dave shares nothing.
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "private_chat", Invite: []string{"@bob:test"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		w.room(t, "@carol:test")
		if _, err := w.rooms.CreateRoom(ctx, "@dave:test", roomserver.CreateRoomRequest{Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}
		w.settle()
		find := func(term string, limit int) ([]string, bool) {
			t.Helper()
			r, err := w.sync.UserDirectory(ctx, "@alice:test", term, limit)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, u := range r.Results {
				ids = append(ids, u.UserID)
			}
			return ids, r.Limited
		}
		for _, c := range []struct {
			term string
			want string
		}{
			{"bob", "@bob:test"},
			{"build", "@bob:test"}, // a later word of the display name
			{"CAR", "@carol:test"}, // a public room's member
			{"dave", ""},           // shares no room, in no public room
			{"bowman", ""},
			{"b b", "@bob:test"},
			{"%", ""},
			{"_", ""},
		} {
			got, _ := find(c.term, 10)
			if strings.Join(got, ",") != c.want {
				t.Errorf("%q: got %v want %q", c.term, got, c.want)
			}
		}
		got, limited := find("a", 1) // alice, and carol (Adams)
		if len(got) != 1 || !limited {
			t.Fatalf("limit: %v %v", got, limited)
		}
		if got, limited := find("a", 10); len(got) != 2 || limited {
			t.Fatalf("no limit: %v %v", got, limited)
		}
	})
}

// TestUserDirectoryNonASCII: display names are matched case-insensitively
// beyond ASCII on both databases (SQLite's LOWER and LIKE fold ASCII only).
func TestUserDirectoryNonASCII(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		for u, name := range map[string]string{"@alice:test": "Alice", "@bob:test": "Élodie Ørsted"} {
			local := strings.TrimPrefix(strings.TrimSuffix(u, ":test"), "@")
			if _, err := w.users.CreateAccount(ctx, local, "password-"+local, false, "test"); err != nil {
				t.Fatal(err)
			}
			if err := w.users.SetDisplayName(ctx, u, name); err != nil {
				t.Fatal(err)
			}
		}
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "private_chat", Invite: []string{"@bob:test"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		w.settle()
		for _, term := range []string{"élodie", "ÉLODIE", "Élo", "ørsted", "ØRSTED", "élodie ørs"} {
			r, err := w.sync.UserDirectory(ctx, "@alice:test", term, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Results) != 1 || r.Results[0].UserID != "@bob:test" {
				t.Errorf("%q: got %+v, want @bob:test", term, r.Results)
			}
		}
	})
}
