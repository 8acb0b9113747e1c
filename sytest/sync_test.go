package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func filterQ(f string) url.Values { return url.Values{"filter": {f}} }

func joinedTimeline(r *mautrix.RespSync, room id.RoomID) []*event.Event {
	if jr := r.Rooms.Join[room]; jr != nil {
		return jr.Timeline.Events
	}
	return nil
}

// TestSyncTimeout: a long-poll with nothing to say returns after its timeout
// with a token that loses nothing; one that is waiting returns as soon as a
// message arrives.
func TestSyncTimeout(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		sendText(t, alice, room, "before")
		_, since := syncNow(t, bob, "")
		// Settle: one more sync so that set_presence=online of the first is behind us.
		_, since = syncNow(t, bob, since)

		// Nothing happens: the sync waits for (about) its timeout.
		start := time.Now()
		idle, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 1000})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if took < 700*time.Millisecond {
			t.Errorf("an idle sync with timeout=1000 returned after %v", took)
		}
		if took > 10*time.Second {
			t.Errorf("an idle sync with timeout=1000 took %v", took)
		}
		if idle.NextBatch == "" {
			t.Fatal("no next_batch")
		}
		if len(idle.Rooms.Join) != 0 {
			t.Errorf("an idle sync returned rooms: %v", idle.Rooms.Join)
		}
		// The token it gave is not behind: nothing new from it now...
		again, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: idle.NextBatch, Timeout: 0})
		if err != nil {
			t.Fatal(err)
		}
		if len(joinedTimeline(again, room)) != 0 {
			t.Errorf("events repeated after an idle sync: %v", bodies(joinedTimeline(again, room)))
		}
		// ...and not ahead: the next message still comes through it.
		sendText(t, alice, room, "after idle")
		syncUntil(t, bob, idle.NextBatch, "the message after the idle sync", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "after idle") })

		// A waiting sync returns early when a message arrives.
		_, since = syncNow(t, bob, "")
		_, since = syncNow(t, bob, since)
		type result struct {
			resp *mautrix.RespSync
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			resp, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 30000})
			done <- result{resp, err, time.Since(start)}
		}()
		time.Sleep(200 * time.Millisecond) // let the long-poll start waiting (not an assertion)
		sendText(t, alice, room, "wake up")
		select {
		case res := <-done:
			if res.err != nil {
				t.Fatal(res.err)
			}
			if !timelineHas(res.resp, room, "wake up") {
				t.Errorf("the woken sync does not carry the message: %v", bodies(joinedTimeline(res.resp, room)))
			}
			if res.took > 20*time.Second {
				t.Errorf("the woken sync took %v", res.took)
			}
		case <-time.After(25 * time.Second):
			t.Fatal("a waiting sync did not return when a message arrived")
		}

		// Bad tokens and parameters are client errors.
		for _, q := range []string{"since=garbage", "timeout=-5", "timeout=abc", "filter=%7Bnot-json", "filter=999999", "set_presence=bogus"} {
			r := s.do(t, "GET", v3+"/sync?"+q, bob.AccessToken, nil)
			if r.Status < 400 || r.Status >= 500 {
				t.Errorf("GET /sync?%s: want a 4xx: %s", q, r)
			}
		}
	})
}

// TestSyncFullState: full_state=true returns the room's whole state in an
// incremental sync.
func TestSyncFullState(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Full", Topic: "state"})
		first, since := syncNow(t, alice, "")
		if jr := first.Rooms.Join[room]; jr == nil || findEvent(append(jr.State.Events, jr.Timeline.Events...), "m.room.create", sk("")) == nil {
			t.Fatalf("initial sync lacks the room's create event")
		}
		sendText(t, alice, room, "x")
		_, since = syncNow(t, alice, since)
		r, _ := s.rawSync(t, alice, url.Values{"since": {since}, "full_state": {"true"}, "timeout": {"0"}})
		jr := r.Rooms.Join[room]
		if jr == nil {
			t.Fatal("full_state sync lacks the room")
		}
		all := append(jr.State.Events, jr.Timeline.Events...)
		for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.join_rules", ""}, {"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.member", alice.UserID.String()}} {
			if findEvent(all, k[0], &k[1]) == nil {
				t.Errorf("full_state sync lacks %v", k)
			}
		}
		// Without full_state the same window has no state.
		r, _ = s.rawSync(t, alice, url.Values{"since": {since}, "timeout": {"0"}})
		if jr := r.Rooms.Join[room]; jr != nil && len(jr.State.Events) != 0 {
			t.Errorf("incremental sync without changes carries state: %d events", len(jr.State.Events))
		}
	})
}

