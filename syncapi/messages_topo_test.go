package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
)

// lateRoom is a room whose history holds an event received after newer
// ones: a0, then l0..l3 sent live, then late — built elsewhere on a0 and
// input as an event from another server is.
type lateRoom struct {
	w      *world
	roomID string
	ids    map[string]string // body → event ID
}

func newLateRoom(t *testing.T, db *storage.DB) *lateRoom {
	t.Helper()
	ctx := context.Background()
	w, _ := worldOn(t, db, false)
	res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	lr := &lateRoom{w: w, roomID: res.RoomID, ids: map[string]string{}}
	for _, body := range []string{"a0", "l0", "l1", "l2", "l3"} {
		id, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: res.RoomID,
			Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`), TxnID: body})
		if err != nil {
			t.Fatal(err)
		}
		lr.ids[body] = id
	}
	base, err := w.rooms.GetEvent(ctx, lr.ids["a0"])
	if err != nil {
		t.Fatal(err)
	}
	state, err := w.rooms.StateIDsAfter(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	proto := &gomatrixserverlib.ProtoEvent{SenderID: "@alice:test", RoomID: res.RoomID, Type: "m.room.message",
		Content: spec.RawJSON(`{"msgtype":"m.text","body":"late"}`), PrevEvents: []string{base.EventID}, Depth: base.Depth + 1,
		AuthEvents: []string{state[[2]string{"m.room.create", ""}], state[[2]string{"m.room.power_levels", ""}], state[[2]string{"m.room.member", "@alice:test"}]}}
	pdu, err := ver.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), "test", key.ID, key.Private)
	if err != nil {
		t.Fatal(err)
	}
	late, err := w.rooms.InputEvent(ctx, pdu)
	if err != nil {
		t.Fatal(err)
	}
	if late.Pos <= base.Pos+4 {
		t.Fatalf("the late event has position %d, before the live ones", late.Pos)
	}
	lr.ids["late"] = late.EventID
	w.settle()
	return lr
}

// bodies names a chunk's messages by body ("" for other events).
func bodies(t *testing.T, evs []json.RawMessage) []string {
	t.Helper()
	out := make([]string, len(evs))
	for i, raw := range evs {
		var e struct {
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "m.room.message" {
			out[i] = e.Content.Body
		} else {
			out[i] = e.Type
		}
	}
	return out
}

func (lr *lateRoom) page(t *testing.T, dir, from, to string, limit int, o *syncapi.Opts) *syncapi.MessagesResponse {
	t.Helper()
	r, err := lr.w.sync.Messages(context.Background(), syncapi.MessagesRequest{UserID: "@alice:test", DeviceID: "D", RoomID: lr.roomID,
		Dir: dir, From: from, To: to, Limit: limit, Opts: o})
	if err != nil {
		t.Fatalf("messages dir=%s from=%q to=%q: %v", dir, from, to, err)
	}
	return r
}

// all pages through the room from from in pages of limit.
func (lr *lateRoom) all(t *testing.T, dir, from string, limit int) []string {
	t.Helper()
	var out []string
	for i := 0; i < 100; i++ {
		r := lr.page(t, dir, from, "", limit, nil)
		out = append(out, bodies(t, r.Chunk)...)
		if r.End == "" {
			return out
		}
		from = r.End
	}
	t.Fatal("pagination does not end")
	return nil
}

// messagesOnly keeps the bodies of messages.
func messagesOnly(list []string) []string {
	var out []string
	for _, b := range list {
		if !strings.HasPrefix(b, "m.room.") {
			out = append(out, b)
		}
	}
	return out
}

// TestMessagesTopologicalOrder: /messages shows an event received after
// newer ones where it belongs in the DAG — after its parent and the
// sibling that arrived before it, before the rest — not as the newest, in
// both directions, across pages and from every kind of token.
func TestMessagesTopologicalOrder(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		lr := newLateRoom(t, db)
		history := []string{"l3", "l2", "l1", "late", "l0", "a0"} // newest first

		full := lr.page(t, "b", "", "", 100, nil)
		got := messagesOnly(bodies(t, full.Chunk))
		if !slices.Equal(got, history) {
			t.Fatalf("backwards from the newest: %v, want %v", got, history)
		}
		if full.End != "" {
			t.Fatalf("a page with everything has an end: %q", full.End)
		}
		everything := bodies(t, full.Chunk)
		for _, limit := range []int{1, 2, 3} {
			if got := lr.all(t, "b", "", limit); !slices.Equal(got, everything) {
				t.Fatalf("backwards in pages of %d: %v, want %v", limit, got, everything)
			}
			fwd := lr.all(t, "f", "", limit)
			slices.Reverse(fwd)
			if !slices.Equal(fwd, everything) {
				t.Fatalf("forwards in pages of %d: %v, want the reverse of %v", limit, fwd, everything)
			}
		}

		// The first page's start, an older stream token, goes on as the
		// newest does.
		first := lr.page(t, "b", "", "", 2, nil)
		if got := messagesOnly(bodies(t, first.Chunk)); !slices.Equal(got, []string{"l3", "l2"}) {
			t.Fatalf("first page %v", got)
		}
		if again := lr.page(t, "b", first.Start, "", 2, nil); !slices.Equal(bodies(t, again.Chunk), bodies(t, first.Chunk)) {
			t.Fatalf("from the start token %q: %v", first.Start, bodies(t, again.Chunk))
		}
		second := lr.page(t, "b", first.End, "", 2, nil)
		if got := bodies(t, second.Chunk); !slices.Equal(got, []string{"l1", "late"}) {
			t.Fatalf("second page from %q: %v", first.End, got)
		}
		// to bounds the window: backwards from the newest to the second
		// page's end gives the two pages.
		if got := bodies(t, lr.page(t, "b", "", second.End, 10, nil).Chunk); !slices.Equal(got, []string{"l3", "l2", "l1", "late"}) {
			t.Fatalf("to %q: %v", second.End, got)
		}
		// Forwards from the second page's end: back up through it.
		if got := bodies(t, lr.page(t, "f", second.End, "", 3, nil).Chunk); !slices.Equal(got, []string{"late", "l1", "l2"}) {
			t.Fatalf("forwards from %q: %v", second.End, got)
		}

		// A stream token from before topological tokens existed ("t" and
		// l3's position) covers everything up to l3 — and the late event
		// in its place.
		l3, err := lr.w.rooms.GetEvent(context.Background(), lr.ids["l3"])
		if err != nil {
			t.Fatal(err)
		}
		old := fmt.Sprintf("t%d", l3.Pos)
		if got := messagesOnly(lr.all(t, "b", old, 2)); !slices.Equal(got, history) {
			t.Fatalf("backwards from %s: %v", old, got)
		}
		if got := messagesOnly(lr.all(t, "b", fmt.Sprintf("t%d", l3.Pos-1), 2)); !slices.Equal(got, history[1:]) {
			t.Fatalf("backwards from before l3: %v", got)
		}

		// A filter and lazy-loaded members still apply.
		o := syncapi.DefaultOpts()
		o.LazyMembers = true
		o.TimelineMatch = func(typ, sender string, hasURL bool) bool { return typ == "m.room.message" }
		fp := lr.page(t, "b", "", "", 5, o)
		if got := bodies(t, fp.Chunk); !slices.Equal(got, history[:5]) {
			t.Fatalf("filtered page: %v", got)
		}
		if len(fp.State) != 1 {
			t.Fatalf("lazy members: %d state events", len(fp.State))
		}
	})
}

// TestSyncPrevBatchPagesTopologically: /sync's timeline stays in the order
// events arrived (the late event last), and its prev_batch pages back
// through the history in topological order, leaving out nothing before it.
func TestSyncPrevBatchPagesTopologically(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		lr := newLateRoom(t, db)
		o := syncapi.DefaultOpts()
		o.TimelineLimit = 2
		resp, err := lr.w.sync.Sync(context.Background(), syncapi.SyncRequest{UserID: "@alice:test", DeviceID: "D", Opts: o})
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[lr.roomID]
		if jr == nil {
			t.Fatal("the room is not in the sync")
		}
		if got := bodies(t, jr.Timeline.Events); !slices.Equal(got, []string{"l3", "late"}) {
			t.Fatalf("sync timeline %v, want arrival order", got)
		}
		got := messagesOnly(lr.all(t, "b", jr.Timeline.PrevBatch, 2))
		// Everything before l2 in stream order, and late where it belongs.
		if want := []string{"l2", "l1", "late", "l0", "a0"}; !slices.Equal(got, want) {
			t.Fatalf("from prev_batch %q: %v, want %v", jr.Timeline.PrevBatch, got, want)
		}
		// A sync token as from: the newest, as with no from.
		if got := messagesOnly(lr.all(t, "b", resp.NextBatch, 3)); !slices.Equal(got, []string{"l3", "l2", "l1", "late", "l0", "a0"}) {
			t.Fatalf("from the sync token: %v", got)
		}
	})
}

// TestContextAroundALateEvent: /context around the late event shows its
// neighbours in the DAG, and its tokens page on from there.
func TestContextAroundALateEvent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		lr := newLateRoom(t, db)
		c, err := lr.w.sync.Context(context.Background(), "@alice:test", "D", lr.roomID, lr.ids["late"], 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(t, []json.RawMessage{c.Event}); got[0] != "late" {
			t.Fatalf("context event %v", got)
		}
		if got := bodies(t, c.EventsBefore); !slices.Equal(got, []string{"l0", "a0"}) {
			t.Fatalf("events before: %v", got)
		}
		if got := bodies(t, c.EventsAfter); !slices.Equal(got, []string{"l1", "l2"}) {
			t.Fatalf("events after: %v", got)
		}
		if got := bodies(t, lr.page(t, "f", c.End, "", 10, nil).Chunk); !slices.Equal(got, []string{"l3"}) {
			t.Fatalf("forwards from the context's end: %v", got)
		}
		back := messagesOnly(bodies(t, lr.page(t, "b", c.Start, "", 100, nil).Chunk))
		if len(back) != 0 {
			t.Fatalf("backwards from the context's start, messages %v", back)
		}
		// Around a live event, the late one is among its neighbours.
		c, err = lr.w.sync.Context(context.Background(), "@alice:test", "D", lr.roomID, lr.ids["l1"], 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, a := bodies(t, c.EventsBefore), bodies(t, c.EventsAfter); !slices.Equal(b, []string{"late"}) || !slices.Equal(a, []string{"l2"}) {
			t.Fatalf("around l1: before %v after %v", b, a)
		}
	})
}
