package sytest

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestSearchMessages: messages sent through the API are found by /search
// with their context, newest first with order_by recent, page by page; a
// user outside the room finds nothing; bad requests get Matrix errors.
func TestSearchMessages(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		eve := s.register(t, "eve")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		sendText(t, alice, room, "good morning")
		first := sendText(t, alice, room, "the quarterly report is ready")
		sendText(t, bob, room, "thanks!")
		second := sendText(t, bob, room, "I will read the REPORT tonight")
		sendText(t, alice, room, "good night")

		resp, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "report", OrderBy: "recent",
			EventContext: mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 1, IncludeProfile: true}})
		if err != nil {
			t.Fatalf("search: %v", err)
		}
		if resp == nil || resp.Count != 2 || len(resp.Results) != 2 || resp.Results[0].Event.ID != second || resp.Results[1].Event.ID != first {
			t.Fatalf("search results: %+v", resp)
		}
		c := resp.Results[0].Context
		if c == nil || len(c.EventsBefore) != 1 || len(c.EventsAfter) != 1 || c.EventsAfter[0].Content.Raw["body"] != "good night" {
			t.Fatalf("search context: %+v", c)
		}
		// Pages of one.
		page, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "report", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 1}})
		if err != nil || len(page.Results) != 1 || page.NextBatch == "" || page.Results[0].Event.ID != second {
			t.Fatalf("first page: %+v %v", page, err)
		}
		page, err = bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "report", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 1}, NextBatch: page.NextBatch})
		if err != nil || len(page.Results) != 1 || page.Results[0].Event.ID != first {
			t.Fatalf("second page: %+v %v", page, err)
		}
		// Someone outside the room finds nothing.
		if r, err := eve.Search(ctx, &mautrix.ReqSearch{SearchTerm: "report"}); err != nil || r == nil || len(r.Results) != 0 {
			t.Fatalf("eve's search: %+v %v", r, err)
		}
		// A redacted message disappears from the results.
		if _, err := bob.RedactEvent(ctx, room, second); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the redacted message gone from search", func() bool {
			r, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "report"})
			return err == nil && r != nil && len(r.Results) == 1 && r.Results[0].Event.ID == first
		})
		// Errors.
		s.do(t, "POST", v3+"/search", bob.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/search", bob.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "best"}}}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/search?next_batch=nonsense", bob.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/search", bob.AccessToken, `{"search_categories":`).expectErr(t, 400, "M_NOT_JSON")
		s.do(t, "POST", v3+"/search", bob.AccessToken, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}}).expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "POST", v3+"/search", "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")
		// No room_events category: an empty answer.
		s.do(t, "POST", v3+"/search", bob.AccessToken, map[string]any{"search_categories": map[string]any{}}).expect(t, 200)
	})
}

// TestSearchUserDirectory: users who share a room, and members of public
// rooms, are found by name; others are not.
func TestSearchUserDirectory(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		dave := s.register(t, "dave")
		for cli, name := range map[*mautrix.Client]string{bob: "Bob Marley", carol: "Carol King", dave: "Dave Brubeck"} {
			if err := cli.SetDisplayName(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		createRoom(t, carol, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Open"})
		createRoom(t, dave, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		for term, want := range map[string]id.UserID{"marl": bob.UserID, "bob": bob.UserID, "king": carol.UserID, "dave": "", "brubeck": ""} {
			r, err := alice.SearchUserDirectory(ctx, term, 10)
			if err != nil {
				t.Fatalf("user directory %q: %v", term, err)
			}
			if want == "" && len(r.Results) != 0 || want != "" && (len(r.Results) != 1 || r.Results[0].UserID != want) {
				t.Errorf("user directory %q: %+v", term, r.Results)
			}
		}
		s.do(t, "POST", v3+"/user_directory/search", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/user_directory/search", alice.AccessToken, map[string]any{"search_term": "a", "limit": -1}).expectErr(t, 400, "M_INVALID_PARAM")
	})
}

// TestSearchPublicRoomsFilter: /publicRooms filters by a search term and
// room types, and pages with next_batch.
func TestSearchPublicRoomsFilter(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Engineering", Topic: "builds and deploys"})
		createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Random"})
		space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Company space",
			CreationContent: map[string]any{"type": "m.space"}})
		r, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil || len(r.Chunk) != 3 || r.TotalRoomCountEstimate != 3 {
			t.Fatalf("all: %+v %v", r, err)
		}
		resp := s.do(t, "POST", v3+"/publicRooms", alice.AccessToken, map[string]any{"filter": map[string]any{"generic_search_term": "DEPLOY"}}).expect(t, 200)
		if chunk, _ := resp.JSON["chunk"].([]any); len(chunk) != 1 {
			t.Fatalf("search term: %s", resp)
		}
		resp = s.do(t, "POST", v3+"/publicRooms", alice.AccessToken, map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}).expect(t, 200)
		if chunk, _ := resp.JSON["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["room_id"] != space.String() {
			t.Fatalf("room_types m.space: %s", resp)
		}
		resp = s.do(t, "POST", v3+"/publicRooms", alice.AccessToken, map[string]any{"filter": map[string]any{"room_types": []any{nil}}}).expect(t, 200)
		if chunk, _ := resp.JSON["chunk"].([]any); len(chunk) != 2 {
			t.Fatalf("room_types null: %s", resp)
		}
		page := s.do(t, "GET", v3+"/publicRooms?limit=2", "", nil).expect(t, 200)
		next := page.str("next_batch")
		if chunk, _ := page.JSON["chunk"].([]any); len(chunk) != 2 || next == "" {
			t.Fatalf("page 1: %s", page)
		}
		page = s.do(t, "GET", v3+"/publicRooms?limit=2&since="+next, "", nil).expect(t, 200)
		if chunk, _ := page.JSON["chunk"].([]any); len(chunk) != 1 || page.str("prev_batch") == "" {
			t.Fatalf("page 2: %s", page)
		}
		s.do(t, "GET", v3+"/publicRooms?since=bogus", "", nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/publicRooms?since=p99999999999999999999", "", nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/publicRooms", alice.AccessToken, map[string]any{"filter": map[string]any{"room_types": "m.space"}}).expectErr(t, 400, "M_BAD_JSON")
	})
}
