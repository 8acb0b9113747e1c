package roomserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/merr"
)

// InputEvent adds an already signed event whose prev_events may be any
// known events of the room — an event from another server, or a branch of
// the DAG. The state before it is the state after its prev_events, resolved
// with the room version's state resolution where they differ; the event must
// pass the auth rules against that state. The room's current state becomes
// the resolution of the state after every forward extremity.
func (s *Service) InputEvent(ctx context.Context, pdu gomatrixserverlib.PDU) (Event, error) {
	if err := checkStorable(pdu); err != nil {
		return Event{}, err
	}
	roomID := pdu.RoomID().String()
	var out Event
	err := s.withRoom(ctx, roomID, func(r *room) error {
		if pdu.Version() != r.version.Version() {
			return merr.BadJSON("Event is for room version %s, the room is %s", pdu.Version(), r.version.Version())
		}
		// Known already? One query asks the timeline and the outliers.
		inTimeline, outside, err := eventStatus(ctx, s.db, pdu.EventID())
		if err != nil {
			return err
		}
		if inTimeline {
			known, err := EventsByID(ctx, s.db, []string{pdu.EventID()})
			if err != nil || len(known) == 0 {
				return fmt.Errorf("read known event %s: %v", pdu.EventID(), err)
			}
			out = known[0]
			return nil
		}
		var seen map[string]outlier
		if outside {
			if seen, err = selectOutliers(ctx, s.db, []string{pdu.EventID()}); err != nil {
				return err
			}
		}
		switch o := seen[pdu.EventID()]; o.status {
		case statusRejected:
			return merr.Forbidden("This event was rejected before: %s", o.reason)
		case statusSoftFailed:
			return &SoftFailed{Reason: o.reason}
		}
		prevs := pdu.PrevEventIDs()
		if len(prevs) == 0 {
			return merr.BadJSON("Event has no prev_events")
		}
		// The checks on receipt of a PDU: the auth rules against the
		// event's own auth events, then against the state before it; an
		// event failing either is rejected (and kept as such).
		if err := s.checkOwnAuth(ctx, r, pdu); err != nil {
			return s.reject(ctx, pdu, err.Error())
		}
		before, err := s.stateAfterAll(ctx, r, prevs)
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.Allowed(pdu, stateProvider(before), userIDForSender); err != nil {
			return s.reject(ctx, pdu, authMessage(err))
		}
		// Then against the room's current state: an event that passes at
		// its place in the DAG but not now (a sender banned since) is
		// soft-failed — kept, built on, never shown nor an extremity. An
		// event built on the room's only extremity has the current state
		// before it: the check above was that one.
		linear := len(prevs) == 1 && len(r.extremities) == 1 && prevs[0] == r.extremities[0]
		if !linear {
			if err := gomatrixserverlib.Allowed(pdu, stateProvider(r.state), userIDForSender); err != nil {
				return s.softFail(ctx, r, pdu, before, authMessage(err))
			}
		}
		// The same write as a local event's, from the state before it.
		d := newDraft(r)
		d.base, d.state = before, before
		d.push(pdu, eventMeta{})
		if seen[pdu.EventID()].status == statusOutlier {
			d.promoted = []string{pdu.EventID()}
		}
		ext := []string{pdu.EventID()}
		for _, e := range r.extremities {
			if !slices.Contains(prevs, e) {
				ext = append(ext, e)
			}
		}
		d.extremities, d.depth = ext, max(r.depth, pdu.Depth())
		if len(ext) > 1 {
			others, err := s.stateAfterAll(ctx, r, ext[1:])
			if err != nil {
				return err
			}
			if d.current, err = s.resolve(ctx, r, []map[stateKey]gomatrixserverlib.PDU{d.state, others}); err != nil {
				return err
			}
		}
		evs, err := s.commit(ctx, d, nil, nil)
		if err != nil {
			return err
		}
		out = evs[0]
		return nil
	})
	return out, err
}

