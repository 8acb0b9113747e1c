package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/notifier"
	"github.com/haven-chat/haven/syncapi/streams"
)

// The rooms stream: a room's timeline and state block for a user between
// two positions (joined, left and peeked rooms), with history visibility,
// the filter, ignored users, lazy-loaded members (roomstate.go), the room
// summary and the unread counts (streams.Counts). /sync's build composes
// it with the other streams (sync.go).

// timelineSel is the timeline chosen for one room of a response.
type timelineSel struct {
	// events are the returned events, oldest first.
	events  []*clientEvent
	limited bool
	// last is the room's newest event in the window, returned or not (nil
	// when the window is empty).
	last *clientEvent
	// droppedState: a state event of the window is not in the timeline
	// (filtered out, or hidden by history visibility).
	droppedState bool
	// prevBatch is the position /messages continues backwards from.
	prevBatch int64
}

// scanBudget bounds the events one room's timeline looks through when a
// filter or history visibility leaves events out.
const scanBudget = 500

// selectTimeline picks a room's timeline from the events with since < pos
// <= upto: the newest limit events that keep accepts, looking further back
// past the ones it rejects (at most scanBudget events in all). limited
// tells whether more accepted events may lie before the returned ones.
func (s *Service) selectTimeline(ctx context.Context, roomID string, since, upto int64, limit int, keep func(*clientEvent) (bool, error)) (timelineSel, error) {
	sel := timelineSel{prevBatch: upto}
	if limit == 0 {
		// An empty timeline by the filter: the newest event tells where
		// the state block ends, and every state event of the window is
		// left out of the timeline.
		evs, err := s.eventsDesc(ctx, roomID, since, upto, 1, true)
		if err != nil || len(evs) == 0 {
			return sel, err
		}
		sel.last, sel.droppedState = evs[0], true
		return sel, nil
	}
	var picked []*clientEvent // newest first
	cursor, scanned, oldest := upto, 0, int64(0)
	batch := limit + 1
scan:
	for {
		evs, err := s.eventsDesc(ctx, roomID, since, cursor, batch, cursor == upto)
		if err != nil {
			return sel, err
		}
		for _, e := range evs {
			if sel.last == nil {
				sel.last = e
			}
			ok, err := keep(e)
			if err != nil {
				return sel, err
			}
			if ok {
				if len(picked) == limit {
					sel.limited = true
					break scan
				}
				picked = append(picked, e)
			} else if e.stateKey != nil {
				sel.droppedState = true
			}
			oldest = e.pos
			scanned++
		}
		if len(evs) < batch {
			break // back at since
		}
		if scanned >= scanBudget {
			sel.limited = true
			break
		}
		cursor = oldest - 1
		batch = min(max(2*batch, 50), scanBudget)
	}
	sel.events = make([]*clientEvent, len(picked))
	for i, e := range picked {
		sel.events[len(picked)-1-i] = e
	}
	switch {
	case len(picked) > 0:
		sel.prevBatch = sel.events[0].pos - 1
	case sel.limited:
		sel.prevBatch = oldest - 1
	}
	return sel, nil
}

// eventsDesc returns up to n of the room's events with since < pos <=
// upto, newest first; recent says the window ends at the room's newest
// events, which the recent-events cache may hold.
func (s *Service) eventsDesc(ctx context.Context, roomID string, since, upto int64, n int, recent bool) ([]*clientEvent, error) {
	if recent {
		if evs, ok := s.recentWindow(roomID, since, upto, n-1); ok {
			out := make([]*clientEvent, len(evs))
			for i, e := range evs {
				out[len(evs)-1-i] = e
			}
			return out, nil
		}
	}
	return s.queryEvents(ctx, "timeline of "+roomID, `SELECT `+roomserver.EventColumns+` FROM events WHERE room_id = $1 AND pos > $2 AND pos <= $3 ORDER BY pos DESC LIMIT $4`,
		roomID, since, upto, n)
}

