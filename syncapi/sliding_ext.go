package syncapi

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/streams"
)

// Sliding sync extensions (MSC4186): to_device, e2ee, account_data,
// receipts and typing, built from the same streams as /sync.

// SlidingScope is the rooms an extension covers (its lists and rooms, as
// MSC3959, MSC3960 and MSC3961 have them): those of the windows of the
// lists named and the room subscriptions named, "*" naming every list or
// every subscription. An absent field is "*" (as Synapse reads it); []
// names none. A name that is no list, or a room that is no subscription
// answered, adds nothing.
type SlidingScope struct {
	Lists []string `json:"lists"`
	Rooms []string `json:"rooms"`
}

// maxSlidingName bounds a list name in an extension's lists.
const maxSlidingName = 255

func (sc *SlidingScope) check(ext string) error {
	if len(sc.Lists) > maxSlidingLists+1 {
		return merr.InvalidParam("extensions.%s.lists: at most %d names", ext, maxSlidingLists+1)
	}
	for _, name := range sc.Lists {
		if name == "" || len(name) > maxSlidingName {
			return merr.InvalidParam("extensions.%s.lists: a list name is 1 to %d bytes", ext, maxSlidingName)
		}
	}
	if len(sc.Rooms) > maxSlidingSubscriptions+1 {
		return merr.InvalidParam("extensions.%s.rooms: at most %d room IDs", ext, maxSlidingSubscriptions+1)
	}
	for _, id := range sc.Rooms {
		if id != "*" && !validRoom(id) {
			return merr.InvalidParam("extensions.%s.rooms: %q is neither a room ID nor \"*\"", ext, id)
		}
	}
	return nil
}

func (e *SlidingExtensions) check() error {
	if a := e.AccountData; a != nil {
		if err := a.check("account_data"); err != nil {
			return err
		}
	}
	if r := e.Receipts; r != nil {
		if err := r.check("receipts"); err != nil {
			return err
		}
	}
	if t := e.Typing; t != nil {
		if err := t.check("typing"); err != nil {
			return err
		}
	}
	return nil
}

// slidingWindows are the rooms of a response an extension's scope picks
// from: each list's window, the subscriptions answered, and of those the
// rooms the extensions send whole (sent whole, or back in the window).
type slidingWindows struct {
	lists map[string][]string
	subs  map[string]bool
	whole map[string]bool
}

// pick returns the rooms of the scope.
func (w *slidingWindows) pick(sc SlidingScope) map[string]bool {
	out := map[string]bool{}
	every := func(names []string) bool { return names == nil || slices.Contains(names, "*") }
	if every(sc.Lists) {
		for _, ids := range w.lists {
			for _, id := range ids {
				out[id] = true
			}
		}
	} else {
		for _, name := range sc.Lists {
			for _, id := range w.lists[name] {
				out[id] = true
			}
		}
	}
	if every(sc.Rooms) {
		for id := range w.subs {
			out[id] = true
		}
	} else {
		for _, id := range sc.Rooms {
			if w.subs[id] {
				out[id] = true
			}
		}
	}
	return out
}

// slidingRoomEvents is an extension's events by room.
type slidingRoomEvents struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

// slidingEphemeral adds the receipts and typing extensions, for the
// joined rooms of their scope: whole for the rooms of win.whole, what
// changed since the pos for the others. news tells whether they carry
// anything.
func (s *Service) slidingEphemeral(ctx context.Context, req SlidingRequest, snap *slidingSnap, upto Pos, win *slidingWindows, byID map[string]slidingEntry, resp *SlidingResponse) (bool, error) {
	ext := req.Body.Extensions
	news := false
	if r := ext.Receipts; r != nil && enabled(r.Enabled) {
		var whole, changed []string
		after := int64(0)
		if snap != nil {
			after = snap.at.Receipts
		}
		for id := range win.pick(r.SlidingScope) {
			e := byID[id]
			switch {
			case e.rv.Mem.State != "join":
			case win.whole[id] || snap == nil:
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
		for id := range win.pick(t.SlidingScope) {
			e := byID[id]
			if e.rv.Mem.State != "join" {
				continue
			}
			whole := win.whole[id] || snap == nil
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
func (s *Service) slidingExtensions(ctx context.Context, req SlidingRequest, snap *slidingSnap, upto Pos, win *slidingWindows, resp *SlidingResponse) (news bool, err error) {
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
		n, err := s.slidingAccountData(ctx, req.UserID, snap, upto, win, win.pick(a.SlidingScope), resp)
		if err != nil {
			return false, err
		}
		news = news || n
	}
	return news, nil
}

// slidingAccountData adds the account_data extension: the global entries
// changed since the pos (all of them on a new connection), and for the
// rooms of its scope those changed since the pos, or all of a room's
// entries when the room is sent whole (its entries may have changed
// while the client did not have it).
func (s *Service) slidingAccountData(ctx context.Context, userID string, snap *slidingSnap, upto Pos, win *slidingWindows, scope map[string]bool, resp *SlidingResponse) (bool, error) {
	after := int64(0)
	if snap != nil {
		after = snap.at.AccountData
	}
	var whole []string
	if snap != nil {
		for id := range scope {
			if win.whole[id] {
				whole = append(whole, id)
			}
		}
	}
	out := &slidingAccountData{Global: []json.RawMessage{}, Rooms: map[string][]json.RawMessage{}}
	if snap == nil || upto.AccountData > after {
		global, rooms, err := s.accountDataStream.Changes(ctx, userID, after, upto.AccountData, nil, nil)
		if err != nil {
			return false, err
		}
		out.Global = append(out.Global, global...)
		for id, evs := range rooms {
			if scope[id] {
				out.Rooms[id] = evs
			}
		}
	}
	if len(whole) > 0 && after > 0 {
		_, rooms, err := s.accountDataStream.Changes(ctx, userID, 0, upto.AccountData, func(string) bool { return false }, nil)
		if err != nil {
			return false, err
		}
		for _, id := range whole {
			if evs := rooms[id]; len(evs) > 0 {
				out.Rooms[id] = evs
			}
		}
	}
	news := len(out.Global) > 0 || len(out.Rooms) > 0
	if snap == nil || news {
		resp.Extensions["account_data"] = out
	}
	return news, nil
}
