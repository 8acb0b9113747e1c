package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// EventFetcher is what the roomserver needs from the network to fill a gap
// in a room's DAG: the server an event came from is asked for the events
// between what is known here and it (/get_missing_events), and, when the
// gap is too wide, for the state at the unknown prev_events (/state_ids,
// then /event for what is unknown here). The federation client implements
// it; the roomserver owns the interface.
type EventFetcher interface {
	MissingEvents(ctx context.Context, origin, roomID string, ver gomatrixserverlib.RoomVersion, earliest, latest []string, limit int) ([]gomatrixserverlib.PDU, error)
	StateIDs(ctx context.Context, origin, roomID, eventID string) (state, authChain []string, err error)
	Event(ctx context.Context, origin string, ver gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error)
	// Backfill asks for the events before from (/backfill), newest first.
	Backfill(ctx context.Context, origin, roomID string, ver gomatrixserverlib.RoomVersion, from []string, limit int) ([]gomatrixserverlib.PDU, error)
}

// Bounds on the work one event from another server may cause.
const (
	maxMissingEvents = 20   // events asked for with /get_missing_events
	maxGapPrevs      = 5    // unknown prev_events whose state is fetched
	maxStateFetch    = 1000 // events fetched to complete one state
	// maxGapFills is how many gaps one server's events may be filling at
	// once: a server cannot make this one fetch without bound by sending
	// many events with unknown parents at the same time.
	maxGapFills = 2
)

