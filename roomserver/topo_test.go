package roomserver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func prevEventsOf(t *testing.T, db *storage.DB, eventID string) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT prev_event_id FROM prev_events WHERE event_id = $1 ORDER BY prev_event_id`, eventID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

func getEvent(t *testing.T, h *harness, id string) Event {
	t.Helper()
	ev, err := h.s.GetEvent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTopologicalDepth: an event built on old history and received after
// newer ones is placed one above its parent, below the room's live end,
// whatever depth it claims; its prev_events edges are stored with it; the
// next local event merges it above both branches, also after a restart.
func TestTopologicalDepth(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, ver := range []string{"1", "11"} {
			t.Run("v"+ver, func(t *testing.T) {
				h := newHarness(t, db)
				ctx := context.Background()
				res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: ver})
				if err != nil {
					t.Fatal(err)
				}
				roomID := res.RoomID
				ext, _ := h.s.Extremities(ctx, roomID)
				base := getEvent(t, h, ext[0])
				var newest Event
				for i := 0; i < 3; i++ {
					newest = getEvent(t, h, sendText(t, h, roomID, fmt.Sprint("live ", i), fmt.Sprint("l", i)))
				}
				if newest.Topo != base.Topo+3 || newest.Topo != newest.Depth {
					t.Fatalf("live events: base topo %d, newest topo %d depth %d", base.Topo, newest.Topo, newest.Depth)
				}
				if got := prevEventsOf(t, db, newest.EventID); len(got) != 1 {
					t.Fatalf("prev_events of a local event: %v", got)
				}

				// Received late, built on base: its place is base's + 1.
				late := buildOn(t, h, roomID, "@alice:test", base.EventID, "m.room.message", nil, `{"body":"late"}`)
				lateEv, err := h.s.InputEvent(ctx, late)
				if err != nil {
					t.Fatal(err)
				}
				if lateEv.Pos <= newest.Pos || lateEv.Topo != base.Topo+1 {
					t.Fatalf("late event at pos %d topo %d; newest at pos %d topo %d", lateEv.Pos, lateEv.Topo, newest.Pos, newest.Topo)
				}
				if got := getEvent(t, h, late.EventID()); got.Topo != lateEv.Topo {
					t.Fatalf("stored topo %d, answered %d", got.Topo, lateEv.Topo)
				}
				if got := prevEventsOf(t, db, late.EventID()); !slices.Equal(got, []string{base.EventID}) {
					t.Fatalf("prev_events of the late event: %v", got)
				}

				// A claimed depth is not believed where the parents are known.
				for _, claimed := range []int64{1_000_000, 1} {
					lie := buildDetached(t, h, roomID, base.EventID, claimed, fmt.Sprintf(`{"body":"depth %d"}`, claimed))
					ev, err := h.s.InputEvent(ctx, lie)
					if err != nil {
						t.Fatal(err)
					}
					if ev.Depth != claimed || ev.Topo != base.Topo+1 {
						t.Fatalf("claimed depth %d: stored depth %d topo %d, want topo %d", claimed, ev.Depth, ev.Topo, base.Topo+1)
					}
				}

				// A local event merges the branches, above the highest.
				merge := getEvent(t, h, sendText(t, h, roomID, "merge", "m"))
				if merge.Topo != newest.Topo+1 {
					t.Fatalf("merge topo %d, want %d", merge.Topo, newest.Topo+1)
				}
				if got := prevEventsOf(t, db, merge.EventID); len(got) != 4 || !slices.Contains(got, newest.EventID) || !slices.Contains(got, late.EventID()) {
					t.Fatalf("prev_events of the merge: %v", got)
				}
				// A restarted roomserver reads the extremities' places.
				h.s.Close()
				h2 := newHarness(t, db)
				next := getEvent(t, h2, sendText(t, h2, roomID, "after restart", "r"))
				if next.Topo != merge.Topo+1 {
					t.Fatalf("after a restart topo %d, want %d", next.Topo, merge.Topo+1)
				}
				if back, err := BackwardExtremities(ctx, db, roomID); err != nil || len(back) != 0 {
					t.Fatalf("backward extremities of a whole room: %v %v", back, err)
				}
			})
		}
	})
}

// TestTopologicalDepthAcrossAGap: an event whose parent is known only as
// an outlier (its state fetched, the events in between not) takes its
// claimed depth, and the parent is a backward extremity.
func TestTopologicalDepthAcrossAGap(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		ext, _ := h.s.Extremities(ctx, roomID)
		base := getEvent(t, h, ext[0])
		stateAtBase, err := h.s.StateIDsAfter(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		var stateIDs []string
		for _, id := range stateAtBase {
			stateIDs = append(stateIDs, id)
		}
		peer := &peerDAG{events: map[string]gomatrixserverlib.PDU{}, state: map[string][]string{}, gapOnly: true}
		prev := base.EventID
		var chain []gomatrixserverlib.PDU
		for i := 0; i < 4; i++ {
			ev := buildDetached(t, h, roomID, prev, base.Depth+int64(i)+1, fmt.Sprintf(`{"body":"m%d"}`, i))
			peer.events[ev.EventID()], peer.state[ev.EventID()] = ev, stateIDs
			peer.order = append(peer.order, ev.EventID())
			chain = append(chain, ev)
			prev = ev.EventID()
		}
		h.s.opts.Fetcher = peer
		last, err := h.s.InputEventFrom(ctx, "peer", chain[3])
		if err != nil {
			t.Fatal(err)
		}
		if last.Topo != base.Topo+4 || last.Topo != last.Depth {
			t.Fatalf("across the gap: topo %d depth %d, base topo %d", last.Topo, last.Depth, base.Topo)
		}
		back, err := BackwardExtremities(ctx, db, roomID)
		if err != nil || !slices.Equal(back, []string{chain[2].EventID()}) {
			t.Fatalf("backward extremities %v (%v), want the outlier %s", back, err, chain[2].EventID())
		}
		// Backfilled, the events in between take their places below it.
		for i, ev := range chain[:2] {
			got, err := h.s.InputEvent(ctx, ev)
			if err != nil {
				t.Fatal(err)
			}
			if got.Pos <= last.Pos || got.Topo != base.Topo+int64(i)+1 {
				t.Fatalf("backfilled m%d: pos %d topo %d", i, got.Pos, got.Topo)
			}
		}
	})
}

// TestMigrationBackfillsTopologicalOrder: the statements of migration 0018
// that fill topo and prev_events for existing rows give what the write
// path gives, in room versions with both forms of prev_events.
func TestMigrationBackfillsTopologicalOrder(t *testing.T) {
	ms, err := storage.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var fill []string
	for _, m := range ms {
		if m.Version != 18 {
			continue
		}
		for _, line := range strings.Split(m.SQL, "\n") {
			if strings.HasPrefix(line, "UPDATE ") || strings.HasPrefix(line, "INSERT ") {
				fill = append(fill, line)
			}
		}
	}
	if len(fill) != 3 {
		t.Fatalf("migration 18 has %d backfill statements, want 3", len(fill))
	}
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		h := newHarness(t, db)
		for _, ver := range []string{"1", "11"} {
			res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: ver})
			if err != nil {
				t.Fatal(err)
			}
			sendText(t, h, res.RoomID, "hello", "t"+ver)
		}
		snapshot := func() string {
			var b strings.Builder
			rows, err := db.Query(ctx, `SELECT event_id, topo FROM events ORDER BY pos`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id string
				var topo int64
				if err := rows.Scan(&id, &topo); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s %d\n", id, topo)
			}
			rows.Close()
			rows, err = db.Query(ctx, `SELECT room_id, prev_event_id, event_id FROM prev_events ORDER BY event_id, prev_event_id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var r, p, e string
				if err := rows.Scan(&r, &p, &e); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s %s <- %s\n", r, p, e)
			}
			return b.String()
		}
		want := snapshot()
		if strings.Count(want, "<-") < 10 {
			t.Fatalf("too few edges to compare:\n%s", want)
		}
		if _, err := db.Exec(ctx, `DELETE FROM prev_events`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, `UPDATE events SET topo = 0`); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range fill {
			if q := strings.TrimSpace(storage.ForDialect(stmt, db.Dialect())); q != "" {
				if _, err := db.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		}
		if got := snapshot(); got != want {
			t.Fatalf("after the migration's backfill:\n%s\nwritten:\n%s", got, want)
		}
	})
}
