package syncapi

import "sync"

// recentRoom keeps the latest events of one room, in position order. Every
// event of the room with a position >= from is in it.
type recentRoom struct {
	mu     sync.Mutex
	from   int64
	events []*clientEvent
	cap    int
}

func (s *Service) addRecent(roomID string, ce *clientEvent) {
	rr, ok := s.recent.Peek(roomID)
	if !ok {
		rr = &recentRoom{from: ce.pos, cap: s.opts.RecentEvents}
		s.recent.Put(roomID, rr)
	}
	rr.mu.Lock()
	rr.events = append(rr.events, ce)
	if len(rr.events) > rr.cap {
		drop := len(rr.events) - rr.cap
		rr.events = append(rr.events[:0:0], rr.events[drop:]...)
		rr.from = rr.events[0].pos
	}
	rr.mu.Unlock()
}

func (rr *recentRoom) replace(ce *clientEvent) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for i, e := range rr.events {
		if e.eventID == ce.eventID {
			rr.events[i] = ce
			return
		}
	}
}

// window returns the events with since < pos <= upto, newest last, at most
// limit+1 of them (the extra one tells the caller the window is limited), if
// the cache can answer; ok is false when the database must be asked.
func (s *Service) recentWindow(roomID string, since, upto int64, limit int) (evs []*clientEvent, ok bool) {
	rr, found := s.recent.Get(roomID)
	if !found {
		return nil, false
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	// collect from the newest backwards
	var out []*clientEvent
	for i := len(rr.events) - 1; i >= 0; i-- {
		e := rr.events[i]
		if e.pos > upto {
			continue
		}
		if e.pos <= since {
			break
		}
		out = append(out, e)
		if len(out) > limit {
			break
		}
	}
	complete := len(out) > limit || since+1 >= rr.from
	if !complete {
		return nil, false
	}
	// reverse to position order
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, true
}
