package syncapi

import (
	"context"
	"encoding/json"
	"math"

	"github.com/haven-chat/haven/syncapi/notifier"
)

// slidingReader is the membership state of a room a sliding sync sends
// to a user who is not in it: a room subscription to a world-readable
// room. Every event of it goes through history visibility (its
// membership position is beyond every event), as /messages does for a
// reader who never joined; it has no receipts or typing.
const slidingReader = "reader"

// slidingReadable returns, of the subscribed rooms ids the user is not in
// (nor invited to), those whose history is world-readable now, as entries
// of readers. The others are left out, as unknown rooms are.
func (s *Service) slidingReadable(ctx context.Context, ids []string, upto Pos) ([]slidingEntry, error) {
	valid := ids[:0:0]
	for _, id := range ids {
		if validRoom(id) {
			valid = append(valid, id)
		}
	}
	if len(valid) == 0 {
		return nil, nil
	}
	readable, err := s.worldReadableRooms(ctx, valid)
	if err != nil {
		return nil, err
	}
	var out []slidingEntry
	for _, id := range valid {
		if !readable[id] {
			continue
		}
		rv := s.n.Room(id)
		rv.Events = min(rv.Events, upto.Events)
		rv.Bump = min(rv.Bump, rv.Events)
		rv.Mem = notifier.Membership{State: slidingReader, Pos: math.MaxInt64}
		bump := rv.Bump
		if bump == 0 {
			bump = rv.Events
		}
		out = append(out, slidingEntry{rv: rv, bump: bump, latest: rv.Events})
	}
	return out, nil
}

// worldReadableRooms are those of ids whose current history visibility
// is world_readable (an unknown room is not).
func (s *Service) worldReadableRooms(ctx context.Context, ids []string) (map[string]bool, error) {
	hv := map[string]string{}
	if err := s.stateOfRooms(ctx, "m.room.history_visibility", ids, func(roomID, eventID string) { hv[roomID] = eventID }); err != nil {
		return nil, err
	}
	evIDs := make([]string, 0, len(hv))
	for _, e := range hv {
		evIDs = append(evIDs, e)
	}
	evs, err := s.eventsByID(ctx, evIDs)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for roomID, evID := range hv {
		e := evs[evID]
		if e == nil {
			continue
		}
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		if json.Unmarshal(e.content, &c) == nil && c.HistoryVisibility == "world_readable" {
			out[roomID] = true
		}
	}
	return out, nil
}