// TestSyncFilters: stored and inline filters; timeline limit with limited and
// prev_batch; types, not_types; rooms, not_rooms.
func TestSyncFilters(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		r1 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "one"})
		r2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "two"})
		for i := 1; i <= 6; i++ {
			sendText(t, alice, r1, fmt.Sprintf("r1-%d", i))
		}
		if _, err := alice.SendMessageEvent(ctx, r1, event.Type{Type: "com.example.custom", Class: event.MessageEventType}, map[string]any{"body": "custom"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, r2, "r2-1")

		// A stored filter: upload, read back, use.
		fr, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		if fr.FilterID == "" {
			t.Fatal("empty filter_id")
		}
		got := s.do(t, "GET", v3+"/user/"+p(alice.UserID)+"/filter/"+p(fr.FilterID), alice.AccessToken, nil).expect(t, 200)
		if tl, _ := got.JSON["room"].(map[string]any)["timeline"].(map[string]any); num(tl["limit"]) != 3 {
			t.Errorf("stored filter read back: %s", got)
		}
		s.do(t, "GET", v3+"/user/"+p(bob.UserID)+"/filter/"+p(fr.FilterID), alice.AccessToken, nil).wantOneOf(t, "another user's filter", 403, "M_FORBIDDEN", 404, "M_NOT_FOUND")
		s.do(t, "POST", v3+"/user/"+p(bob.UserID)+"/filter", alice.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/user/"+p(alice.UserID)+"/filter/424242", alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/user/"+p(bob.UserID)+"/filter/"+p(fr.FilterID), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")

		checkLimited := func(what string, resp *mautrix.RespSync) {
			t.Helper()
			jr := resp.Rooms.Join[r1]
			if jr == nil {
				t.Fatalf("%s: no r1", what)
			}
			tl := jr.Timeline.Events
			if len(tl) != 3 || tl[2].Type.Type != "com.example.custom" || bodies(tl)[0] != "r1-5" {
				t.Fatalf("%s: timeline of 3 wanted, got %v", what, bodies(tl))
			}
			if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
				t.Errorf("%s: limited %v prev_batch %q", what, jr.Timeline.Limited, jr.Timeline.PrevBatch)
			}
			// The state covers what the timeline does not.
			if findEvent(jr.State.Events, "m.room.create", sk("")) == nil || findEvent(jr.State.Events, "m.room.name", sk("")) == nil {
				t.Errorf("%s: state of a limited timeline lacks create or name", what)
			}
			// /messages from prev_batch gives the older ones, newest first.
			older, err := alice.Messages(ctx, r1, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 4)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(bodies(older.Chunk), ","); got != "r1-4,r1-3,r1-2,r1-1" {
				t.Errorf("%s: /messages from prev_batch: %s", what, got)
			}
			for _, ev := range older.Chunk {
				if hasEventID(tl, ev.ID) {
					t.Errorf("%s: /messages from prev_batch repeats %s", what, ev.ID)
				}
			}
		}
		stored, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: fr.FilterID})
		if err != nil {
			t.Fatal(err)
		}
		checkLimited("stored filter", stored)
		inline, _ := s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":3}}}`))
		checkLimited("inline filter", inline)

		// A timeline that fits is not limited.
		r, _ := s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":50}}}`))
		if jr := r.Rooms.Join[r2]; jr == nil || jr.Timeline.Limited || findEvent(jr.Timeline.Events, "m.room.create", sk("")) == nil {
			t.Errorf("a whole-room timeline: %+v", jr)
		}

		// types and not_types.
		r, _ = s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":50,"types":["m.room.message"]}}}`))
		for _, ev := range joinedTimeline(r, r1) {
			if ev.Type.Type != "m.room.message" {
				t.Errorf("types filter let %s through", ev.Type.Type)
			}
		}
		if len(joinedTimeline(r, r1)) != 6 {
			t.Errorf("types filter: %v", bodies(joinedTimeline(r, r1)))
		}
		r, _ = s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":50,"not_types":["m.room.message","m.room.member"]}}}`))
		for _, ev := range joinedTimeline(r, r1) {
			if ev.Type.Type == "m.room.message" || ev.Type.Type == "m.room.member" {
				t.Errorf("not_types filter let %s through", ev.Type.Type)
			}
		}
		if findEvent(joinedTimeline(r, r1), "com.example.custom", nil) == nil {
			t.Errorf("not_types filter dropped an event it should keep")
		}
		r, _ = s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":50,"types":["com.example.*"]}}}`))
		if tl := joinedTimeline(r, r1); len(tl) != 1 || tl[0].Type.Type != "com.example.custom" {
			t.Errorf("wildcard types filter: %d events", len(tl))
		}

		// rooms and not_rooms.
		r, _ = s.rawSync(t, alice, filterQ(fmt.Sprintf(`{"room":{"rooms":[%q]}}`, r2)))
		if r.Rooms.Join[r1] != nil || r.Rooms.Join[r2] == nil {
			t.Errorf("rooms filter: %d rooms", len(r.Rooms.Join))
		}
		r, _ = s.rawSync(t, alice, filterQ(fmt.Sprintf(`{"room":{"not_rooms":[%q]}}`, r2)))
		if r.Rooms.Join[r1] == nil || r.Rooms.Join[r2] != nil {
			t.Errorf("not_rooms filter: %d rooms", len(r.Rooms.Join))
		}
		// The timeline's own not_rooms (a RoomEventFilter field).
		r, _ = s.rawSync(t, alice, filterQ(fmt.Sprintf(`{"room":{"timeline":{"not_rooms":[%q]}}}`, r2)))
		if len(joinedTimeline(r, r2)) != 0 || len(joinedTimeline(r, r1)) == 0 {
			t.Errorf("room.timeline.not_rooms: r1 %d events, r2 %d events", len(joinedTimeline(r, r1)), len(joinedTimeline(r, r2)))
		}
		// Senders.
		join(t, bob, r2.String())
		sendText(t, bob, r2, "from bob")
		r, _ = s.rawSync(t, alice, filterQ(fmt.Sprintf(`{"room":{"timeline":{"limit":50,"not_senders":[%q]}}}`, alice.UserID)))
		for _, ev := range joinedTimeline(r, r2) {
			if ev.Sender == alice.UserID {
				t.Errorf("not_senders let alice's %s through", ev.Type.Type)
			}
		}
		if !timelineHas(r, r2, "from bob") {
			t.Errorf("not_senders dropped bob's message")
		}
		// The same filters are rejected when malformed.
		s.do(t, "POST", v3+"/user/"+p(alice.UserID)+"/filter", alice.AccessToken, `{"room":{"timeline":{"limit":"ten"}}}`).expectErr(t, 400, "M_BAD_JSON")
	})
}

