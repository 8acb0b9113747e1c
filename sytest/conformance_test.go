package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestForgottenRoomAndParams: a room the user left and forgot cannot be
// read any more (403, whatever the parameters), a rejoin un-forgets it; a
// member's /messages without dir, or with another value, is 400
// M_INVALID_PARAM; /forget while joined is 400 M_UNKNOWN; deleting a device
// without a body is the UIA 401, and deleting an unknown device succeeds.
func TestForgottenRoomAndParams(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		msg := sendText(t, alice, room, "before bob leaves")
		rid := p(room)

		s.do(t, "GET", v3+"/rooms/"+rid+"/messages", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/rooms/"+rid+"/messages?dir=x", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/rooms/"+rid+"/forget", bob.AccessToken, map[string]any{}).expectErr(t, 400, "M_UNKNOWN")

		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		// Left but not forgotten: history up to the leave is readable.
		s.do(t, "GET", v3+"/rooms/"+rid+"/messages?dir=b", bob.AccessToken, nil).expect(t, 200)
		s.do(t, "POST", v3+"/rooms/"+rid+"/forget", bob.AccessToken, map[string]any{}).expect(t, 200)
		for _, path := range []string{"/messages", "/messages?dir=b", "/state", "/members", "/state/m.room.create/"} {
			s.do(t, "GET", v3+"/rooms/"+rid+path, bob.AccessToken, nil).wantErr(t, 403, "M_FORBIDDEN")
		}
		s.do(t, "GET", v3+"/rooms/"+rid+"/event/"+p(msg), bob.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/rooms/"+rid+"/context/"+p(msg), bob.AccessToken, nil).wantErr(t, 404, "M_NOT_FOUND")

		// Re-invited, bob joins again: the room is his again, and leaving
		// it once more shows it among his left rooms.
		invite(t, alice, room, bob.UserID)
		join(t, bob, room.String())
		if got := bodies(allMessages(t, bob, room)); len(got) == 0 || got[len(got)-1] != "before bob leaves" {
			t.Errorf("messages after rejoining: %v", got)
		}
		_, since := syncNow(t, bob, "")
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, since, "the room among the left ones", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room] != nil })

		// Device deletion.
		phone := s.login(t, "bob")
		r := s.do(t, "DELETE", v3+"/devices/"+p(phone.DeviceID), bob.AccessToken, nil).expect(t, 401)
		if r.str("session") == "" || r.JSON["flows"] == nil {
			t.Errorf("no UIA challenge: %s", r)
		}
		s.do(t, "DELETE", v3+"/devices/"+p(phone.DeviceID), "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "DELETE", v3+"/devices/NOSUCHDEVICE", bob.AccessToken, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "password-bob"}}).expect(t, 200)
	})
}

// TestSearchNextBatch: a full page of /search results always carries
// next_batch, passing it returns the next page, and the page after the last
// result is empty without one — for order_by recent and rank.
func TestSearchNextBatch(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		var ids []string
		for i := 0; i < 20; i++ {
			ids = append(ids, sendText(t, alice, room, fmt.Sprintf("Message number %d", i)).String())
		}
		for _, order := range []string{"recent", "rank"} {
			body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
				"keys": []string{"content.body"}, "search_term": "Message", "order_by": order,
				"filter": map[string]any{"limit": 10, "rooms": []string{room.String()}}}}}
			seen := map[string]bool{}
			next := ""
			for page := 0; page < 3; page++ {
				path := v3 + "/search"
				if next != "" {
					path += "?next_batch=" + url.QueryEscape(next)
				}
				r := s.do(t, "POST", path, alice.AccessToken, body).expect(t, 200)
				var out struct {
					SearchCategories struct {
						RoomEvents struct {
							Count   int     `json:"count"`
							Next    *string `json:"next_batch"`
							Results []struct {
								Result struct {
									EventID string `json:"event_id"`
								} `json:"result"`
							} `json:"results"`
						} `json:"room_events"`
					} `json:"search_categories"`
				}
				if err := json.Unmarshal(r.Raw, &out); err != nil {
					t.Fatal(err)
				}
				re := out.SearchCategories.RoomEvents
				if re.Count != 20 {
					t.Errorf("%s page %d: count %d", order, page, re.Count)
				}
				var got []string
				for _, res := range re.Results {
					got = append(got, res.Result.EventID)
					if seen[res.Result.EventID] {
						t.Errorf("%s page %d: %s seen twice", order, page, res.Result.EventID)
					}
					seen[res.Result.EventID] = true
				}
				switch page {
				case 0, 1:
					if len(got) != 10 || re.Next == nil || *re.Next == "" {
						t.Fatalf("%s page %d: %d results, next_batch %v: %s", order, page, len(got), re.Next, r)
					}
					if order == "recent" && (got[0] != ids[19-10*page] || got[9] != ids[10-10*page]) {
						t.Errorf("recent page %d: %v", page, got)
					}
					next = *re.Next
				case 2:
					if len(got) != 0 || re.Next != nil {
						t.Errorf("%s page after the last: %s", order, r)
					}
				}
			}
			if len(seen) != 20 {
				t.Errorf("%s: %d distinct results over the pages", order, len(seen))
			}
		}
	})
}
