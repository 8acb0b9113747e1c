package syncapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
)

type bundled struct {
	EventID  string `json:"event_id"`
	Sender   string `json:"sender"`
	Type     string `json:"type"`
	Unsigned struct {
		Relations *struct {
			Thread *struct {
				LatestEvent struct {
					EventID string `json:"event_id"`
				} `json:"latest_event"`
				Count        int  `json:"count"`
				Participated bool `json:"current_user_participated"`
			} `json:"m.thread"`
			Replace *struct {
				EventID string `json:"event_id"`
				Sender  string `json:"sender"`
				TS      int64  `json:"origin_server_ts"`
			} `json:"m.replace"`
			Reference *struct {
				Chunk []struct {
					EventID string `json:"event_id"`
				} `json:"chunk"`
			} `json:"m.reference"`
		} `json:"m.relations"`
	} `json:"unsigned"`
}

func decodeBundled(t *testing.T, js json.RawMessage) bundled {
	t.Helper()
	var b bundled
	if err := json.Unmarshal(js, &b); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	return b
}

// pagedIDs follows next_batch from the first page (at most ten pages) and
// returns the IDs of the events in the chunks, in order.
func pagedIDs(t *testing.T, page func(from string) (chunk []json.RawMessage, next string, err error)) []string {
	t.Helper()
	var ids []string
	from := ""
	for i := 0; i < 10; i++ {
		chunk, next, err := page(from)
		if err != nil {
			t.Fatal(err)
		}
		for _, js := range chunk {
			ids = append(ids, decodeBundled(t, js).EventID)
		}
		if from = next; from == "" {
			break
		}
	}
	return ids
}

func rel(relType, parent string) map[string]any {
	return map[string]any{"rel_type": relType, "event_id": parent}
}