// TestSyncLazyLoadMembers: with lazy_load_members the state carries only the
// members of the timeline's senders, plus one's own.
func TestSyncLazyLoadMembers(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		dave := s.register(t, "dave")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, c := range []*mautrix.Client{bob, carol, dave} {
			join(t, c, room.String())
		}
		sendText(t, carol, room, "carol speaks early")
		for i := 0; i < 3; i++ {
			sendText(t, bob, room, fmt.Sprintf("bob %d", i))
		}
		lazy := `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`
		r, _ := s.rawSync(t, alice, filterQ(lazy))
		jr := r.Rooms.Join[room]
		if jr == nil {
			t.Fatal("no room")
		}
		members := map[string]bool{}
		for _, ev := range jr.State.Events {
			if ev.Type.Type == "m.room.member" {
				members[ev.GetStateKey()] = true
			}
		}
		if !members[bob.UserID.String()] || !members[alice.UserID.String()] || members[carol.UserID.String()] || members[dave.UserID.String()] || len(members) != 2 {
			t.Errorf("lazy-loaded members: %v (want bob, the sender, and alice, oneself)", members)
		}
		if findEvent(jr.State.Events, "m.room.create", sk("")) == nil || findEvent(jr.State.Events, "m.room.power_levels", sk("")) == nil {
			t.Errorf("lazy loading dropped non-member state")
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 4 {
			t.Errorf("summary with lazy loading: %+v", jr.Summary)
		}
		// Without lazy loading every member is there.
		r, _ = s.rawSync(t, alice, filterQ(`{"room":{"timeline":{"limit":3}}}`))
		n := 0
		for _, ev := range r.Rooms.Join[room].State.Events {
			if ev.Type.Type == "m.room.member" {
				n++
			}
		}
		if n != 4 {
			t.Errorf("members without lazy loading: %d", n)
		}
		// Incrementally: carol's new message brings her member event.
		_, since := syncNow(t, alice, "")
		sendText(t, carol, room, "carol again")
		fid := must1(alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 3}, State: &mautrix.FilterPart{LazyLoadMembers: true}}}))(t)
		resp, _ := syncUntilFilter(t, alice, since, fid.FilterID, "carol's message", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "carol again") })
		if !memberOf(resp.Rooms.Join[room].State.Events, carol.UserID, "join") {
			t.Errorf("incremental lazy sync lacks the new sender's member event")
		}
		// /messages with lazy loading returns the senders' members in state.
		msgs := s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=2&filter="+url.QueryEscape(`{"lazy_load_members":true}`), alice.AccessToken, nil).expect(t, 200)
		var m mautrix.RespMessages
		if err := json.Unmarshal(msgs.Raw, &m); err != nil {
			t.Fatal(err)
		}
		if !memberOf(m.State, carol.UserID, "join") || memberOf(m.State, dave.UserID, "join") {
			t.Errorf("/messages lazy-loaded state: %d events", len(m.State))
		}
	})
}

// TestSyncRoomSections: invite, join and leave sections, include_leave.
func TestSyncRoomSections(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		_, since := syncNow(t, bob, "")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Sections"})
		invite(t, alice, room, bob.UserID)
		_, since = syncUntil(t, bob, since, "the invite", func(r *mautrix.RespSync) bool {
			ir := r.Rooms.Invite[room]
			return ir != nil && memberOf(ir.State.Events, bob.UserID, "invite")
		})
		if r, _ := s.rawSync(t, bob, nil); r.Rooms.Invite[room] == nil || r.Rooms.Join[room] != nil {
			t.Errorf("initial sync: the invite is not (only) in the invite section")
		}
		join(t, bob, room.String())
		sendText(t, alice, room, "welcome")
		resp, since := syncUntil(t, bob, since, "the joined room", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room] != nil })
		if resp.Rooms.Invite[room] != nil {
			t.Errorf("the room is still in the invite section after joining")
		}
		jr := resp.Rooms.Join[room]
		if !memberOf(append(jr.State.Events, jr.Timeline.Events...), bob.UserID, "join") {
			t.Errorf("the join section lacks bob's own join")
		}
		if findEvent(append(jr.State.Events, jr.Timeline.Events...), "m.room.name", sk("")) == nil {
			t.Errorf("the newly joined room lacks its state (name)")
		}
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, bob, since, "the leave", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room] != nil })
		if resp.Rooms.Join[room] != nil {
			t.Errorf("a left room is also in the join section")
		}
		if !memberOf(resp.Rooms.Leave[room].Timeline.Events, bob.UserID, "leave") {
			t.Errorf("the leave section lacks bob's leave event: %v", eventIDs(resp.Rooms.Leave[room].Timeline.Events))
		}
		// Things after the leave are not shown.
		sendText(t, alice, room, "after bob left")
		// include_leave: the left room appears in an initial sync only with it.
		if r, _ := s.rawSync(t, bob, nil); r.Rooms.Leave[room] != nil || r.Rooms.Join[room] != nil {
			t.Errorf("initial sync without include_leave shows the left room")
		}
		r, _ := s.rawSync(t, bob, filterQ(`{"room":{"include_leave":true}}`))
		lr := r.Rooms.Leave[room]
		if lr == nil {
			t.Fatal("initial sync with include_leave lacks the left room")
		}
		if !memberOf(append(lr.State.Events, lr.Timeline.Events...), bob.UserID, "leave") {
			t.Errorf("include_leave: the left room lacks the leave event")
		}
		for _, b := range bodies(lr.Timeline.Events) {
			if b == "after bob left" {
				t.Errorf("the left room shows a message sent after leaving")
			}
		}
		// Kicked users see the room in the leave section too.
		carol := s.register(t, "carol")
		invite(t, alice, room, carol.UserID)
		join(t, carol, room.String())
		_, csince := syncNow(t, carol, "")
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, carol, csince, "the kick", func(r *mautrix.RespSync) bool {
			return r.Rooms.Leave[room] != nil && memberOf(r.Rooms.Leave[room].Timeline.Events, carol.UserID, "leave")
		})
		// Rejected invites go to the leave section.
		room2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		_, bsince := syncUntil(t, bob, "", "the second invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room2] != nil })
		if _, err := bob.LeaveRoom(ctx, room2); err != nil {
			t.Fatalf("reject invite: %v", err)
		}
		syncUntil(t, bob, bsince, "the rejected invite in leave", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room2] != nil })
	})
}

