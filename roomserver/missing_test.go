package roomserver

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// peerDAG answers as another server holding events this one lacks would:
// the events between two points, the state at an event, an event by ID.
// gapOnly makes it answer get_missing_events with nothing, as a server
// whose gap is too wide does.
type peerDAG struct {
	events  map[string]gomatrixserverlib.PDU
	order   []string // oldest first
	state   map[string][]string
	gapOnly bool
	asked   []string
}

func (p *peerDAG) MissingEvents(_ context.Context, origin, roomID string, _ gomatrixserverlib.RoomVersion, earliest, latest []string, limit int) ([]gomatrixserverlib.PDU, error) {
	p.asked = append(p.asked, "missing")
	if p.gapOnly {
		return nil, nil
	}
	var out []gomatrixserverlib.PDU
	for i := len(p.order) - 1; i >= 0 && len(out) < limit; i-- {
		if id := p.order[i]; id != latest[0] {
			out = append(out, p.events[id])
		}
	}
	return out, nil
}

func (p *peerDAG) StateIDs(_ context.Context, origin, roomID, eventID string) ([]string, []string, error) {
	p.asked = append(p.asked, "state_ids "+eventID)
	st, ok := p.state[eventID]
	if !ok {
		return nil, nil, fmt.Errorf("no state for %s", eventID)
	}
	return st, nil, nil
}

func (p *peerDAG) Event(_ context.Context, origin string, _ gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error) {
	p.asked = append(p.asked, "event "+eventID)
	if ev, ok := p.events[eventID]; ok {
		return ev, nil
	}
	return nil, merr.NotFound("no event %s", eventID)
}

func (p *peerDAG) Backfill(_ context.Context, origin, roomID string, _ gomatrixserverlib.RoomVersion, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	p.asked = append(p.asked, "backfill")
	var out []gomatrixserverlib.PDU
	started := false
	for i := len(p.order) - 1; i >= 0 && len(out) < limit; i-- {
		if slices.Contains(from, p.order[i]) {
			started = true
		}
		if started {
			out = append(out, p.events[p.order[i]])
		}
	}
	return out, nil
}

// TestFillingGaps: an event whose prev_events are unknown here is
// preceded by the events in between, fetched from the server it came from
// and checked like any; when the server cannot give them, the state at the
// unknown prev_event is fetched and the event accepted on it.
func TestFillingGaps(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, gapOnly := range []bool{false, true} {
			t.Run(fmt.Sprint("gapOnly=", gapOnly), func(t *testing.T) {
				h, roomID := roomWithHarness(t, db)
				ctx := context.Background()
				ext, _ := h.s.Extremities(ctx, roomID)
				base := ext[0]
				baseEv, err := h.s.GetEvent(ctx, base)
				if err != nil {
					t.Fatal(err)
				}
				stateAtBase, err := h.s.StateIDsAfter(ctx, baseEv)
				if err != nil {
					t.Fatal(err)
				}
				var stateIDs []string
				for _, id := range stateAtBase {
					stateIDs = append(stateIDs, id)
				}
				// Five messages built elsewhere on base; this server sees
				// only the last.
				peer := &peerDAG{events: map[string]gomatrixserverlib.PDU{}, state: map[string][]string{}, gapOnly: gapOnly}
				prev, depth := base, baseEv.Depth
				var chain []gomatrixserverlib.PDU
				for i := 0; i < 5; i++ {
					depth++
					ev := buildDetached(t, h, roomID, prev, depth, fmt.Sprintf(`{"body":"m%d"}`, i))
					peer.events[ev.EventID()], peer.state[ev.EventID()] = ev, stateIDs
					peer.order = append(peer.order, ev.EventID())
					chain = append(chain, ev)
					prev = ev.EventID()
				}
				h.s.opts.Fetcher = peer
				last := chain[4]
				if _, err := h.s.InputEvent(ctx, last); !merr.Is(err, "M_MISSING_PREV_EVENTS") {
					t.Fatalf("without the fetcher: %v", err)
				}
				if _, err := h.s.InputEventFrom(ctx, "peer", last); err != nil {
					t.Fatalf("input with the gap filled: %v (asked %v)", err, peer.asked)
				}
				served := func(ev gomatrixserverlib.PDU) bool {
					evs, err := EventsByID(ctx, db, []string{ev.EventID()})
					if err != nil {
						t.Fatal(err)
					}
					return len(evs) == 1
				}
				if !served(last) {
					t.Fatal("the event is not in the timeline")
				}
				for i, ev := range chain[:4] {
					if got := served(ev); got == gapOnly {
						t.Errorf("m%d in the timeline: %v (gap only %v; asked %v)", i, got, gapOnly, peer.asked)
					}
				}
				// Without the events in between, nothing says base is an
				// ancestor of the last event: both are forward extremities.
				ext, _ = h.s.Extremities(ctx, roomID)
				if want := map[bool]int{false: 1, true: 2}[gapOnly]; len(ext) != want || !slices.Contains(ext, last.EventID()) {
					t.Errorf("extremities %v, want the last event (and base when only the gap's state came)", ext)
				}
				if !gapOnly {
					return
				}
				// Backfill brings the gap's events in under the known
				// history: negative positions, in topological order.
				from, err := BackwardExtremities(ctx, db, roomID)
				if err != nil || len(from) != 1 || from[0] != chain[3].EventID() {
					t.Fatalf("backward extremities %v %v", from, err)
				}
				n, err := h.s.backfillFrom(ctx, roomID, from, []string{"peer"}, 10)
				if err != nil || n != 4 {
					t.Fatalf("backfilled %d: %v (asked %v)", n, err, peer.asked)
				}
				var prevTopo int64
				for i, ev := range append(chain[:4:4], last) {
					evs, err := EventsByID(ctx, db, []string{ev.EventID()})
					if err != nil || len(evs) != 1 {
						t.Fatalf("m%d after backfill: %v %v", i, evs, err)
					}
					if i < 4 && evs[0].Pos >= 0 {
						t.Errorf("m%d has position %d: backfilled history must stay below every stream token", i, evs[0].Pos)
					}
					if evs[0].Topo <= prevTopo {
						t.Errorf("m%d topo %d after %d", i, evs[0].Topo, prevTopo)
					}
					prevTopo = evs[0].Topo
				}
				if from, _ := BackwardExtremities(ctx, db, roomID); len(from) != 0 {
					t.Errorf("backward extremities after backfill: %v", from)
				}
				if got, _ := EventsAfter(ctx, db, 0, h.s.Position(), 1000); slices.ContainsFunc(got, func(e Event) bool { return e.EventID == chain[0].EventID() }) {
					t.Error("a backfilled event reached the stream")
				}
			})
		}
	})
}

// buildDetached signs a message on prev, at depth, without storing it.
func buildDetached(t *testing.T, h *harness, roomID, prev string, depth int64, content string) gomatrixserverlib.PDU {
	t.Helper()
	var pdu gomatrixserverlib.PDU
	err := h.s.withRoom(context.Background(), roomID, func(r *room) error {
		proto := &gomatrixserverlib.ProtoEvent{SenderID: "@alice:test", RoomID: roomID, Type: "m.room.message",
			Content: []byte(content), PrevEvents: []string{prev}, Depth: depth}
		b := r.version.NewEventBuilderFromProtoEvent(proto)
		if err := b.AddAuthEvents(stateProvider(r.state)); err != nil {
			return err
		}
		var err error
		pdu, err = b.Build(nowTime(), h.s.serverName, h.s.opts.Key.ID, h.s.opts.Key.Private)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pdu
}
