package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// buildOn signs an event whose prev_events are chosen by the test, with auth
// events taken from the state after prev.
func buildOn(t *testing.T, h *harness, roomID, sender, prev, typ string, stateKey *string, content string) gomatrixserverlib.PDU {
	t.Helper()
	ctx := context.Background()
	var pdu gomatrixserverlib.PDU
	err := h.s.withRoom(ctx, roomID, func(r *room) error {
		st, err := h.s.stateAfterAll(ctx, r, []string{prev})
		if err != nil {
			return err
		}
		prevs, err := h.s.loadPDUs(ctx, r.version, []string{prev})
		if err != nil || prevs[prev] == nil {
			return fmt.Errorf("prev event %s: %v", prev, err)
		}
		proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
			Content: spec.RawJSON(content), PrevEvents: []string{prev}, Depth: prevs[prev].Depth() + 1}
		b := r.version.NewEventBuilderFromProtoEvent(proto)
		if err := b.AddAuthEvents(stateProvider(st)); err != nil {
			return err
		}
		pdu, err = b.Build(nowTime(), h.s.serverName, h.s.opts.Key.ID, h.s.opts.Key.Private)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pdu
}

// TestBranchesMeet makes the room's DAG fork (two topic changes on the same
// parent) and checks that the current state is resolved, that both branches
// are forward extremities, and that the next local event merges them.
func TestBranchesMeet(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, ver := range []string{"1", "6", "11", "12"} {
			t.Run("v"+ver, func(t *testing.T) {
				h := newHarness(t, db)
				ctx := context.Background()
				res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: ver})
				if err != nil {
					t.Fatal(err)
				}
				ext, _ := h.s.Extremities(ctx, res.RoomID)
				base := ext[0]
				empty := ""
				a := buildOn(t, h, res.RoomID, "@alice:test", base, "m.room.topic", &empty, `{"topic":"A"}`)
				b := buildOn(t, h, res.RoomID, "@alice:test", base, "m.room.topic", &empty, `{"topic":"B"}`)
				if _, err := h.s.InputEvent(ctx, a); err != nil {
					t.Fatal(err)
				}
				if _, err := h.s.InputEvent(ctx, b); err != nil {
					t.Fatal(err)
				}
				ext, _ = h.s.Extremities(ctx, res.RoomID)
				if len(ext) != 2 {
					t.Fatalf("want two extremities after the fork, got %v", ext)
				}
				topic, err := h.s.CurrentStateEvent(ctx, res.RoomID, "m.room.topic", "")
				if err != nil {
					t.Fatal(err)
				}
				// The resolved topic is one of the branches, the same one
				// that gomatrixserverlib's resolution picks.
				if topic.EventID != a.EventID() && topic.EventID != b.EventID() {
					t.Fatalf("current topic %s is neither branch", topic.EventID)
				}
				id, err := h.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"merge"}`), TxnID: "m"})
				if err != nil {
					t.Fatal(err)
				}
				merged, err := h.s.GetEvent(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				var body struct {
					Prev []any `json:"prev_events"`
				}
				_ = json.Unmarshal(merged.JSON, &body)
				if len(body.Prev) != 2 {
					t.Fatalf("the merging event has prev_events %v", body.Prev)
				}
				ext, _ = h.s.Extremities(ctx, res.RoomID)
				if len(ext) != 1 || ext[0] != id {
					t.Fatalf("after the merge extremities are %v", ext)
				}
				// An event from a branch that does not pass the auth rules
				// (its sender never joined) is refused.
				bad := buildOn(t, h, res.RoomID, "@mallory:test", base, "m.room.topic", &empty, `{"topic":"C"}`)
				if _, err := h.s.InputEvent(ctx, bad); !merr.Is(err, "M_FORBIDDEN") {
					t.Fatalf("unauthorised branch event: %v", err)
				}
				// Re-inputting a known event is a no-op.
				if ev, err := h.s.InputEvent(ctx, a); err != nil || ev.EventID != a.EventID() {
					t.Fatalf("re-input: %v %v", ev.EventID, err)
				}
			})
		}
	})
}

// TestInputTakesTheLocalWritePath: an event input from elsewhere is written
// as a local one is — its unsigned data says what state it replaced, a
// redaction takes effect, and its state is stored as a difference (a few
// snapshot entries), not whole.
func TestInputTakesTheLocalWritePath(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		empty := ""
		if _, err := h.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: roomID, Type: "m.room.topic", StateKey: &empty, Content: json.RawMessage(`{"topic":"old"}`)}); err != nil {
			t.Fatal(err)
		}
		entries := func() (n int) {
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM state_snapshot_entries`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		ext, _ := h.s.Extremities(ctx, roomID)
		topic := buildOn(t, h, roomID, "@alice:test", ext[0], "m.room.topic", &empty, `{"topic":"new"}`)
		before := entries()
		if _, err := h.s.InputEvent(ctx, topic); err != nil {
			t.Fatal(err)
		}
		if n := entries() - before; n > 2 {
			t.Errorf("an input state event stored %d snapshot entries; want a difference (1)", n)
		}
		stored, err := h.s.GetEvent(ctx, topic.EventID())
		if err != nil {
			t.Fatal(err)
		}
		var u struct {
			Unsigned struct {
				PrevContent   map[string]any `json:"prev_content"`
				ReplacesState string         `json:"replaces_state"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(stored.JSON, &u)
		if u.Unsigned.PrevContent["topic"] != "old" || u.Unsigned.ReplacesState == "" {
			t.Errorf("input state event's unsigned: %+v", u.Unsigned)
		}
		// A message, then its redaction, both input.
		msg := buildOn(t, h, roomID, "@alice:test", topic.EventID(), "m.room.message", nil, `{"body":"secret"}`)
		if _, err := h.s.InputEvent(ctx, msg); err != nil {
			t.Fatal(err)
		}
		before = entries()
		// (The room is of the default version, 11: redacts is in the content.)
		red := buildOn(t, h, roomID, "@alice:test", msg.EventID(), "m.room.redaction", nil, `{"redacts":"`+msg.EventID()+`"}`)
		if _, err := h.s.InputEvent(ctx, red); err != nil {
			t.Fatal(err)
		}
		if n := entries() - before; n != 0 {
			t.Errorf("input messages stored %d snapshot entries", n)
		}
		got, err := h.s.GetEvent(ctx, msg.EventID())
		if err != nil {
			t.Fatal(err)
		}
		if got.RedactedBy != red.EventID() || strings.Contains(string(got.JSON), "secret") {
			t.Errorf("the input redaction did not take effect: %s", got.JSON)
		}
	})
}

// TestRejectedSoftFailedAndOutliers: an event failing the auth rules is
// rejected and kept as such (refused again without work, never served);
// one that passes at its place in the DAG but not against the current
// state (its sender was banned since) is soft-failed — no position, not an
// extremity, never served, yet later events may build on it; an outlier is
// known by its ID alone until it arrives as a timeline event.
func TestRejectedSoftFailedAndOutliers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		if err := h.s.Invite(ctx, "@alice:test", roomID, "@bob:test", "", false); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.Join(ctx, "@bob:test", roomID, ""); err != nil {
			t.Fatal(err)
		}
		served := func(id string) bool {
			evs, err := EventsByID(ctx, db, []string{id})
			if err != nil {
				t.Fatal(err)
			}
			return len(evs) > 0
		}
		ext, _ := h.s.Extremities(ctx, roomID)
		joined := ext[0]

		// Rejected: mallory never joined.
		bad := buildOn(t, h, roomID, "@mallory:test", joined, "m.room.message", nil, `{"body":"spam"}`)
		if _, err := h.s.InputEvent(ctx, bad); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("unauthorised event: %v", err)
		}
		if _, err := h.s.InputEvent(ctx, bad); !merr.Is(err, "M_FORBIDDEN") || !strings.Contains(err.Error(), "rejected before") {
			t.Fatalf("the rejected event again: %v", err)
		}
		if served(bad.EventID()) {
			t.Fatal("a rejected event is served")
		}

		// Soft-failed: bob writes on top of his join, but is banned meanwhile.
		if err := h.s.Ban(ctx, "@alice:test", roomID, "@bob:test", "bye"); err != nil {
			t.Fatal(err)
		}
		pos := h.s.Position()
		late := buildOn(t, h, roomID, "@bob:test", joined, "m.room.message", nil, `{"body":"from before the ban"}`)
		_, err := h.s.InputEvent(ctx, late)
		var sf *SoftFailed
		if !errors.As(err, &sf) {
			t.Fatalf("a banned user's event from before the ban: %v, want soft-failed", err)
		}
		if served(late.EventID()) || h.s.Position() != pos {
			t.Fatal("a soft-failed event got a position or is served")
		}
		if ext, _ := h.s.Extremities(ctx, roomID); slices.Contains(ext, late.EventID()) {
			t.Fatal("a soft-failed event is a forward extremity")
		}
		if _, err := h.s.InputEvent(ctx, late); !errors.As(err, &sf) {
			t.Fatalf("the soft-failed event again: %v", err)
		}
		// alice builds on it: accepted, with the state that holds there.
		after := buildOn(t, h, roomID, "@alice:test", late.EventID(), "m.room.message", nil, `{"body":"on top"}`)
		if _, err := h.s.InputEvent(ctx, after); err != nil {
			t.Fatalf("an event built on a soft-failed one: %v", err)
		}
		if !served(after.EventID()) {
			t.Fatal("the event built on the soft-failed one is not in the timeline")
		}

		// An outlier: known, not served, until it comes as a timeline event.
		topic := ""
		out := buildOn(t, h, roomID, "@alice:test", after.EventID(), "m.room.topic", &topic, `{"topic":"outlier first"}`)
		if err := h.s.StoreOutliers(ctx, roomID, []gomatrixserverlib.PDU{out}); err != nil {
			t.Fatal(err)
		}
		if served(out.EventID()) {
			t.Fatal("an outlier is served")
		}
		if _, err := h.s.InputEvent(ctx, out); err != nil {
			t.Fatalf("the outlier as a timeline event: %v", err)
		}
		if !served(out.EventID()) {
			t.Fatal("the outlier did not join the timeline")
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM event_outliers WHERE event_id = $1`, out.EventID()).Scan(&n); err != nil || n != 0 {
			t.Fatalf("the promoted outlier is still an outlier (%d, %v)", n, err)
		}
	})
}