// TestSyncUnreadAndReceipts: notification counts, read receipts, private
// receipts, m.fully_read via /read_markers.
func TestSyncUnreadAndReceipts(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		own := sendText(t, alice, room, "alice's own message")
		var last id.EventID
		for i := 0; i < 3; i++ {
			last = sendText(t, bob, room, fmt.Sprintf("unread %d", i))
		}
		count := func(r *mautrix.RespSync) (int, bool) {
			jr := r.Rooms.Join[room]
			if jr == nil || jr.UnreadNotifications == nil {
				return 0, false
			}
			return jr.UnreadNotifications.NotificationCount, true
		}
		r, since := syncNow(t, alice, "")
		if n, ok := count(r); !ok || n != 3 {
			t.Errorf("notification_count after 3 messages from bob (and one own): %d (present %v)", n, ok)
		}
		// Alice reads: the count drops to 0 in the next sync.
		if err := alice.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, since, "notification_count 0", func(r *mautrix.RespSync) bool { n, ok := count(r); return ok && n == 0 })
		if r, _ := syncNow(t, alice, ""); func() int { n, _ := count(r); return n }() != 0 {
			t.Errorf("initial sync after the receipt still counts unread messages")
		}

		// Bob's private receipt: bob's own count drops, alice never sees it.
		// (Bob's own messages marked alice's first one read, as the spec
		// counts a user's latest message as read up to; so alice writes again.)
		own = sendText(t, alice, room, "alice's second message")
		_, asince := syncNow(t, alice, "")
		r, bsince := syncNow(t, bob, "")
		if n, _ := count(r); n != 1 {
			t.Errorf("bob's notification_count for alice's one message: %d", n)
		}
		if err := bob.SendReceipt(ctx, room, own, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bsince, "bob's own private receipt", func(r *mautrix.RespSync) bool {
			return receiptFrom(r, room, own, "m.read.private", bob.UserID) && func() bool { n, ok := count(r); return !ok || n == 0 }()
		})
		if r, _ := syncNow(t, bob, ""); func() int { n, _ := count(r); return n }() != 0 {
			t.Errorf("bob's count after a private receipt is not 0")
		}
		// A public receipt by bob afterwards, which alice must see; the
		// private one must not have reached her before it.
		if err := bob.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, asince, "bob's public receipt", func(r *mautrix.RespSync) bool {
			if receiptFrom(r, room, own, "m.read.private", bob.UserID) || receiptFrom(r, room, last, "m.read.private", bob.UserID) {
				t.Errorf("alice sees bob's private receipt")
			}
			return receiptFrom(r, room, last, "m.read", bob.UserID)
		})
		if r, _ := syncNow(t, alice, ""); receiptFrom(r, room, own, "m.read.private", bob.UserID) {
			t.Errorf("alice's initial sync shows bob's private receipt")
		}

		// m.fully_read through /read_markers lands in room account data.
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/read_markers", alice.AccessToken, map[string]any{"m.fully_read": last, "m.read": last}).expect(t, 200)
		rr, _ := syncNow(t, alice, "")
		found := false
		if jr := rr.Rooms.Join[room]; jr != nil {
			if ev := findEvent(jr.AccountData.Events, "m.fully_read", nil); ev != nil && ev.Content.Raw["event_id"] == last.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("m.fully_read not in the room's account data")
		}
		var fr map[string]any
		if err := alice.GetRoomAccountData(ctx, room, "m.fully_read", &fr); err != nil || fr["event_id"] != last.String() {
			t.Errorf("GET m.fully_read: %v %v", fr, err)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/read_markers", alice.AccessToken, map[string]any{"m.fully_read": "$nosuchevent"}).wantOneOf(t, "fully_read of an unknown event", 404, "M_NOT_FOUND", 400, "M_INVALID_PARAM", 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/receipt/m.bogus/"+p(last), alice.AccessToken, map[string]any{}).wantOneOf(t, "unknown receipt type", 400, "M_INVALID_PARAM", 400, "M_UNRECOGNIZED", 400, "M_BAD_JSON")
	})
}

