package clientapi

import (
	"net/http"

	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/syncapi/filter"
)

// syncOpts compiles the filter of a /sync request: inline JSON or the ID of
// a stored filter.
func (a *API) syncOpts(r *http.Request) (*syncapi.Opts, error) {
	q, err := filter.ParseQuery(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, err
	}
	if q.IsZero() {
		return syncapi.DefaultOpts(), nil
	}
	f := q.Filter
	if !q.Inline {
		body, err := a.Filters.GetFilter(r.Context(), DeviceFrom(r).UserID, q.ID)
		if err != nil {
			return nil, err
		}
		if f, err = filter.Parse(body); err != nil {
			return nil, err
		}
	}
	return compileFilter(&f), nil
}

// roomEventOpts compiles the filter of /messages and /context, an inline
// RoomEventFilter.
func roomEventOpts(r *http.Request) (*syncapi.Opts, error) {
	raw := r.URL.Query().Get("filter")
	o := syncapi.DefaultOpts()
	if raw == "" {
		return o, nil
	}
	f, err := filter.ParseRoomEventFilter([]byte(raw))
	if err != nil {
		return nil, err
	}
	m := f.Compile()
	o.LazyMembers = m.LazyLoadMembers()
	if !m.MatchesAll() {
		o.TimelineMatch = m.Match
	}
	return o, nil
}

// compileFilter turns a filter into the sync engine's options.
func compileFilter(f *filter.Filter) *syncapi.Opts {
	m := f.Compile()
	o := syncapi.DefaultOpts()
	o.TimelineLimit = m.Room.Timeline.Limit(filter.DefaultTimelineLimit, filter.MaxTimelineLimit)
	o.LazyMembers = m.Room.State.LazyLoadMembers() || m.Room.Timeline.LazyLoadMembers()
	o.IncludeLeave = m.Room.IncludeLeave()
	o.FederationFormat = m.FederationFormat()
	o.RoomAllowed = m.Room.AllowsRoom
	o.TimelineRoom = m.Room.Timeline.AllowsRoom
	if tl := &m.Room.Timeline; !tl.MatchesAll() {
		o.TimelineMatch = tl.Match
	}
	if st := &m.Room.State; !st.MatchesAll() {
		o.StateMatch = func(typ, sender string) bool { return st.Match(typ, sender, false) }
	}
	if eph := &m.Room.Ephemeral; !eph.MatchesAll() {
		o.EphemeralMatch = eph.MatchType
	}
	if rad := &m.Room.AccountData; !rad.MatchesAll() {
		o.RoomDataMatch = rad.MatchType
	}
	if ad := &m.AccountData; !ad.MatchesAll() {
		o.AccountDataMatch = ad.MatchType
	}
	if pr := &m.Presence; !pr.MatchesAll() {
		o.PresenceMatch = pr.MatchSender
	}
	return o
}
