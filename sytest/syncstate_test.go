package sytest

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// filteredSync is one device's /sync loop with an inline filter.
type filteredSync struct {
	s      *server
	cli    *mautrix.Client
	filter string
	since  string
}

// next runs a sync (initial the first time, then incremental with
// timeout=0) and returns the response.
func (y *filteredSync) next(t *testing.T) *mautrix.RespSync {
	t.Helper()
	q := url.Values{"filter": {y.filter}, "timeout": {"0"}}
	if y.since != "" {
		q.Set("since", y.since)
	}
	r, _ := y.s.rawSync(t, y.cli, q)
	y.since = r.NextBatch
	return r
}

// members maps the member events of a list to "user=membership".
func members(evs []*event.Event) string {
	var out []string
	for _, ev := range evs {
		if ev.Type.Type == "m.room.member" {
			out = append(out, fmt.Sprintf("%s=%v", ev.GetStateKey(), ev.Content.Raw["membership"]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func want(users ...any) string {
	var out []string
	for i := 0; i < len(users); i += 2 {
		out = append(out, fmt.Sprintf("%s=%s", users[i], users[i+1]))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func stateMembers(r *mautrix.RespSync, room id.RoomID) string {
	if jr := r.Rooms.Join[room]; jr != nil {
		return members(jr.State.Events)
	}
	return ""
}

func fill(t *testing.T, cli *mautrix.Client, room id.RoomID, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		sendText(t, cli, room, fmt.Sprintf("%s filler %d", cli.UserID.Localpart(), i))
	}
}

// TestSyncLazyMembersAcrossResponses: with lazy-loaded members, a response
// carries the member events of the timeline's senders the device has not
// been sent yet, and every membership change in a gap; members it was sent
// already are not sent again unless include_redundant_members; a client
// that syncs again from an older token gets them again.
func TestSyncLazyMembersAcrossResponses(t *testing.T) {
	const lazy = `{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}}}`
	const redundant = `{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob, charlie, dave := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "charlie"), s.register(t, "dave")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "lazy"})
		join(t, bob, room.String())
		join(t, charlie, room.String())
		fill(t, bob, room, 10)
		a := &filteredSync{s: s, cli: alice, filter: lazy}
		a2 := &filteredSync{s: s, cli: s.login(t, "alice"), filter: redundant} // another device
		if got := stateMembers(a.next(t), room); got != want(alice.UserID, "join", bob.UserID, "join") {
			t.Fatalf("initial sync members %q: want alice (oneself) and bob (the sender)", got)
		}
		a2.next(t)

		// A new sender: their member event, once.
		sendText(t, charlie, room, "charlie speaks")
		if got := stateMembers(a.next(t), room); got != want(charlie.UserID, "join") {
			t.Fatalf("incremental members %q: want charlie, the new sender", got)
		}
		old := a.since
		sendText(t, charlie, room, "charlie again")
		sendText(t, bob, room, "bob again")
		r := a.next(t)
		if got := stateMembers(r, room); got != "" {
			t.Fatalf("members already sent were sent again: %q", got)
		}
		// include_redundant_members sends the senders' members every time
		// (but not one's own, who did not speak).
		if got := stateMembers(a2.next(t), room); got != want(bob.UserID, "join", charlie.UserID, "join") {
			t.Fatalf("redundant members %q: want bob and charlie", got)
		}
		// Syncing again from the token of the response that carried
		// charlie's member event: it is not sent again.
		back := &filteredSync{s: s, cli: alice, filter: lazy, since: old}
		if got := stateMembers(back.next(t), room); got != "" {
			t.Fatalf("from the older token charlie (sent before it) came again: %q", got)
		}

		// A gap: dave joins in it and stays silent, charlie speaks. Dave's
		// join is a change in the gap; charlie was sent already.
		join(t, dave, room.String())
		fill(t, charlie, room, 20)
		r = a.next(t)
		if jr := r.Rooms.Join[room]; jr == nil || !jr.Timeline.Limited {
			t.Fatalf("want a gapped sync: %+v", jr)
		}
		if got := stateMembers(r, room); got != want(dave.UserID, "join") {
			t.Fatalf("gapped sync members %q: want dave's join from the gap", got)
		}
		// Dave leaves in the next gap; only his leave comes.
		if _, err := dave.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		fill(t, charlie, room, 20)
		if got := stateMembers(a.next(t), room); got != want(dave.UserID, "leave") {
			t.Fatalf("gapped sync members %q: want dave's leave", got)
		}
		// A member who spoke before the first sync and speaks again after a
		// gap: their member event comes with their messages.
		bobFresh := &filteredSync{s: s, cli: bob, filter: lazy}
		bobFresh.next(t) // sees charlie only (the last ten messages)
		fill(t, alice, room, 10)
		fill(t, charlie, room, 1)
		if got := stateMembers(bobFresh.next(t), room); !strings.Contains(got, alice.UserID.String()+"=join") {
			t.Fatalf("an old member speaking again after a gap: members %q lack alice", got)
		}
		// A leave in a non-gapped sync: erin, whose member event the device
		// never had (she spoke before its first sync), leaves; her leave
		// comes in state too.
		erin := s.register(t, "erin")
		join(t, erin, room.String())
		sendText(t, erin, room, "erin speaks")
		fill(t, bob, room, 10)
		e := &filteredSync{s: s, cli: s.login(t, "alice"), filter: lazy}
		e.next(t)
		if _, err := erin.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		fill(t, bob, room, 3)
		r = e.next(t)
		if jr := r.Rooms.Join[room]; jr == nil || jr.Timeline.Limited {
			t.Fatalf("want a non-gapped sync")
		}
		if got := stateMembers(r, room); got != want(erin.UserID, "leave") {
			t.Fatalf("non-gapped sync members %q: want erin's leave", got)
		}
	})
}

// TestSyncStateTheTimelineLeavesOut: state events that a timeline filter
// leaves out of the window come in the state block, so the client's view of
// the room's state is right.
func TestSyncStateTheTimelineLeavesOut(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		const onlyMessages = `{"room":{"timeline":{"types":["m.room.message"],"limit":10}}}`
		a := &filteredSync{s: s, cli: alice, filter: onlyMessages}
		a.next(t)
		// Not gapped: a rename between two messages.
		sendText(t, alice, room, "one")
		if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "renamed"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "two")
		r := a.next(t)
		jr := r.Rooms.Join[room]
		if jr == nil || jr.Timeline.Limited || len(jr.Timeline.Events) != 2 {
			t.Fatalf("want the two messages, not limited: %+v", jr)
		}
		name := findEvent(jr.State.Events, "m.room.name", sk(""))
		if name == nil || name.Content.Raw["name"] != "renamed" {
			t.Fatalf("the rename the timeline filter left out is not in state: %v", eventIDs(jr.State.Events))
		}
		if again := a.next(t); again.Rooms.Join[room] != nil {
			t.Fatalf("the next sync repeats the room")
		}

		// A newly joined room with an empty timeline filter: the whole state.
		const noTimeline = `{"room":{"timeline":{"types":[]}}}`
		b := &filteredSync{s: s, cli: bob, filter: noTimeline}
		b.next(t)
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "latest"}); err != nil {
			t.Fatal(err)
		}
		join(t, bob, room.String())
		r = b.next(t)
		jr = r.Rooms.Join[room]
		if jr == nil || len(jr.Timeline.Events) != 0 {
			t.Fatalf("newly joined room: %+v", jr)
		}
		for _, k := range []string{"m.room.create", "m.room.name", "m.room.topic", "m.room.power_levels"} {
			if findEvent(jr.State.Events, k, sk("")) == nil {
				t.Errorf("newly joined room's state lacks %s", k)
			}
		}
		if !memberOf(jr.State.Events, bob.UserID, "join") {
			t.Errorf("newly joined room's state lacks bob's join")
		}

		// A filtered timeline is filled up to its limit from further back.
		const three = `{"room":{"timeline":{"types":["m.room.message"],"limit":3}}}`
		c := &filteredSync{s: s, cli: alice, filter: three}
		c.next(t)
		sendText(t, alice, room, "m1")
		for i := 0; i < 5; i++ {
			if _, err := alice.SendMessageEvent(ctx, room, event.Type{Type: "a.made.up.filler.type", Class: event.MessageEventType}, map[string]any{"n": i}); err != nil {
				t.Fatal(err)
			}
		}
		sendText(t, alice, room, "m2")
		sendText(t, alice, room, "m3")
		jr = c.next(t).Rooms.Join[room]
		if jr == nil || strings.Join(bodies(jr.Timeline.Events), ",") != "m1,m2,m3" || jr.Timeline.Limited {
			t.Fatalf("filtered timeline: %v (limited %v), want m1,m2,m3 not limited", bodies(jr.Timeline.Events), jr != nil && jr.Timeline.Limited)
		}
		sendText(t, alice, room, "m4")
		for i := 0; i < 4; i++ {
			sendText(t, alice, room, fmt.Sprintf("n%d", i))
		}
		jr = c.next(t).Rooms.Join[room]
		if jr == nil || strings.Join(bodies(jr.Timeline.Events), ",") != "n1,n2,n3" || !jr.Timeline.Limited {
			t.Fatalf("filtered timeline: %v, want n1,n2,n3 limited", bodies(jr.Timeline.Events))
		}
	})
}

// TestSyncCurrentStateInPrivateHistory: with history visible to members
// only, events from while a user was away are hidden from them, but those
// that are the room's current state (who joined meanwhile) still show in
// their timeline; a room joined and left within one window comes with its
// state in the leave section.
func TestSyncCurrentStateInPrivateHistory(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		creator, away, invitee := s.register(t, "creator"), s.register(t, "filteredSync"), s.register(t, "invitee")
		for _, before := range []int{0, 15} {
			room := createRoom(t, creator, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			join(t, away, room.String())
			if _, err := creator.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
				t.Fatal(err)
			}
			invite(t, creator, room, invitee.UserID)
			_, since := syncNow(t, away, "")
			fill(t, creator, room, before)
			if _, err := away.LeaveRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			join(t, invitee, room.String())
			for i := 0; i < 3; i++ {
				sendText(t, creator, room, fmt.Sprintf("while away %d", i))
			}
			join(t, away, room.String())
			r, _ := syncNow(t, away, since)
			jr := r.Rooms.Join[room]
			if jr == nil {
				t.Fatalf("%d messages before: no room", before)
			}
			if !memberOf(jr.Timeline.Events, invitee.UserID, "join") {
				t.Errorf("%d messages before: the invitee's join (current state) is not in the timeline: %v", before, eventIDs(jr.Timeline.Events))
			}
			for _, b := range bodies(jr.Timeline.Events) {
				if strings.Contains(b, "while away") {
					t.Errorf("%d messages before: a message from while filteredSync was away is shown: %q", before, b)
				}
			}
		}

		// Joined and left within one window: the leave section has the state.
		room := createRoom(t, creator, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := creator.SendStateEvent(ctx, room, event.Type{Type: "a.madeup.test.state", Class: event.StateEventType}, "", map[string]any{"my_key": 1}); err != nil {
			t.Fatal(err)
		}
		const f = `{"room":{"timeline":{"types":[]},"state":{"types":["a.madeup.test.state"]},"include_leave":true}}`
		y := &filteredSync{s: s, cli: invitee, filter: f}
		y.next(t)
		join(t, invitee, room.String())
		if _, err := invitee.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		lr := y.next(t).Rooms.Leave[room]
		if lr == nil || len(lr.State.Events) != 1 || lr.State.Events[0].Content.Raw["my_key"] != float64(1) {
			t.Fatalf("joined and left in one window: leave section %+v", lr)
		}
	})
}

// TestMessagesPagesPastHiddenHistory: paging back through /messages passes
// over the events history visibility hides (from while the user was away)
// and reaches the ones before, which they saw as a member; end is given
// whenever more may follow, and is left out at the room's start.
func TestMessagesPagesPastHiddenHistory(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		bob, alice := s.register(t, "bob"), s.register(t, "alice")
		room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
			t.Fatal(err)
		}
		join(t, alice, room.String())
		for _, b := range []string{"seen 1", "seen 2", "seen 3"} {
			sendText(t, bob, room, b)
		}
		if _, err := alice.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			sendText(t, bob, room, fmt.Sprintf("hidden %d", i))
		}
		join(t, alice, room.String())
		sendText(t, bob, room, "back")
		var got []string
		from, pages := "", 0
		for {
			page, err := alice.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 2)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, ev := range page.Chunk {
				if b, ok := ev.Content.Raw["body"].(string); ok {
					got = append(got, b)
				}
			}
			if page.End == "" || pages > 40 {
				break
			}
			from = page.End
		}
		joined := strings.Join(got, ",")
		if joined != "back,seen 3,seen 2,seen 1" {
			t.Fatalf("paged back through %d pages: %s; want back,seen 3,seen 2,seen 1", pages, joined)
		}
	})
}