// receiptFrom reports whether a sync carries a receipt of the type by user on eventID.
func receiptFrom(r *mautrix.RespSync, room id.RoomID, eventID id.EventID, rtype string, user id.UserID) bool {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type.Type != "m.receipt" {
			continue
		}
		byType, _ := ev.Content.Raw[eventID.String()].(map[string]any)
		users, _ := byType[rtype].(map[string]any)
		if users[user.String()] != nil {
			return true
		}
	}
	return false
}

// TestSyncSummary: m.joined_member_count, m.invited_member_count and m.heroes.
func TestSyncSummary(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		dave := s.register(t, "dave")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID, carol.UserID, dave.UserID}})
		join(t, bob, room.String())
		join(t, carol, room.String())
		r, since := syncNow(t, alice, "")
		sum := r.Rooms.Join[room].Summary
		if sum.JoinedMemberCount == nil || *sum.JoinedMemberCount != 3 {
			t.Errorf("m.joined_member_count: %+v", sum)
		}
		if sum.InvitedMemberCount == nil || *sum.InvitedMemberCount != 1 {
			t.Errorf("m.invited_member_count: %+v", sum)
		}
		heroes := map[id.UserID]bool{}
		for _, h := range sum.Heroes {
			heroes[h] = true
		}
		if heroes[alice.UserID] || !heroes[bob.UserID] || !heroes[carol.UserID] {
			t.Errorf("m.heroes: %v (want the others, not oneself)", sum.Heroes)
		}
		// A membership change updates the counts in the next incremental sync.
		join(t, dave, room.String())
		resp, _ := syncUntil(t, alice, since, "dave's join", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room]
			return jr != nil && memberOf(jr.Timeline.Events, dave.UserID, "join")
		})
		sum = resp.Rooms.Join[room].Summary
		if sum.JoinedMemberCount == nil || *sum.JoinedMemberCount != 4 || sum.InvitedMemberCount == nil || *sum.InvitedMemberCount != 0 {
			t.Errorf("summary after dave joined: joined %v invited %v", ptrVal(sum.JoinedMemberCount), ptrVal(sum.InvitedMemberCount))
		}
	})
}

func ptrVal(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestSyncAccountData: global and per-room account data appear in /sync after PUT.
func TestSyncAccountData(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		_, since := syncNow(t, alice, "")
		if err := alice.SetAccountData(ctx, "com.example.global", map[string]any{"v": 1}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetRoomAccountData(ctx, room, "com.example.room", map[string]any{"v": 2}); err != nil {
			t.Fatal(err)
		}
		tagged := true
		if err := alice.AddTag(ctx, room, "u.work", 0.5); err != nil {
			t.Errorf("PUT /user/{userId}/rooms/{roomId}/tags/u.work: %v", err)
			tagged = false
		}
		var gotGlobal, gotRoom, gotTag bool
		syncUntil(t, alice, since, "the account data", func(r *mautrix.RespSync) bool {
			if ev := findEvent(r.AccountData.Events, "com.example.global", nil); ev != nil && num(ev.Content.Raw["v"]) == 1 {
				gotGlobal = true
			}
			if jr := r.Rooms.Join[room]; jr != nil {
				if ev := findEvent(jr.AccountData.Events, "com.example.room", nil); ev != nil && num(ev.Content.Raw["v"]) == 2 {
					gotRoom = true
				}
				if ev := findEvent(jr.AccountData.Events, "m.tag", nil); ev != nil {
					tags, _ := ev.Content.Raw["tags"].(map[string]any)
					gotTag = tags["u.work"] != nil
				}
			}
			return gotGlobal && gotRoom && (gotTag || !tagged)
		})
		// In an initial sync too, and the global one not in the room and vice versa.
		r, _ := syncNow(t, alice, "")
		if findEvent(r.AccountData.Events, "com.example.global", nil) == nil || findEvent(r.AccountData.Events, "com.example.room", nil) != nil {
			t.Errorf("global account data in the initial sync: %d events", len(r.AccountData.Events))
		}
		if jr := r.Rooms.Join[room]; jr == nil || findEvent(jr.AccountData.Events, "com.example.room", nil) == nil {
			t.Errorf("room account data in the initial sync")
		}
		// An update replaces the value.
		if err := alice.SetAccountData(ctx, "com.example.global", map[string]any{"v": 3}); err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := alice.GetAccountData(ctx, "com.example.global", &out); err != nil || num(out["v"]) != 3 {
			t.Errorf("GET account data: %v %v", out, err)
		}
		// Other users' account data is off limits.
		bob := s.register(t, "bob")
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.x", bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/user/"+p(alice.UserID)+"/account_data/com.example.global", bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/m.fully_read", alice.AccessToken, map[string]any{}).wantOneOf(t, "m.fully_read via account_data", 405, "M_BAD_JSON", 400, "M_BAD_JSON", 405, "M_UNRECOGNIZED")
	})
}