// stateAfterAll is the state after a set of events of the room, resolved
// where they disagree.
func (s *Service) stateAfterAll(ctx context.Context, r *room, ids []string) (map[stateKey]gomatrixserverlib.PDU, error) {
	if len(ids) == 1 && len(r.extremities) == 1 && ids[0] == r.extremities[0] {
		return r.state, nil
	}
	evs, err := EventsByID(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	if len(evs) != len(ids) {
		// A soft-failed event may be built on: its state is stored too.
		more, err := outlierEvents(ctx, s.db, r.version, ids)
		if err != nil {
			return nil, err
		}
		for _, e := range more {
			if e.Snapshot != 0 {
				evs = append(evs, e)
			}
		}
	}
	if len(evs) != len(ids) {
		return nil, merr.Custom(400, "M_MISSING_PREV_EVENTS", "Some prev_events are unknown to this server")
	}
	var sets []map[stateKey]gomatrixserverlib.PDU
	for _, e := range evs {
		if e.RoomID != r.id {
			return nil, merr.BadJSON("prev_event %s is in another room", e.EventID)
		}
		ids, err := s.StateIDsAfter(ctx, e)
		if err != nil {
			return nil, err
		}
		list := make([]string, 0, len(ids))
		for _, id := range ids {
			list = append(list, id)
		}
		pdus, err := s.loadPDUs(ctx, r.version, list)
		if err != nil {
			return nil, err
		}
		set := make(map[stateKey]gomatrixserverlib.PDU, len(ids))
		for k, id := range ids {
			if p := pdus[id]; p != nil {
				set[stateKey{k[0], k[1]}] = p
			}
		}
		sets = append(sets, set)
	}
	if len(sets) == 1 {
		return sets[0], nil
	}
	return s.resolve(ctx, r, sets)
}

// resolve runs the room version's state resolution over several state sets.
func (s *Service) resolve(ctx context.Context, r *room, sets []map[stateKey]gomatrixserverlib.PDU) (map[stateKey]gomatrixserverlib.PDU, error) {
	same := true
	for _, set := range sets[1:] {
		if !sameState(sets[0], set) {
			same = false
			break
		}
	}
	if same {
		return sets[0], nil
	}
	stateSets := make([][]gomatrixserverlib.PDU, len(sets))
	var all []gomatrixserverlib.PDU
	for i, set := range sets {
		for _, k := range sortedStateKeys(set) {
			stateSets[i] = append(stateSets[i], set[k])
			all = append(all, set[k])
		}
	}
	authEvents, err := s.authChain(ctx, r, all)
	if err != nil {
		return nil, err
	}
	notRejected := func(string) bool { return false }
	var resolved []gomatrixserverlib.PDU
	if r.version.StateResAlgorithm() == gomatrixserverlib.StateResV2_1 {
		// gomatrixserverlib's state-set based v2.1 path loses events that
		// only a privileged creator could send (it never adds the create
		// event to its auth provider), so v12 rooms use the event-list entry
		// point, which resolves them correctly.
		resolved, err = gomatrixserverlib.ResolveConflicts(r.version.Version(), all, authEvents, userIDForSender, notRejected)
	} else {
		resolved, err = gomatrixserverlib.ResolveConflictsNew(r.version.Version(), stateSets, authEvents, userIDForSender, notRejected)
	}
	if err != nil {
		return nil, fmt.Errorf("state resolution in %s: %w", r.id, err)
	}
	out := make(map[stateKey]gomatrixserverlib.PDU, len(resolved))
	for _, p := range resolved {
		if sk := p.StateKey(); sk != nil {
			out[stateKey{p.Type(), *sk}] = p
		}
	}
	return out, nil
}

func sameState(a, b map[stateKey]gomatrixserverlib.PDU) bool {
	if len(a) != len(b) {
		return false
	}
	for k, p := range a {
		q := b[k]
		if q == nil || q.EventID() != p.EventID() {
			return false
		}
	}
	return true
}

// authChain loads every event in the auth chains of the given events.
func (s *Service) authChain(ctx context.Context, r *room, from []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]gomatrixserverlib.PDU{}
	var queue []string
	for _, p := range from {
		seen[p.EventID()] = p
		queue = append(queue, p.AuthEventIDs()...)
	}
	for len(queue) > 0 {
		var want []string
		for _, id := range queue {
			if _, ok := seen[id]; !ok {
				want = append(want, id)
				seen[id] = nil
			}
		}
		queue = nil
		if len(want) == 0 {
			break
		}
		pdus, err := s.loadPDUs(ctx, r.version, want)
		if err != nil {
			return nil, err
		}
		for id, p := range pdus {
			seen[id] = p
			queue = append(queue, p.AuthEventIDs()...)
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(seen))
	for _, p := range seen {
		if p != nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Extremities returns the room's forward extremities (for tests and federation).
func (s *Service) Extremities(ctx context.Context, roomID string) ([]string, error) {
	var out []string
	err := s.withRoom(ctx, roomID, func(r *room) error {
		out = append(out, r.extremities...)
		return nil
	})
	return out, err
}
