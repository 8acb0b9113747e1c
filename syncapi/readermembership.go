package syncapi

import (
	"context"
	"sort"

	"github.com/haven-chat/haven/syncapi/notifier"
)

// Every event served to a client in a timeline (/sync, /messages,
// /context, /event, /search, /relations, /threads) carries
// unsigned.membership (spec v1.11): the reader's membership in the room
// right after the event, the event's own change included; "leave" before
// they ever had one.
//
// The Notifier knows each user's current membership in every room and the
// position of their latest membership event: every event at or after it
// gets the current membership without a query — on /sync, a joined room's
// timeline after the join. Only events that reach back before that change
// read the user's membership history: one query per list of events served
// (a room's timeline in /sync, a /messages page, all rooms of a /search
// page), never one per event.

// readerMemberships returns, for each event, the user's membership right
// after it.
// known holds membership histories the caller has loaded already (by room).
func (s *Service) readerMemberships(ctx context.Context, user string, evs []*clientEvent, known map[string][]change) ([]string, error) {
	out := make([]string, len(evs))
	type roomInfo struct {
		cur   notifier.Membership
		known bool
		hist  []change
	}
	rooms := map[string]*roomInfo{}
	var need []string
	for _, e := range evs {
		ri := rooms[e.roomID]
		if ri == nil {
			ri = &roomInfo{}
			ri.cur, ri.known = s.n.MembershipOf(user, e.roomID)
			rooms[e.roomID] = ri
		}
		if ri.known && e.pos < ri.cur.Pos && ri.hist == nil {
			if h, ok := known[e.roomID]; ok {
				ri.hist = h
				continue
			}
			ri.hist = []change{}
			need = append(need, e.roomID)
		}
	}
	if len(need) > 0 {
		sort.Strings(need)
		hist, err := loadMemberships(ctx, s.db, need, user)
		if err != nil {
			return nil, err
		}
		for _, r := range need {
			rooms[r].hist = hist[r]
		}
	}
	for i, e := range evs {
		ri := rooms[e.roomID]
		switch {
		case !ri.known:
			out[i] = "leave"
		case e.pos >= ri.cur.Pos:
			out[i] = ri.cur.State
		default:
			out[i] = at(ri.hist, e.pos+1, "leave")
		}
	}
	return out, nil
}

// appendMembership adds unsigned.membership to an event rendered by
// clientEvent.appendJSON (which ends with the unsigned object), in place
// when the slice has room.
func appendMembership(js []byte, m string) []byte {
	n := len(js)
	if n < 2 || js[n-2] != '}' || js[n-1] != '}' {
		return js
	}
	js = append(js[:n-2], `,"membership":`...)
	js = appendString(js, m)
	return append(js, "}}"...)
}