// TestSyncPresence: set_presence on /sync and GET/PUT /presence/{userId}/status.
func TestSyncPresence(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		stranger := s.register(t, "stranger")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		_, bsince := syncNow(t, bob, "")

		// set_presence=unavailable on a sync.
		if _, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{SetPresence: event.PresenceUnavailable}); err != nil {
			t.Fatal(err)
		}
		pr, err := bob.GetPresence(ctx, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if pr.Presence != event.PresenceUnavailable {
			t.Errorf("presence after set_presence=unavailable: %+v", pr)
		}
		// PUT with a status message.
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "at lunch"}); err != nil {
			t.Fatal(err)
		}
		pr = must1(bob.GetPresence(ctx, alice.UserID))(t)
		if pr.Presence != event.PresenceOnline || pr.StatusMsg != "at lunch" || !pr.CurrentlyActive {
			t.Errorf("presence after PUT online: %+v", pr)
		}
		// Bob, who shares a room, sees it in /sync.
		syncUntil(t, bob, bsince, "alice's presence", func(r *mautrix.RespSync) bool {
			for _, ev := range r.Presence.Events {
				if ev.Sender == alice.UserID && ev.Content.Raw["presence"] == "online" && ev.Content.Raw["status_msg"] == "at lunch" {
					return true
				}
			}
			return false
		})
		// offline
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOffline}); err != nil {
			t.Fatal(err)
		}
		if pr := must1(bob.GetPresence(ctx, alice.UserID))(t); pr.Presence != event.PresenceOffline {
			t.Errorf("presence after PUT offline: %+v", pr)
		}
		// Only one's own presence can be set; bad values are refused.
		s.do(t, "PUT", v3+"/presence/"+p(alice.UserID)+"/status", bob.AccessToken, map[string]any{"presence": "online"}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/presence/"+p(alice.UserID)+"/status", alice.AccessToken, map[string]any{"presence": "sleeping"}).wantOneOf(t, "bad presence", 400, "M_INVALID_PARAM", 400, "M_BAD_JSON")
		s.do(t, "GET", v3+"/presence/"+p("@nobody:localhost")+"/status", alice.AccessToken, nil).wantOneOf(t, "presence of an unknown user", 404, "M_NOT_FOUND", 403, "M_FORBIDDEN")
		// A user who shares no room with alice: allowed by the spec to be refused, never a 500.
		r := s.do(t, "GET", v3+"/presence/"+p(alice.UserID)+"/status", stranger.AccessToken, nil)
		if r.Status != 200 && r.Status != 403 && r.Status != 404 {
			t.Errorf("presence for a stranger: %s", r)
		}
	})
}

// TestSyncTransactionID: unsigned.transaction_id goes only to the device that sent the event.
func TestSyncTransactionID(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		other := s.login(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		_, sa := syncNow(t, alice, "")
		_, so := syncNow(t, other, "")
		_, sb := syncNow(t, bob, "")

		const txnID = "my-txn-1"
		sent, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "with txn"}, mautrix.ReqSendEvent{TransactionID: txnID})
		if err != nil {
			t.Fatal(err)
		}
		get := func(cli *mautrix.Client, since string) *event.Event {
			t.Helper()
			resp, _ := syncUntil(t, cli, since, "the message", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "with txn") })
			for _, ev := range joinedTimeline(resp, room) {
				if ev.ID == sent.EventID {
					return ev
				}
			}
			t.Fatalf("%s: message not in timeline", cli.DeviceID)
			return nil
		}
		if ev := get(alice, sa); ev.Unsigned.TransactionID != txnID {
			t.Errorf("sending device: unsigned.transaction_id %q", ev.Unsigned.TransactionID)
		}
		if ev := get(other, so); ev.Unsigned.TransactionID != "" {
			t.Errorf("another device of the sender got transaction_id %q", ev.Unsigned.TransactionID)
		}
		if ev := get(bob, sb); ev.Unsigned.TransactionID != "" {
			t.Errorf("another user got transaction_id %q", ev.Unsigned.TransactionID)
		}
		// The same holds for /event and /messages.
		if ev := must1(alice.GetEvent(ctx, room, sent.EventID))(t); ev.Unsigned.TransactionID != txnID {
			t.Errorf("/event for the sending device: transaction_id %q", ev.Unsigned.TransactionID)
		}
		if ev := must1(other.GetEvent(ctx, room, sent.EventID))(t); ev.Unsigned.TransactionID != "" {
			t.Errorf("/event for another device: transaction_id %q", ev.Unsigned.TransactionID)
		}
		msgs := must1(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 5))(t)
		for _, ev := range msgs.Chunk {
			if ev.Unsigned.TransactionID != "" {
				t.Errorf("/messages for bob: transaction_id %q", ev.Unsigned.TransactionID)
			}
		}
		// The same txnId from another device is a different transaction.
		again, err := other.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "other device"}, mautrix.ReqSendEvent{TransactionID: txnID})
		if err != nil {
			t.Fatal(err)
		}
		if again.EventID == sent.EventID {
			t.Errorf("a txnId of another device returned the first device's event")
		}
	})
}

