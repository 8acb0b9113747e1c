package syncapi

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/streams"
)

// Sliding sync extensions (MSC4186): to_device, e2ee, account_data,
// receipts and typing, built from the same streams as /sync.

// slidingRoomEvents is an extension's events by room.
type slidingRoomEvents struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

// slidingEphemeral adds the receipts and typing extensions, for the
// joined rooms of the window and the subscriptions: whole for the rooms
// sent whole, what changed since the pos for the others. news tells
// whether they carry anything.
func (s *Service) slidingEphemeral(ctx context.Context, req SlidingRequest, snap *slidingSnap, upto Pos, want map[string]*SlidingRoomSettings, byID map[string]slidingEntry, fresh map[string]bool, resp *SlidingResponse) (bool, error) {
	ext := req.Body.Extensions
	news := false
	if r := ext.Receipts; r != nil && enabled(r.Enabled) {
		var whole, changed []string
		after := int64(0)
		if snap != nil {
			after = snap.at.Receipts
		}
		for id := range want {
			e := byID[id]
			switch {
			case e.rv.Mem.State != "join":
			case fresh[id] || snap == nil:
				whole = append(whole, id)
			case e.rv.Receipts > after:
				changed = append(changed, id)
			}
		}
		if len(whole) > 0 || len(changed) > 0 {
			evs, err := s.receipts.ForRooms(ctx, req.UserID, whole, changed, after, upto.Receipts)
			if err != nil {
				return false, err
			}
			if len(evs) > 0 {
				resp.Extensions["receipts"] = &slidingRoomEvents{Rooms: evs}
				news = true
			}
		}
	}
	if t := ext.Typing; t != nil && enabled(t.Enabled) {
		out := map[string]json.RawMessage{}
		for id := range want {
			e := byID[id]
			if e.rv.Mem.State != "join" {
				continue
			}
			whole := fresh[id] || snap == nil
			if !whole && e.rv.Typing <= snap.at.Typing {
				continue
			}
			users := s.typing.Users(id)
			if len(users) > 0 || !whole {
				out[id] = streams.TypingEvent(users)
			}
		}
		if len(out) > 0 {
			resp.Extensions["typing"] = &slidingRoomEvents{Rooms: out}
			news = true
		}
	}
	return news, nil
}

type slidingToDevice struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

type slidingE2EE struct {
	DeviceLists      deviceLists    `json:"device_lists"`
	OTKCounts        map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

type slidingAccountData struct {
	Global []json.RawMessage            `json:"global"`
	Rooms  map[string][]json.RawMessage `json:"rooms"`
}

// slidingExtensions adds the extensions asked for. to_device and
// account_data are added only when they carry something (and on a new
// connection); e2ee always. news tells whether they carry anything new
// (the key counts alone are not news).
func (s *Service) slidingExtensions(ctx context.Context, req SlidingRequest, snap *slidingSnap, upto Pos, want map[string]*SlidingRoomSettings, resp *SlidingResponse) (news bool, err error) {
	ext := req.Body.Extensions
	if td := ext.ToDevice; td != nil && enabled(td.Enabled) && s.opts.Keys != nil {
		after := int64(0)
		if td.Since != "" {
			n, err := strconv.ParseInt(td.Since, 10, 64)
			if err != nil || n < 0 {
				return false, merr.InvalidParam("extensions.to_device.since is not a to-device token")
			}
			after = n
		}
		evs, reached, err := s.toDevice.Messages(ctx, req.UserID, req.DeviceID, after, max(upto.ToDevice, after))
		if err != nil {
			return false, err
		}
		news = news || len(evs) > 0
		if len(evs) > 0 || td.Since == "" {
			if evs == nil {
				evs = []json.RawMessage{}
			}
			resp.Extensions["to_device"] = &slidingToDevice{NextBatch: strconv.FormatInt(max(reached, after), 10), Events: evs}
		}
	}
	if e := ext.E2EE; e != nil && enabled(e.Enabled) && s.opts.Keys != nil {
		out := &slidingE2EE{DeviceLists: deviceLists{Changed: []string{}, Left: []string{}}, OTKCounts: map[string]int{}, FallbackKeyTypes: []string{}}
		if snap != nil {
			changed, left, err := s.deviceLists.Changes(ctx, s.n, req.UserID, snap.at, upto, true)
			if err != nil {
				return false, err
			}
			out.DeviceLists.Changed = append(out.DeviceLists.Changed, changed...)
			out.DeviceLists.Left = append(out.DeviceLists.Left, left...)
			news = news || len(changed) > 0 || len(left) > 0
		}
		counts, fallback, ok, err := s.keyCountsStream.Counts(ctx, req.UserID, req.DeviceID)
		if err != nil {
			return false, err
		}
		if ok {
			for alg, n := range counts {
				out.OTKCounts[alg] = n
			}
			out.FallbackKeyTypes = append(out.FallbackKeyTypes, fallback...)
		}
		resp.Extensions["e2ee"] = out
	}
	if a := ext.AccountData; a != nil && enabled(a.Enabled) {
		after := int64(0)
		if snap != nil {
			after = snap.at.AccountData
		}
		if snap == nil || upto.AccountData > after {
			global, rooms, err := s.accountDataStream.Changes(ctx, req.UserID, after, upto.AccountData, nil, nil)
			if err != nil {
				return false, err
			}
			out := &slidingAccountData{Global: global, Rooms: map[string][]json.RawMessage{}}
			if out.Global == nil {
				out.Global = []json.RawMessage{}
			}
			for id, evs := range rooms {
				if _, ok := want[id]; ok {
					out.Rooms[id] = evs
				}
			}
			news = news || len(out.Global) > 0 || len(out.Rooms) > 0
			if snap == nil || len(out.Global) > 0 || len(out.Rooms) > 0 {
				resp.Extensions["account_data"] = out
			}
		}
	}
	return news, nil
}
