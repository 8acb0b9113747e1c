package clientapi

import (
	"net/http"

	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/syncapi/filter"
)

// compiledFilters caches compiled sync options by the filter's JSON: clients
// of the same kind upload the same filter, so a handful of entries serve
// every user, and a /sync does not parse its filter again.
var compiledFilters = lru.New[string, *syncapi.Opts]("compiled_filters", 1000)

// syncOpts compiles the filter of a /sync request: inline JSON or the ID of
// a stored filter.
func (a *API) syncOpts(r *http.Request, raw string) (*syncapi.Opts, error) {
	if raw == "" {
		return syncapi.DefaultOpts(), nil
	}
	body := []byte(raw)
	if raw[0] != '{' {
		q, err := filter.ParseQuery(raw)
		if err != nil {
			return nil, err
		}
		if body, err = a.Filters.GetFilter(r.Context(), DeviceFrom(r).UserID, q.ID); err != nil {
			return nil, err
		}
	}
	if o, ok := compiledFilters.Get(string(body)); ok {
		return o, nil
	}
	f, err := filter.Parse(body)
	if err != nil {
		return nil, err
	}
	o := compileFilter(&f)
	compiledFilters.Put(string(body), o)
	return o, nil
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
	o.RedundantMembers = m.Room.State.IncludeRedundantMembers() || m.Room.Timeline.IncludeRedundantMembers()
	o.IncludeLeave = m.Room.IncludeLeave()
	o.FederationFormat = m.FederationFormat()
	o.ThreadCounts = m.Room.Timeline.UnreadThreadNotifications()
	o.RoomAllowed = m.Room.AllowsRoom
	o.TimelineRoom = m.Room.Timeline.AllowsRoom
	if tl := &m.Room.Timeline; !tl.MatchesAll() {
		o.TimelineMatch = tl.Match
		o.TimelineNone = tl.MatchesNone()
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