// TestSyncIncrementalGap: an incremental sync with more new events than the
// timeline limit is limited, its state carries the state changes of the gap
// (and not those already in the timeline), and /messages from prev_batch
// fills the gap back to the token.
func TestSyncIncrementalGap(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "old name"})
		join(t, bob, room.String())
		sendText(t, alice, room, "before the token")
		const f = `{"room":{"timeline":{"limit":5}}}`
		r, _ := s.rawSync(t, bob, filterQ(f))
		since := r.NextBatch

		// In the gap: a rename, a topic, a new member, messages.
		if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "new name"}); err != nil {
			t.Fatal(err)
		}
		carol := s.register(t, "carol")
		join(t, carol, room.String())
		for i := 0; i < 10; i++ {
			sendText(t, alice, room, fmt.Sprintf("gap %d", i))
		}
		// In the timeline window: a topic change.
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "in the window"}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			sendText(t, alice, room, fmt.Sprintf("tail %d", i))
		}
		// Wait until the last message is visible to syncs (see TestSyncReadYourWrites).
		syncUntil(t, alice, "", "the last message", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "tail 2") })

		r, _ = s.rawSync(t, bob, url.Values{"since": {since}, "filter": {f}, "timeout": {"0"}})
		jr := r.Rooms.Join[room]
		if jr == nil {
			t.Fatal("no room in the incremental sync")
		}
		tl := jr.Timeline.Events
		if len(tl) != 5 || !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatalf("limited incremental timeline: %d events, limited %v, prev_batch %q", len(tl), jr.Timeline.Limited, jr.Timeline.PrevBatch)
		}
		if findEvent(tl, "m.room.topic", sk("")) == nil {
			t.Errorf("the topic change is not in the timeline window: %v", eventIDs(tl))
		}
		name := findEvent(jr.State.Events, "m.room.name", sk(""))
		if name == nil || name.Content.Raw["name"] != "new name" {
			t.Errorf("the gap's rename is not in state: %v", name)
		}
		if !memberOf(jr.State.Events, carol.UserID, "join") {
			t.Errorf("the gap's new member is not in state")
		}
		if findEvent(jr.State.Events, "m.room.topic", sk("")) != nil {
			t.Errorf("state repeats the topic that is in the timeline")
		}
		if findEvent(jr.State.Events, "m.room.create", sk("")) != nil {
			t.Errorf("an incremental sync's state repeats unchanged state (create)")
		}
		// prev_batch back to the token: exactly the gap.
		var gap []*event.Event
		from := jr.Timeline.PrevBatch
		for i := 0; i < 10; i++ {
			page, err := bob.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 4)
			if err != nil {
				t.Fatal(err)
			}
			done := false
			for _, ev := range page.Chunk {
				if ev.Content.Raw["body"] == "before the token" {
					done = true
					break
				}
				gap = append(gap, ev)
			}
			if done || page.End == "" {
				break
			}
			from = page.End
		}
		// The timeline and the pages before it together hold every message
		// since the token, once each, in order.
		var joined []string
		for i := len(gap) - 1; i >= 0; i-- {
			if b, ok := gap[i].Content.Raw["body"].(string); ok {
				joined = append(joined, b)
			}
		}
		joined = append(joined, bodies(tl)...)
		want := "gap 0,gap 1,gap 2,gap 3,gap 4,gap 5,gap 6,gap 7,gap 8,gap 9,tail 0,tail 1,tail 2"
		if got := strings.Join(joined, ","); got != want {
			t.Errorf("history since the token via prev_batch + timeline:\n got %s\nwant %s\ntimeline %v", got, want, bodies(tl))
		}
		for _, ev := range gap {
			if hasEventID(tl, ev.ID) {
				t.Errorf("/messages from prev_batch repeats the timeline's %s", ev.ID)
			}
		}

		// Leaving and rejoining brings the whole state again.
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		_, since2 := syncNow(t, bob, r.NextBatch)
		join(t, bob, room.String())
		resp, _ := syncUntil(t, bob, since2, "the rejoin", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room] != nil })
		jr2 := resp.Rooms.Join[room]
		all := append(jr2.State.Events, jr2.Timeline.Events...)
		for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.power_levels", ""}} {
			if findEvent(all, k[0], &k[1]) == nil {
				t.Errorf("a rejoined room lacks %v", k)
			}
		}
	})
}

// TestSyncReadYourWrites: once PUT /send has answered, the event is in the
// next /sync (timeout=0) of the sender and of another member, in /messages
// and in /event.
func TestSyncReadYourWrites(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		_, asince := syncNow(t, alice, "")
		_, bsince := syncNow(t, bob, "")
		misses := map[string]int{}
		immediate := func(cli *mautrix.Client, since *string, body string) {
			t.Helper()
			resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: *since, Timeout: 0})
			if err != nil {
				t.Fatal(err)
			}
			if timelineHas(resp, room, body) {
				*since = resp.NextBatch
				return
			}
			misses[cli.UserID.String()]++
			// Catch up so the next round starts clean (and nothing is lost).
			_, *since = syncUntil(t, cli, *since, body, func(r *mautrix.RespSync) bool { return timelineHas(r, room, body) })
		}
		for i := 0; i < 30; i++ {
			body := fmt.Sprintf("ryw %d", i)
			sendText(t, alice, room, body+" a")
			sendText(t, alice, room, body+" b")
			eid := sendText(t, alice, room, body)
			immediate(bob, &bsince, body)
			immediate(alice, &asince, body)
			msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs.Chunk) == 0 || msgs.Chunk[0].ID != eid {
				misses["/messages"]++
			}
			if _, err := bob.GetEvent(ctx, room, eid); err != nil {
				t.Errorf("/event right after the send: %v", err)
			}
		}
		if len(misses) > 0 {
			t.Errorf("of 30 acknowledged sends, missing right after the ack from: %v", misses)
		}
	})
}