func TestRelationsAndAggregations(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test", "@carol:test")
		root := w.say(t, "@alice:test", room, "root")
		plain := w.say(t, "@alice:test", room, "no relations")
		r1 := w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply 1", "m.relates_to": rel("m.thread", root)})
		react := w.send(t, "@carol:test", room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
		// The event is served once before the next child arrives: the
		// cached aggregate must be refreshed.
		w.settle()
		ev, err := w.sync.Event(ctx, "@carol:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		if b := decodeBundled(t, ev); b.Unsigned.Relations == nil || b.Unsigned.Relations.Thread == nil || b.Unsigned.Relations.Thread.Count != 1 {
			t.Fatalf("first aggregation: %s", ev)
		}
		r2 := w.send(t, "@alice:test", room, "m.room.message", map[string]any{"body": "reply 2", "m.relates_to": rel("m.thread", root)})
		edit := w.send(t, "@alice:test", room, "m.room.message", map[string]any{"body": "* root!", "m.new_content": map[string]any{"body": "root!"},
			"m.relates_to": rel("m.replace", root)})
		// An edit by someone else is not valid and never aggregated.
		w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "* hijack", "m.new_content": map[string]any{"body": "hijack"},
			"m.relates_to": rel("m.replace", root)})
		ref := w.send(t, "@carol:test", room, "m.room.message", map[string]any{"body": "see above", "m.relates_to": rel("m.reference", root)})
		w.settle()

		for _, who := range []struct {
			user         string
			participated bool
		}{{"@alice:test", true}, {"@bob:test", true}, {"@carol:test", false}} {
			ev, err := w.sync.Event(ctx, who.user, "D", room, root)
			if err != nil {
				t.Fatal(err)
			}
			b := decodeBundled(t, ev)
			r := b.Unsigned.Relations
			if r == nil || r.Thread == nil || r.Thread.Count != 2 || r.Thread.LatestEvent.EventID != r2 || r.Thread.Participated != who.participated {
				t.Fatalf("%s: thread aggregation: %s", who.user, ev)
			}
			if r.Replace == nil || r.Replace.EventID != edit || r.Replace.Sender != "@alice:test" || r.Replace.TS == 0 {
				t.Fatalf("%s: replace aggregation: %s", who.user, ev)
			}
			if r.Reference == nil || len(r.Reference.Chunk) != 1 || r.Reference.Chunk[0].EventID != ref {
				t.Fatalf("%s: reference aggregation: %s", who.user, ev)
			}
		}
		if ev, err := w.sync.Event(ctx, "@alice:test", "D", room, plain); err != nil || decodeBundled(t, ev).Unsigned.Relations != nil {
			t.Fatalf("an event without relations got %s (%v)", ev, err)
		}
		// /messages carries the same aggregation.
		msgs, err := w.sync.Messages(ctx, syncapi.MessagesRequest{UserID: "@carol:test", RoomID: room, Dir: "b", Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, js := range msgs.Chunk {
			if b := decodeBundled(t, js); b.EventID == root {
				found = b.Unsigned.Relations != nil && b.Unsigned.Relations.Thread != nil && b.Unsigned.Relations.Thread.Count == 2
			}
		}
		if !found {
			t.Fatal("/messages: root without its thread aggregation")
		}

		// /relations: all children, newest first, in pages of two.
		all := pagedIDs(t, func(from string) ([]json.RawMessage, string, error) {
			resp, err := w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: root, Limit: 2, From: from})
			if err != nil {
				return nil, "", err
			}
			return resp.Chunk, resp.NextBatch, nil
		})
		if len(all) != 6 || all[len(all)-1] != r1 || all[len(all)-2] != react {
			t.Fatalf("relations: %v", all)
		}
		// Forwards, filtered by relation type and by event type.
		resp, err := w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: root, RelType: "m.thread", Forwards: true})
		if err != nil || len(resp.Chunk) != 2 || decodeBundled(t, resp.Chunk[0]).EventID != r1 {
			t.Fatalf("m.thread forwards: %v %v", resp, err)
		}
		resp, err = w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: root, RelType: "m.annotation", EventType: "m.reaction"})
		if err != nil || len(resp.Chunk) != 1 || decodeBundled(t, resp.Chunk[0]).EventID != react {
			t.Fatalf("m.annotation: %v %v", resp, err)
		}
		// Recursion: a reaction to a thread reply is found from the root.
		w.send(t, "@carol:test", room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": r1, "key": "x"}})
		w.settle()
		resp, err = w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: root, RelType: "m.annotation", Recurse: true})
		if err != nil || len(resp.Chunk) != 2 || resp.RecursionDepth == nil || *resp.RecursionDepth < 2 {
			t.Fatalf("recurse: %+v %v", resp, err)
		}
		// Errors: unknown event, event type without relation type, bad token, a stranger.
		if _, err := w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: "$nope"}); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("unknown event: %v", err)
		}
		if _, err := w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@carol:test", RoomID: room, EventID: root, From: "garbage"}); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("bad token: %v", err)
		}
		if _, err := w.sync.Relations(ctx, syncapi.RelationsRequest{UserID: "@mallory:test", RoomID: room, EventID: root}); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("stranger: %v", err)
		}

		// /threads: the root, for everyone; participated only for those who took part.
		th, err := w.sync.Threads(ctx, syncapi.ThreadsRequest{UserID: "@carol:test", RoomID: room})
		if err != nil || len(th.Chunk) != 1 || decodeBundled(t, th.Chunk[0]).EventID != root || decodeBundled(t, th.Chunk[0]).Unsigned.Relations.Thread.Count != 2 {
			t.Fatalf("threads: %+v %v", th, err)
		}
		if th, err := w.sync.Threads(ctx, syncapi.ThreadsRequest{UserID: "@carol:test", RoomID: room, Participated: true}); err != nil || len(th.Chunk) != 0 {
			t.Fatalf("carol participated: %+v %v", th, err)
		}
		if th, err := w.sync.Threads(ctx, syncapi.ThreadsRequest{UserID: "@bob:test", RoomID: room, Participated: true}); err != nil || len(th.Chunk) != 1 {
			t.Fatalf("bob participated: %+v %v", th, err)
		}

		// Redacting a thread reply and the edit removes them from the aggregations.
		sender := roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}
		if _, err := w.rooms.Redact(ctx, sender, room, r2, "", "x1"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.rooms.Redact(ctx, sender, room, edit, "", "x2"); err != nil {
			t.Fatal(err)
		}
		w.settle()
		ev, err = w.sync.Event(ctx, "@alice:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		b := decodeBundled(t, ev)
		if r := b.Unsigned.Relations; r == nil || r.Thread == nil || r.Thread.Count != 1 || r.Thread.LatestEvent.EventID != r1 || r.Replace != nil || r.Thread.Participated != true {
			t.Fatalf("after redactions: %s", ev)
		}
		// Redacting the parent keeps its thread.
		if _, err := w.rooms.Redact(ctx, sender, room, root, "", "x3"); err != nil {
			t.Fatal(err)
		}
		w.settle()
		ev, err = w.sync.Event(ctx, "@carol:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeBundled(t, ev).Unsigned.Relations; r == nil || r.Thread == nil || r.Thread.Count != 1 {
			t.Fatalf("redacted parent: %s", ev)
		}
	})
}

