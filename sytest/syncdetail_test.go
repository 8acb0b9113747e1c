package sytest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// waitSync runs a long-poll from since that must be answered by a wake-up:
// its timeout is far longer than the time it is given.
func waitSync(t *testing.T, cli *mautrix.Client, since string, during func()) *mautrix.RespSync {
	t.Helper()
	type result struct {
		r   *mautrix.RespSync
		err error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		r, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 120000})
		done <- result{r, err}
	}()
	time.Sleep(200 * time.Millisecond) // let the long-poll start waiting
	during()
	res := <-done
	if res.err != nil {
		t.Fatalf("the waiting sync of %s was not woken: %v", cli.UserID, res.err)
	}
	return res.r
}

func hasPresence(r *mautrix.RespSync, user id.UserID, presence string) bool {
	for _, ev := range r.Presence.Events {
		if ev.Sender == user && (presence == "" || ev.Content.Raw["presence"] == presence) {
			return true
		}
	}
	return false
}

// TestSyncDetails: an inline JSON filter, heroes only for unnamed rooms,
// the user's own presence, presence changes and push rule changes waking a
// waiting /sync, and the presence of a newly joined room's members.
func TestSyncDetails(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, carol := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol")

		// An inline filter.
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		for _, b := range []string{"one", "two", "three"} {
			sendText(t, alice, room, b)
		}
		r, _ := s.rawSync(t, alice, url.Values{"filter": {`{"room":{"timeline":{"limit":1}}}`}})
		if tl := joinedTimeline(r, room); len(tl) != 1 || tl[0].Content.Raw["body"] != "three" {
			t.Errorf("inline filter with limit 1: %v", bodies(tl))
		}

		// Heroes: for the unnamed room, not for a named one.
		named := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Named"})
		join(t, bob, named.String())
		_, raw := s.rawSync(t, bob, nil)
		summary := func(room id.RoomID) map[string]any {
			jr, _ := raw["rooms"].(map[string]any)["join"].(map[string]any)[room.String()].(map[string]any)
			sm, _ := jr["summary"].(map[string]any)
			return sm
		}
		if _, ok := summary(room)["m.heroes"]; !ok {
			t.Errorf("an unnamed room's summary lacks m.heroes: %v", summary(room))
		}
		if h, ok := summary(named)["m.heroes"]; ok {
			t.Errorf("a named room's summary has m.heroes %v", h)
		}

		// One's own presence, in an incremental sync, woken by the change.
		_, since := syncNow(t, alice, "")
		r = waitSync(t, alice, since, func() {
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here"}); err != nil {
				t.Fatal(err)
			}
		})
		if !hasPresence(r, alice.UserID, "online") {
			t.Errorf("alice's own presence change is not in her sync: %+v", r.Presence.Events)
		}
		// Another member's change wakes bob.
		_, bsince := syncNow(t, bob, "")
		r = waitSync(t, bob, bsince, func() {
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable}); err != nil {
				t.Fatal(err)
			}
		})
		if !hasPresence(r, alice.UserID, "unavailable") {
			t.Errorf("bob's sync woken by alice's presence lacks it: %+v", r.Presence.Events)
		}

		// A push rule change wakes a waiting sync with m.push_rules.
		_, bsince = syncNow(t, bob, "")
		r = waitSync(t, bob, bsince, func() {
			s.do(t, "PUT", v3+"/pushrules/global/content/lunch", bob.AccessToken, map[string]any{"pattern": "lunch", "actions": []any{"notify"}}).expect(t, 200)
		})
		found := false
		for _, ev := range r.AccountData.Events {
			found = found || ev.Type.Type == "m.push_rules"
		}
		if !found {
			t.Errorf("the push rule change did not come to the waiting sync: %+v", r.AccountData.Events)
		}

		// Carol's presence was set long ago; when alice joins carol's room,
		// alice's next sync carries it.
		if err := carol.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "carol here"}); err != nil {
			t.Fatal(err)
		}
		cr := createRoom(t, carol, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		_, since = syncNow(t, alice, "")
		join(t, alice, cr.String())
		r, _ = syncNow(t, alice, since)
		if r.Rooms.Join[cr] == nil || !hasPresence(r, carol.UserID, "online") {
			t.Errorf("the newly joined room's member's presence is missing: %+v", r.Presence.Events)
		}
	})
}