// TestSyncNotificationCountsFollowPushRules: unread_notifications counts what
// the user's push rules make notify (notices and edits do not, mentions
// highlight, a muted room counts nothing).
func TestSyncNotificationCountsFollowPushRules(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		join(t, carol, room.String())
		counts := func() (int, int) {
			t.Helper()
			r, _ := syncNow(t, alice, "")
			jr := r.Rooms.Join[room]
			if jr == nil || jr.UnreadNotifications == nil {
				t.Fatalf("no unread_notifications")
			}
			return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount
		}
		send := func(content map[string]any) id.EventID {
			t.Helper()
			resp, err := bob.SendMessageEvent(ctx, room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID
		}
		plain := send(map[string]any{"msgtype": "m.text", "body": "plain message"})
		send(map[string]any{"msgtype": "m.notice", "body": "a bot's notice"})
		send(map[string]any{"msgtype": "m.text", "body": "* edited", "m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": plain}})
		last := send(map[string]any{"msgtype": "m.text", "body": "look at this", "m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}})
		// Wait until alice's sync has bob's last message.
		syncUntil(t, alice, "", "bob's mention", func(r *mautrix.RespSync) bool { return hasEventID(joinedTimeline(r, room), last) })
		n, h := counts()
		if n != 2 || h != 1 {
			t.Errorf("after a message, a notice, an edit and a mention: notification_count %d highlight_count %d, want 2 and 1", n, h)
		}

		// Alice reads, then mutes the room the way Element does.
		if err := alice.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		s.do(t, "PUT", v3+"/pushrules/global/override/"+p(room), alice.AccessToken, map[string]any{
			"conditions": []map[string]any{{"kind": "event_match", "key": "room_id", "pattern": room.String()}},
			"actions":    []any{},
		}).expect(t, 200)
		last = send(map[string]any{"msgtype": "m.text", "body": "while muted"})
		syncUntil(t, alice, "", "the message while muted", func(r *mautrix.RespSync) bool { return hasEventID(joinedTimeline(r, room), last) })
		if n, h := counts(); n != 0 || h != 0 {
			t.Errorf("in a muted room: notification_count %d highlight_count %d, want 0 and 0", n, h)
		}
	})
}

// TestSyncTyping: typing notifications start, stop, and expire after their timeout.
func TestSyncTyping(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		_, since := syncNow(t, bob, "")
		typing := func(r *mautrix.RespSync) ([]any, bool) {
			if jr := r.Rooms.Join[room]; jr != nil {
				if ev := findEvent(jr.Ephemeral.Events, "m.typing", nil); ev != nil {
					ids, _ := ev.Content.Raw["user_ids"].([]any)
					return ids, true
				}
			}
			return nil, false
		}
		// Start, then stop explicitly.
		if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, bob, since, "alice typing", func(r *mautrix.RespSync) bool {
			ids, ok := typing(r)
			return ok && len(ids) == 1 && ids[0] == alice.UserID.String()
		})
		if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, bob, since, "alice stopped typing", func(r *mautrix.RespSync) bool {
			ids, ok := typing(r)
			return ok && len(ids) == 0
		})
		// Start with a short timeout: it ends by itself.
		if _, err := alice.UserTyping(ctx, room, true, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, bob, since, "alice typing again", func(r *mautrix.RespSync) bool {
			ids, ok := typing(r)
			return ok && len(ids) == 1
		})
		syncUntil(t, bob, since, "the typing timeout", func(r *mautrix.RespSync) bool {
			ids, ok := typing(r)
			return ok && len(ids) == 0
		})
		// Typing in a room one is not in, or as someone else, is refused.
		carol := s.register(t, "carol")
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/typing/"+p(carol.UserID), carol.AccessToken, map[string]any{"typing": true, "timeout": 1000}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/typing/"+p(alice.UserID), bob.AccessToken, map[string]any{"typing": true, "timeout": 1000}).expectErr(t, 403, "M_FORBIDDEN")
	})
}

// TestSyncPrivateReceiptsAdvertised: the server stores and hides m.read.private
// (TestSyncUnreadAndReceipts), so it must say so in /versions, or Element
// (matrix-js-sdk) never sends private receipts: it needs v1.4 or the
// unstable flag org.matrix.msc2285.stable.
func TestSyncPrivateReceiptsAdvertised(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		r := s.do(t, "GET", "/_matrix/client/versions", "", nil).expect(t, 200)
		versions, _ := r.JSON["versions"].([]any)
		unstable, _ := r.JSON["unstable_features"].(map[string]any)
		ok := unstable["org.matrix.msc2285.stable"] == true
		for _, v := range versions {
			switch v {
			case "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13":
				ok = true
			}
		}
		if !ok {
			t.Errorf("private read receipts work but are not advertised: %s", r)
		}
	})
}

// TestSyncPresenceLastWriteWins: quick presence changes, as a client going
// idle and back makes them, always end in the last state set, and a read
// right after a write returns it.
func TestSyncPresenceLastWriteWins(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		path := v3 + "/presence/" + p(alice.UserID) + "/status"
		stale, lost := 0, 0
		for i := 0; i < 40; i++ {
			s.do(t, "PUT", path, alice.AccessToken, map[string]any{"presence": "online"}).expect(t, 200)
			s.do(t, "PUT", path, alice.AccessToken, map[string]any{"presence": "unavailable"}).expect(t, 200)
			s.do(t, "PUT", path, alice.AccessToken, map[string]any{"presence": "online"}).expect(t, 200)
			if s.do(t, "GET", path, bob.AccessToken, nil).expect(t, 200).str("presence") != "online" {
				stale++
				settled := false
				for j := 0; j < 100 && !settled; j++ {
					settled = s.do(t, "GET", path, bob.AccessToken, nil).str("presence") == "online"
					if !settled {
						time.Sleep(5 * time.Millisecond)
					}
				}
				if !settled {
					lost++
				}
			}
		}
		if stale > 0 || lost > 0 {
			t.Errorf("of 40 rounds of online→unavailable→online, %d read back a stale presence right after the PUT and %d never ended online (the last PUT was lost)", stale, lost)
		}
	})
}
