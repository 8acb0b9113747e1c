package clientapi

import (
	"strings"

	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/syncapi/filter"
)

// compileFilter turns a filter's JSON into the sync engine's options.
func compileFilter(body []byte) (*syncapi.Opts, error) {
	f, err := filter.Parse(body)
	if err != nil {
		return nil, err
	}
	o := syncapi.DefaultOpts()
	if f.Room.Timeline.Limit > 0 {
		o.TimelineLimit = min(f.Room.Timeline.Limit, 1000)
	}
	o.LazyMembers = f.Room.State.LazyLoadMembers || f.Room.Timeline.LazyLoadMembers
	o.IncludeLeave = f.Room.IncludeLeave
	o.FederationFormat = f.EventFormat == "federation"
	rooms, notRooms := f.Room.Rooms, f.Room.NotRooms
	if rooms != nil || len(notRooms) > 0 {
		o.RoomAllowed = func(id string) bool { return listAllows(rooms, notRooms, id, false) }
	}
	tl := f.Room.Timeline
	if tl.Types != nil || len(tl.NotTypes) > 0 || tl.Senders != nil || len(tl.NotSenders) > 0 || tl.Rooms != nil || len(tl.NotRooms) > 0 {
		o.TimelineMatch = func(typ, sender string, _ bool) bool { return eventAllows(tl.EventFilter, typ, sender) }
	}
	st := filter.RoomEventFilter(f.Room.State)
	if st.Types != nil || len(st.NotTypes) > 0 || st.Senders != nil || len(st.NotSenders) > 0 {
		o.StateMatch = func(typ, sender string) bool { return eventAllows(st.EventFilter, typ, sender) }
	}
	eph := f.Room.Ephemeral
	if eph.Types != nil || len(eph.NotTypes) > 0 {
		o.EphemeralMatch = func(typ string) bool { return listAllows(eph.Types, eph.NotTypes, typ, true) }
	}
	rad := f.Room.AccountData
	if rad.Types != nil || len(rad.NotTypes) > 0 {
		o.RoomDataMatch = func(typ string) bool { return listAllows(rad.Types, rad.NotTypes, typ, true) }
	}
	ad := f.AccountData
	if ad.Types != nil || len(ad.NotTypes) > 0 {
		o.AccountDataMatch = func(typ string) bool { return listAllows(ad.Types, ad.NotTypes, typ, true) }
	}
	pr := f.Presence
	if pr.Senders != nil || len(pr.NotSenders) > 0 {
		o.PresenceMatch = func(sender string) bool { return listAllows(pr.Senders, pr.NotSenders, sender, false) }
	}
	return o, nil
}

func eventAllows(f filter.EventFilter, typ, sender string) bool {
	return listAllows(f.Types, f.NotTypes, typ, true) && listAllows(f.Senders, f.NotSenders, sender, false)
}

// listAllows: not-list wins; a nil allow-list allows everything.
func listAllows(allow *[]string, deny []string, v string, wildcard bool) bool {
	for _, d := range deny {
		if matches(d, v, wildcard) {
			return false
		}
	}
	if allow == nil {
		return true
	}
	for _, a := range *allow {
		if matches(a, v, wildcard) {
			return true
		}
	}
	return false
}

func matches(pattern, v string, wildcard bool) bool {
	if wildcard && strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(v, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == v
}