func (s *Service) joinedRoom(ctx context.Context, req SyncRequest, rv notifier.RoomView, sinceEv int64, upto Pos, since *Pos, newly bool, now int64, receipts map[string]json.RawMessage) (*joinedRoom, error) {
	roomID, mem := rv.ID, rv.Mem
	o := req.Opts
	jr := &joinedRoom{
		State:       eventList{Events: []json.RawMessage{}},
		Timeline:    timeline{Events: []json.RawMessage{}},
		Ephemeral:   eventList{Events: []json.RawMessage{}},
		AccountData: eventList{Events: []json.RawMessage{}},
	}
	windowStart := sinceEv
	if newly && (since == nil || mem.Pos > sinceEv) {
		windowStart = 0
	}
	if req.FullState && since != nil && mem.Pos <= sinceEv {
		windowStart = sinceEv
	}
	var vis *visibility // loaded by keep when the window reaches before the membership
	keep := s.timelineKeepWith(ctx, req, roomID, mem, upto.Events, &vis)
	sel, err := s.selectTimeline(ctx, roomID, windowStart, upto.Events, o.timelineLimit(roomID), keep)
	if err != nil {
		return nil, err
	}
	tl := sel.events
	if jr.Timeline.Events, err = s.appendTimelineKnown(ctx, jr.Timeline.Events, tl, now, req.UserID, req.DeviceID, o.FederationFormat, vis.history(roomID)); err != nil {
		return nil, err
	}
	jr.Timeline.Limited = sel.limited
	jr.Timeline.PrevBatch = pageToken(sel.prevBatch)

	in := stateInput{req: req, roomID: roomID, sinceEv: sinceEv, fresh: newly, uptoEv: upto.Events, sel: &sel}
	ids, err := s.stateIDs(ctx, in)
	if err != nil {
		return nil, err
	}
	state, err := s.appendState(ctx, jr, ids, o, now, req.DeviceID)
	if err != nil {
		return nil, err
	}
	s.recordLazy(in, state)

	// Ephemeral: typing and receipts.
	if (newly || rv.Typing > since.Typing) && o.ephemeralOK("m.typing") {
		users := s.typing.Users(roomID)
		if len(users) > 0 || !newly {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, streams.TypingEvent(users))
		}
	}
	if o.ephemeralOK("m.receipt") {
		if ev := receipts[roomID]; ev != nil {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if mem.State == "peek" {
		// A peeker has no unread counts.
	} else if s.counts.Pushed() && (newly || sel.last != nil || rv.Receipts > sinceOr(since, func(p *Pos) int64 { return p.Receipts })) {
		s.pushCounts(jr, roomID, req.UserID, o.ThreadCounts)
	} else if newly || len(tl) > 0 || rv.Receipts > sinceOr(since, func(p *Pos) int64 { return p.Receipts }) {
		c, err := s.unread(ctx, roomID, req.UserID)
		if err != nil {
			return nil, err
		}
		jr.UnreadNotifications = &c
	}
	if newly || hasMembershipChange(tl) {
		jr.Summary = s.summary(roomID, req.UserID)
		// Heroes name a room that has no name of its own.
		named, err := s.roomNamed(ctx, roomID, sel.last, upto.Events)
		if err != nil {
			return nil, err
		}
		if named {
			delete(jr.Summary, "m.heroes")
		}
	} else {
		jr.Summary = map[string]any{}
	}
	return jr, nil
}

func sinceOr(p *Pos, f func(*Pos) int64) int64 {
	if p == nil {
		return 0
	}
	return f(p)
}

func hasMembershipChange(evs []*clientEvent) bool {
	for _, e := range evs {
		if e.typ == "m.room.member" {
			return true
		}
	}
	return false
}

// stateAtPos returns the room's state after the last event at or before pos.
func (s *Service) stateAtPos(ctx context.Context, roomID string, pos int64) (map[[2]string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT `+roomserver.EventColumns+` FROM events WHERE room_id = $1 AND pos <= $2 ORDER BY pos DESC LIMIT 1`, roomID, pos)
	if err != nil {
		return nil, fmt.Errorf("last event of %s: %w", roomID, err)
	}
	var ev *roomserver.Event
	for rows.Next() {
		e, err := roomserver.ScanEvent(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		ev = &e
	}
	rows.Close()
	if ev == nil {
		return map[[2]string]string{}, nil
	}
	if ev.Snapshot == 0 {
		return s.rooms.StateIDsAfter(ctx, *ev)
	}
	// The state before the event (cached by snapshot, shared: never
	// changed), and the event itself on it when it is state.
	before, err := s.rooms.StateIDsAtSnapshot(ctx, ev.Snapshot)
	if err != nil || ev.StateKey == nil {
		return before, err
	}
	return withState(before, ev.Type, *ev.StateKey, ev.EventID), nil
}

// withState is state with (typ, key) set to id: state itself when it
// already is, else a copy (state may be shared).
func withState(state map[[2]string]string, typ, key, id string) map[[2]string]string {
	k := [2]string{typ, key}
	if state[k] == id {
		return state
	}
	out := make(map[[2]string]string, len(state)+1)
	for k2, v := range state {
		out[k2] = v
	}
	out[k] = id
	return out
}

func (s *Service) appendState(ctx context.Context, jr *joinedRoom, ids []string, o *Opts, now int64, device string) ([]*clientEvent, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	list := make([]*clientEvent, 0, len(evs))
	for _, e := range evs {
		if o.stateOK(e.typ, e.sender) {
			list = append(list, e)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].pos < list[j].pos })
	// State events carry no transaction_id.
	jr.State.Events, err = s.appendEvents(ctx, jr.State.Events, list, now, "", "", o.FederationFormat)
	return list, err
}

func (s *Service) lazyMembers(ctx context.Context, jr *joinedRoom, tl []*clientEvent, o *Opts, now int64, device string) error {
	inTimeline := map[string]bool{}
	for _, e := range tl {
		if e.typ == "m.room.member" && e.stateKey != nil {
			inTimeline[*e.stateKey] = true
		}
	}
	need := map[string]bool{}
	for _, e := range tl {
		if !inTimeline[e.sender] {
			need[e.sender] = true
		}
	}
	if len(need) == 0 {
		return nil
	}
	before, err := s.rooms.StateIDsAtSnapshot(ctx, tl[0].snapshot)
	if err != nil {
		return err
	}
	var ids []string
	for u := range need {
		if id, ok := before[[2]string{"m.room.member", u}]; ok {
			ids = append(ids, id)
		}
	}
	_, err = s.appendState(ctx, jr, ids, o, now, device)
	return err
}

// roomNamed tells whether the room has a name or a canonical alias (not
// empty) in its state after last (at pos when last is nil).
func (s *Service) roomNamed(ctx context.Context, roomID string, last *clientEvent, pos int64) (bool, error) {
	state, err := s.stateAfterEvent(ctx, roomID, last, pos)
	if err != nil {
		return false, err
	}
	var ids []string
	for _, k := range [][2]string{{"m.room.name", ""}, {"m.room.canonical_alias", ""}} {
		if id, ok := state[k]; ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return false, nil
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		var c struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		}
		if json.Unmarshal(e.content, &c) == nil && (c.Name != "" || c.Alias != "") {
			return true, nil
		}
	}
	return false, nil
}

func (s *Service) summary(roomID, userID string) map[string]any {
	joined, invited, heroes := s.n.RoomMembers(roomID, userID)
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	return map[string]any{"m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited}
}

// unread counts the messages from others after the user's read receipt
// (streams.Counts, without a push service).
func (s *Service) unread(ctx context.Context, roomID, userID string) (unreadCounts, error) {
	n, err := s.counts.Messages(ctx, roomID, userID)
	return unreadCounts{NotificationCount: n}, err
}

func (s *Service) leftRoom(ctx context.Context, req SyncRequest, roomID string, mem notifier.Membership, sinceEv int64, initial bool, now int64) (*leftRoom, error) {
	o := req.Opts
	lr := &leftRoom{State: eventList{Events: []json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{}}, AccountData: eventList{Events: []json.RawMessage{}}}
	vis, err := loadVisibility(ctx, s.db, roomID, req.UserID)
	if err != nil {
		return nil, err
	}
	keep := s.timelineKeepWith(ctx, req, roomID, mem, mem.Pos, &vis)
	sel, err := s.selectTimeline(ctx, roomID, sinceEv, mem.Pos, o.timelineLimit(roomID), keep)
	if err != nil {
		return nil, err
	}
	if lr.Timeline.Events, err = s.appendTimelineKnown(ctx, lr.Timeline.Events, sel.events, now, req.UserID, req.DeviceID, o.FederationFormat, vis.history(roomID)); err != nil {
		return nil, err
	}
	lr.Timeline.Limited = sel.limited
	lr.Timeline.PrevBatch = pageToken(sel.prevBatch)
	// The state up to the leave: what changed since the token for a room
	// the client knew as joined; all of it for a room it joined and left
	// within the window (or on an initial sync).
	joinedAtSince := !initial && vis.membershipAfter(sinceEv) == "join"
	if !initial && !joinedAtSince && !vis.joinedWithin(sinceEv, mem.Pos) {
		return lr, nil // an invite or knock that ended: the client never had the room's state
	}
	in := stateInput{req: req, roomID: roomID, sinceEv: sinceEv, fresh: !joinedAtSince, uptoEv: mem.Pos, sel: &sel}
	ids, err := s.stateIDs(ctx, in)
	if err != nil {
		return nil, err
	}
	jr := &joinedRoom{State: eventList{Events: []json.RawMessage{}}}
	state, err := s.appendState(ctx, jr, ids, o, now, req.DeviceID)
	if err != nil {
		return nil, err
	}
	s.recordLazy(in, state)
	lr.State.Events = append(lr.State.Events, jr.State.Events...)
	return lr, nil
}

// ignoredSender: the event is a message (not state) from an ignored user,
// which a client is not sent.
func ignoredSender(ignored map[string]struct{}, e *clientEvent) bool {
	if e.stateKey != nil || len(ignored) == 0 {
		return false
	}
	_, ok := ignored[e.sender]
	return ok
}

// timelineKeepWith decides which of a room's events go into the user's
// timeline: those the filter accepts (not from ignored users) and, of those from before the user's
// current membership, those history visibility lets them see. Events of
// the room's state at upto are always shown, hidden or not: a client must
// see how the room came to be as it is (who joined while the user was
// away).
//
// vis is the user's visibility in the room: loaded (into *vis) when first
// needed, unless the caller loaded it already.
func (s *Service) timelineKeepWith(ctx context.Context, req SyncRequest, roomID string, mem notifier.Membership, upto int64, visp **visibility) func(*clientEvent) (bool, error) {
	o := req.Opts
	roomOK := o.TimelineRoom == nil || o.TimelineRoom(roomID)
	var current map[[2]string]string
	return func(e *clientEvent) (bool, error) {
		if !roomOK || !o.timelineOK(e) || ignoredSender(req.ignored, e) {
			return false, nil
		}
		if e.pos >= mem.Pos {
			return true, nil
		}
		if *visp == nil {
			v, err := loadVisibility(ctx, s.db, roomID, req.UserID)
			if err != nil {
				return false, err
			}
			*visp = v
		}
		if (*visp).canSee(e.pos, e.sender, e.typ, e.stateKey) {
			return true, nil
		}
		if e.stateKey == nil {
			return false, nil
		}
		if current == nil {
			c, err := s.stateAtPos(ctx, roomID, upto)
			if err != nil {
				return false, err
			}
			current = c
		}
		return current[[2]string{e.typ, *e.stateKey}] == e.eventID, nil
	}
}
