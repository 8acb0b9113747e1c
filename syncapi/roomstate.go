package syncapi

import (
	"context"
	"sync"

	"github.com/haven-chat/haven/internal/lru"
)

// The state block of a room in a /sync response.
//
// It is the room's state at the start of the returned timeline, as the spec
// says, corrected so that the client's view of the state is right once it
// has applied the timeline: a state event in the window that the timeline
// leaves out (a timeline filter, history visibility) is sent in the state
// block, at its latest value. In an incremental sync only what differs from
// the state at the since token is sent; for a newly joined room (and an
// initial or full-state sync) all of it.
//
// With lazy-loaded members, member events go in only where the client needs
// them: those of the timeline's senders (and, when the room is new to the
// client, the user's own), and every membership change in the gap. A
// device's client is not sent a member event again once it has one
// (unless include_redundant_members): lazySent remembers, per device and
// room, which members each device was sent and in which response, so a
// client that repeats an older since token gets them again.

// lazyKey names one device's view of one room.
type lazyKey struct{ user, device, room string }

// sentMembers records the members a device was sent in a room: the user
// ID and the events position (the response's next_batch) they were sent in.
type sentMembers struct {
	mu sync.Mutex
	at map[string]int64
}

// lazySent is bounded: a device and room it has forgotten is sent its
// members again, which the spec allows. Every woken /sync asks it, so it is
// split in shards by user (their locks are not shared by all the wake
// workers) and a lookup does not reorder: the entries age from when they
// were last written.
type lazySent struct {
	shards [lazyShards]*lru.Cache[lazyKey, *sentMembers]
}

const lazyShards = 32

func newLazySent(size int) *lazySent {
	l := &lazySent{}
	for i := range l.shards {
		l.shards[i] = lru.New[lazyKey, *sentMembers]("lazy_members_sent", max(1, size/lazyShards))
	}
	return l
}

func (l *lazySent) shard(k lazyKey) *lru.Cache[lazyKey, *sentMembers] {
	h := uint32(2166136261)
	for i := 0; i < len(k.user); i++ {
		h = (h ^ uint32(k.user[i])) * 16777619
	}
	return l.shards[h%lazyShards]
}