// gapSlots bounds the gap fills under way per origin server.
type gapSlots struct {
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// take waits for a slot of origin's; the returned function gives it back.
func (g *gapSlots) take(ctx context.Context, origin string) (func(), error) {
	g.mu.Lock()
	if g.slots == nil {
		g.slots = map[string]chan struct{}{}
	}
	ch := g.slots[origin]
	if ch == nil {
		ch = make(chan struct{}, maxGapFills)
		g.slots[origin] = ch
	}
	g.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// InputEventFrom is InputEvent for an event received from origin: where
// its prev_events are unknown, the gap is filled from origin first (with
// Options.Fetcher; without one, InputEvent answers M_MISSING_PREV_EVENTS).
func (s *Service) InputEventFrom(ctx context.Context, origin string, pdu gomatrixserverlib.PDU) (Event, error) {
	if done, err := s.outOfRoomEnd(ctx, origin, pdu); done || err != nil {
		return Event{}, err
	}
	if s.opts.Fetcher != nil && origin != "" && !s.buildsOnExtremities(pdu) {
		if missing, err := s.unknownPrevs(ctx, pdu); err != nil {
			return Event{}, err
		} else if len(missing) > 0 {
			release, err := s.gaps.take(ctx, origin)
			if err != nil {
				return Event{}, err
			}
			err = s.fillGap(ctx, origin, pdu)
			release()
			if err != nil {
				return Event{}, err
			}
		}
	}
	return s.InputEvent(ctx, pdu)
}

// buildsOnExtremities tells, from memory, whether every prev_event of pdu
// is a forward extremity of its room: the common case of a live event,
// which needs no gap filling and no query to know it.
func (s *Service) buildsOnExtremities(pdu gomatrixserverlib.PDU) bool {
	r, ok := s.rooms.Get(pdu.RoomID().String())
	if !ok {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range pdu.PrevEventIDs() {
		if !slices.Contains(r.extremities, p) {
			return false
		}
	}
	return len(pdu.PrevEventIDs()) > 0
}

// unknownPrevs lists the prev_events of pdu that nothing can be built on
// here: neither in the timeline nor outside it with their state.
func (s *Service) unknownPrevs(ctx context.Context, pdu gomatrixserverlib.PDU) ([]string, error) {
	prevs := pdu.PrevEventIDs()
	evs, err := EventsByID(ctx, s.db, prevs)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, e := range evs {
		known[e.EventID] = true
	}
	outs, err := selectOutliers(ctx, s.db, prevs)
	if err != nil {
		return nil, err
	}
	for id, o := range outs {
		if o.status != statusRejected && o.snapshot != 0 {
			known[id] = true
		}
	}
	var out []string
	for _, id := range prevs {
		if !known[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// fillGap makes pdu's prev_events known: the missing events in between,
// oldest first, through the same checks as any event; what is still
// unknown then gets its state from origin and is kept as an outlier with
// that state.
func (s *Service) fillGap(ctx context.Context, origin string, pdu gomatrixserverlib.PDU) error {
	missing, err := s.unknownPrevs(ctx, pdu)
	if err != nil || len(missing) == 0 {
		return err
	}
	roomID := pdu.RoomID().String()
	log := logging.From(ctx).WithField("room_id", roomID).WithField("event_id", pdu.EventID())
	ext, err := s.Extremities(ctx, roomID)
	if err != nil {
		return err
	}
	f := s.opts.Fetcher
	between, err := f.MissingEvents(ctx, origin, roomID, pdu.Version(), ext, []string{pdu.EventID()}, maxMissingEvents)
	if err != nil {
		log.WithError(err).Info("get_missing_events failed; asking for the state instead")
	}
	if len(between) > maxMissingEvents {
		between = between[:maxMissingEvents]
	}
	for _, ev := range parentsFirst(between) {
		if ev.RoomID().String() != roomID || ev.EventID() == pdu.EventID() {
			continue
		}
		if _, err := s.InputEvent(ctx, ev); err != nil && !inputVerdict(err) {
			return err
		}
	}
	if missing, err = s.unknownPrevs(ctx, pdu); err != nil || len(missing) == 0 {
		return err
	}
	if len(missing) > maxGapPrevs {
		return merr.Custom(400, "M_MISSING_PREV_EVENTS", "Too many unknown prev_events (%d)", len(missing))
	}
	for _, prev := range missing {
		if err := s.importStateAt(ctx, origin, roomID, pdu.Version(), prev); err != nil {
			return fmt.Errorf("state at %s from %s: %w", prev, origin, err)
		}
	}
	return nil
}

// parentsFirst orders events so that each comes after those of its
// prev_events that are among them (depth breaks ties, and orders what a
// cycle, which signed events cannot form, would leave).
func parentsFirst(evs []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	byID := make(map[string]gomatrixserverlib.PDU, len(evs))
	for _, ev := range evs {
		byID[ev.EventID()] = ev
	}
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	done := make(map[string]bool, len(evs))
	var visit func(ev gomatrixserverlib.PDU, depth int)
	visit = func(ev gomatrixserverlib.PDU, depth int) {
		if done[ev.EventID()] || depth > len(evs) {
			return
		}
		done[ev.EventID()] = true
		for _, p := range ev.PrevEventIDs() {
			if parent, ok := byID[p]; ok {
				visit(parent, depth+1)
			}
		}
		out = append(out, ev)
	}
	for _, ev := range evs {
		visit(ev, 0)
	}
	return out
}

// inputVerdict: InputEvent judged the event (rejected, soft-failed, or
// still missing its own prev_events) rather than failing.
func inputVerdict(err error) bool {
	var sf *SoftFailed
	return errors.As(err, &sf) || merr.Is(err, "M_FORBIDDEN") || merr.Is(err, "M_MISSING_PREV_EVENTS")
}

// importStateAt fetches from origin the event prev and the state before it,
// keeps the events this server lacks as outliers (auth chain first), and
// keeps prev as an outlier with that state, so events built on it find it.
func (s *Service) importStateAt(ctx context.Context, origin, roomID string, ver gomatrixserverlib.RoomVersion, prev string) error {
	f := s.opts.Fetcher
	stateIDs, authIDs, err := f.StateIDs(ctx, origin, roomID, prev)
	if err != nil {
		return err
	}
	want := append(append([]string{prev}, authIDs...), stateIDs...)
	fetched := map[string]gomatrixserverlib.PDU{}
	for _, id := range want {
		if _, ok := fetched[id]; ok {
			continue
		}
		known, err := s.knownPDU(ctx, id)
		if err != nil {
			return err
		}
		if known {
			continue
		}
		if len(fetched) >= maxStateFetch {
			return merr.Custom(400, "M_LIMIT_EXCEEDED", "The state at %s needs more than %d unknown events", prev, maxStateFetch)
		}
		ev, err := f.Event(ctx, origin, ver, id)
		if err != nil {
			return fmt.Errorf("event %s: %w", id, err)
		}
		if ev.EventID() != id || ev.RoomID().String() != roomID {
			return fmt.Errorf("%s answered another event for %s", origin, id)
		}
		fetched[id] = ev
	}
	prevEv := fetched[prev]
	delete(fetched, prev)
	list := make([]gomatrixserverlib.PDU, 0, len(fetched))
	for _, ev := range fetched {
		list = append(list, ev)
	}
	// Auth events before the events they authorise: depth orders them.
	sort.Slice(list, func(i, j int) bool { return list[i].Depth() < list[j].Depth() })
	if err := s.StoreOutliers(ctx, roomID, list); err != nil {
		return err
	}
	return s.withRoom(ctx, roomID, func(r *room) error {
		pdus, err := s.loadPDUs(ctx, r.version, stateIDs)
		if err != nil {
			return err
		}
		before := make(map[stateKey]gomatrixserverlib.PDU, len(stateIDs))
		for _, id := range stateIDs {
			p := pdus[id]
			if p == nil || p.StateKey() == nil {
				return fmt.Errorf("state event %s is unusable", id)
			}
			before[stateKey{p.Type(), *p.StateKey()}] = p
		}
		if prevEv == nil {
			// Known already, as an outlier without state: load it.
			got, err := s.loadPDUs(ctx, r.version, []string{prev})
			if err != nil || got[prev] == nil {
				return fmt.Errorf("prev event %s: %v", prev, err)
			}
			prevEv = got[prev]
		}
		if err := gomatrixserverlib.Allowed(prevEv, stateProvider(before), userIDForSender); err != nil {
			return s.storeWithState(ctx, r, prevEv, before, statusRejected, authMessage(err))
		}
		return s.storeWithState(ctx, r, prevEv, before, statusOutlier, "")
	})
}