// TestThreadsPagination: threads come most recently active first, in pages.
func TestThreadsPagination(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test")
		var roots []string
		for i := 0; i < 5; i++ {
			roots = append(roots, w.say(t, "@alice:test", room, "root"))
		}
		// Replies in the order 3, 0, 4, 1, 2: the most recent activity is thread 2.
		for _, i := range []int{3, 0, 4, 1, 2} {
			w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply", "m.relates_to": rel("m.thread", roots[i])})
		}
		w.settle()
		got := pagedIDs(t, func(from string) ([]json.RawMessage, string, error) {
			resp, err := w.sync.Threads(ctx, syncapi.ThreadsRequest{UserID: "@alice:test", RoomID: room, Limit: 2, From: from})
			if err != nil {
				return nil, "", err
			}
			return resp.Chunk, resp.NextBatch, nil
		})
		want := []string{roots[2], roots[1], roots[4], roots[0], roots[3]}
		if len(got) != len(want) {
			t.Fatalf("got %v want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("position %d: got %v want %v", i, got, want)
			}
		}
	})
}

// TestNewEventsNeedNoAggregationQuery: an event that just committed is known
// to have no children, so the /sync that delivers it asks the database
// nothing about relations; once a child arrives, the parent is read again.
func TestNewEventsNeedNoAggregationQuery(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test")
		root := w.say(t, "@alice:test", room, "new")
		w.settle()
		if !syncapi.RelationsCached(w.sync, root) {
			t.Fatal("a new event is not known to have no relations")
		}
		w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply", "m.relates_to": rel("m.thread", root)})
		w.settle()
		if syncapi.RelationsCached(w.sync, root) {
			t.Fatal("the parent's aggregate survived a new child")
		}
		ev, err := w.sync.Event(ctx, "@alice:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeBundled(t, ev).Unsigned.Relations; r == nil || r.Thread == nil || r.Thread.Count != 1 {
			t.Fatalf("aggregation: %s", ev)
		}
		if !syncapi.RelationsCached(w.sync, root) {
			t.Fatal("the loaded aggregate was not cached")
		}
	})
}