// had tells whether the device had user's member event in the room as of
// a response it synced from (since): sent in a response no newer than it.
func (l *lazySent) had(k lazyKey, user string, since int64) bool {
	sm, ok := l.shard(k).Peek(k)
	if !ok {
		return false
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	at, ok := sm.at[user]
	return ok && at <= since
}

// record notes the members sent in the response ending at upto; reset
// forgets earlier ones first (the client starts the room over).
func (l *lazySent) record(k lazyKey, users []string, upto int64, reset bool) {
	if len(users) == 0 && !reset {
		return
	}
	c := l.shard(k)
	sm, ok := c.Peek(k)
	if !ok || reset {
		sm = &sentMembers{at: make(map[string]int64, len(users))}
		c.Put(k, sm)
	}
	sm.mu.Lock()
	for _, u := range users {
		sm.at[u] = upto
	}
	sm.mu.Unlock()
}

// stateInput is what the state block of one room depends on.
type stateInput struct {
	req    SyncRequest
	roomID string
	// sinceEv is the events position of the since token; fresh: the room is
	// new to the client (initial or full-state sync, newly joined), so all
	// of its state is sent.
	sinceEv int64
	fresh   bool
	// uptoEv is where the response ends for this room.
	uptoEv int64
	sel    *timelineSel
}

// stateIDs returns the event IDs of the room's state block.
func (s *Service) stateIDs(ctx context.Context, in stateInput) (ids []string, err error) {
	o := in.req.Opts
	sel := in.sel
	senders := map[string]bool{}
	for _, e := range sel.events {
		senders[e.sender] = true
	}
	if in.fresh {
		senders[in.req.UserID] = true
	}
	key := lazyKey{in.req.UserID, in.req.DeviceID, in.roomID}
	redundant := o.RedundantMembers
	// needMember tells whether a sender's member event must be sent.
	needMember := func(u string) bool {
		return in.fresh || redundant || !s.lazySent.had(key, u, in.sinceEv)
	}

	if !in.fresh && !sel.limited && !sel.droppedState {
		// The timeline holds every change since the token.
		if !o.LazyMembers {
			return nil, nil
		}
		var need []string
		for u := range senders {
			if needMember(u) {
				need = append(need, u)
			}
		}
		if len(need) == 0 {
			return nil, nil
		}
		end, err := s.stateAfterEvent(ctx, in.roomID, sel.last, in.uptoEv)
		if err != nil {
			return nil, err
		}
		for _, u := range need {
			if id, ok := end[[2]string{"m.room.member", u}]; ok {
				ids = append(ids, id)
			}
		}
		return ids, nil
	}

	if in.fresh && !sel.droppedState && len(sel.events) > 0 {
		// Every state change after the timeline's start is in the
		// timeline: the state at its start is the answer (the common
		// case of an initial sync).
		start, err := s.rooms.StateIDsAtSnapshot(ctx, sel.events[0].snapshot)
		if err != nil {
			return nil, err
		}
		ids = make([]string, 0, len(start))
		for k, id := range start {
			if o.LazyMembers && k[0] == "m.room.member" && !senders[k[1]] {
				continue
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
	inTL := make(map[string]bool, len(sel.events))
	for _, e := range sel.events {
		inTL[e.eventID] = true
	}
	end, err := s.stateAfterEvent(ctx, in.roomID, sel.last, in.uptoEv)
	if err != nil {
		return nil, err
	}
	start := end
	if len(sel.events) > 0 {
		if start, err = s.rooms.StateIDsAtSnapshot(ctx, sel.events[0].snapshot); err != nil {
			return nil, err
		}
	}
	var prior map[[2]string]string
	if !in.fresh {
		if prior, err = s.stateAtPos(ctx, in.roomID, in.sinceEv); err != nil {
			return nil, err
		}
	}
	chosen := map[[2]string]string{}
	pick := func(k [2]string) {
		v := start[k]
		if e := end[k]; e != "" && e != v && !inTL[e] {
			// Changed after the timeline's start by an event the timeline
			// leaves out: the client learns the latest value here.
			v = e
		}
		if v == "" || (!in.fresh && prior[k] == v) {
			return
		}
		if o.LazyMembers && k[0] == "m.room.member" && in.fresh && !senders[k[1]] {
			return // a member the timeline does not need
		}
		chosen[k] = v
	}
	for k := range start {
		pick(k)
	}
	for k := range end {
		if _, ok := start[k]; !ok {
			pick(k)
		}
	}
	if o.LazyMembers {
		for u := range senders {
			k := [2]string{"m.room.member", u}
			if _, ok := chosen[k]; ok || !needMember(u) {
				continue
			}
			id := end[k]
			if id == "" {
				id = start[k]
			}
			if id == "" || (in.fresh && inTL[id]) {
				continue // none, or the timeline of a room new to the client carries it
			}
			chosen[k] = id
		}
	}
	ids = make([]string, 0, len(chosen))
	for _, id := range chosen {
		ids = append(ids, id)
	}
	return ids, nil
}

// recordLazy notes the member events a response sends in a room's state
// block and timeline, for lazy-loading's "already sent".
func (s *Service) recordLazy(in stateInput, state []*clientEvent) {
	if !in.req.Opts.LazyMembers {
		return
	}
	var users []string
	for _, list := range [][]*clientEvent{state, in.sel.events} {
		for _, e := range list {
			if e.typ == "m.room.member" && e.stateKey != nil {
				users = append(users, *e.stateKey)
			}
		}
	}
	s.lazySent.record(lazyKey{in.req.UserID, in.req.DeviceID, in.roomID}, users, in.uptoEv, in.fresh)
}

// stateAfterEvent is the room's state right after ev, or, when ev is nil
// (no event in the window), at pos.
func (s *Service) stateAfterEvent(ctx context.Context, roomID string, ev *clientEvent, pos int64) (map[[2]string]string, error) {
	if ev == nil {
		return s.stateAtPos(ctx, roomID, pos)
	}
	before, err := s.rooms.StateIDsAtSnapshot(ctx, ev.snapshot)
	if err != nil || ev.stateKey == nil {
		return before, err
	}
	return withState(before, ev.typ, *ev.stateKey, ev.eventID), nil
}