// TestAggregationsIgnoreOtherRooms: children sent in another room that
// name an event by its ID are not aggregated into it: they neither make a
// reader a thread participant nor show up as edits or references (whose
// event IDs would leak from a room the reader may not be in).
func TestAggregationsIgnoreOtherRooms(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test", "@carol:test")
		other := w.room(t, "@alice:test", "@carol:test")
		root := w.say(t, "@alice:test", room, "root")
		r1 := w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply", "m.relates_to": rel("m.thread", root)})
		w.send(t, "@carol:test", other, "m.room.message", map[string]any{"body": "elsewhere", "m.relates_to": rel("m.thread", root)})
		w.send(t, "@alice:test", other, "m.room.message", map[string]any{"body": "* moved", "m.new_content": map[string]any{"body": "moved"},
			"m.relates_to": rel("m.replace", root)})
		w.send(t, "@carol:test", other, "m.room.message", map[string]any{"body": "see", "m.relates_to": rel("m.reference", root)})
		w.settle()
		ev, err := w.sync.Event(ctx, "@carol:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeBundled(t, ev).Unsigned.Relations
		if r == nil || r.Thread == nil || r.Thread.Count != 1 || r.Thread.LatestEvent.EventID != r1 {
			t.Fatalf("thread aggregation: %s", ev)
		}
		if r.Thread.Participated {
			t.Errorf("a reply in another room made carol a participant: %s", ev)
		}
		if r.Replace != nil {
			t.Errorf("an edit from another room was aggregated: %s", ev)
		}
		if r.Reference != nil {
			t.Errorf("a reference from another room was aggregated: %s", ev)
		}
	})
}

// TestThreadSummaryAfterLeaving: a user who left a room does not get,
// bundled into an event they may still see, the latest reply of its thread
// when that reply came after they left.
func TestThreadSummaryAfterLeaving(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test", "@carol:test")
		root := w.say(t, "@alice:test", room, "root")
		w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply", "m.relates_to": rel("m.thread", root)})
		if err := w.rooms.Leave(ctx, "@carol:test", room, ""); err != nil {
			t.Fatal(err)
		}
		secret := w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "after carol left", "m.relates_to": rel("m.thread", root)})
		w.settle()
		// bob sees the new reply; carol still sees the root, but not the reply.
		ev, err := w.sync.Event(ctx, "@bob:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeBundled(t, ev).Unsigned.Relations; r == nil || r.Thread == nil || r.Thread.LatestEvent.EventID != secret {
			t.Fatalf("bob: %s", ev)
		}
		ev, err = w.sync.Event(ctx, "@carol:test", "D", room, root)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeBundled(t, ev).Unsigned.Relations; r != nil && r.Thread != nil && r.Thread.LatestEvent.EventID == secret {
			t.Fatalf("carol got a reply sent after she left: %s", ev)
		}
	})
}

// TestTransactionIDOnlyForItsSender: two users on devices of the same ID
// (clients choose device IDs): the sender's device sees its transaction_id,
// the other user's device does not, directly or as a thread's latest event.
func TestTransactionIDOnlyForItsSender(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		room := w.room(t, "@alice:test", "@bob:test")
		root := w.say(t, "@alice:test", room, "root")
		reply := w.send(t, "@bob:test", room, "m.room.message", map[string]any{"body": "reply", "m.relates_to": rel("m.thread", root)})
		w.settle()
		for _, c := range []struct {
			user, event string
			want        bool
		}{
			{"@bob:test", reply, true},
			{"@alice:test", reply, false},
			{"@alice:test", root, true},
			{"@bob:test", root, false},
		} {
			ev, err := w.sync.Event(ctx, c.user, "D", room, c.event)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Unsigned struct {
					TxnID     string `json:"transaction_id"`
					Relations struct {
						Thread struct {
							Latest struct {
								Unsigned struct {
									TxnID string `json:"transaction_id"`
								} `json:"unsigned"`
							} `json:"latest_event"`
						} `json:"m.thread"`
					} `json:"m.relations"`
				} `json:"unsigned"`
			}
			if err := json.Unmarshal(ev, &got); err != nil {
				t.Fatal(err)
			}
			if (got.Unsigned.TxnID != "") != c.want {
				t.Errorf("%s reading %s: transaction_id %q, want one: %v", c.user, c.event, got.Unsigned.TxnID, c.want)
			}
			if c.event == root && c.user == "@alice:test" && got.Unsigned.Relations.Thread.Latest.Unsigned.TxnID != "" {
				t.Errorf("alice sees bob's transaction_id in the thread's latest event: %s", ev)
			}
		}
	})
}
