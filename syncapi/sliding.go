package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/notifier"
)

// Simplified sliding sync (MSC4186): named lists of the user's rooms by
// recency, windows (ranges) over them, room subscriptions, and
// extensions. It is built on the same engine as /sync: the notifier's
// view and wake-ups, the rooms stream's timeline selection (timeline.go)
// and the key, to-device and account data streams.
//
// The bump stamp is the position of the room's latest event of a bump
// type (sliding_bump.go) or of the user's own membership, whichever is
// later; $LAZY in required_state is the timeline senders' member
// events, each sent once per connection and room (then again only when
// it changes, or once forgotten: slidingSent.lazy); a room the user
// leaves is sent once more, up to the leave, then no longer listed. A
// room subscription to a room the user is not in is answered when the
// room is world-readable (sliding_reader.go), and ignored otherwise.

// SlidingRequest is a parsed sliding sync request.
type SlidingRequest struct {
	UserID, DeviceID string
	Pos              string
	Timeout          time.Duration
	SetPresence      string
	Body             SlidingBody
	// shape is Body.shape(), worked out once per request.
	shape uint64
}

// SlidingBody is the request body.
type SlidingBody struct {
	ConnID            string                         `json:"conn_id"`
	TxnID             string                         `json:"txn_id,omitempty"`
	Lists             map[string]SlidingList         `json:"lists"`
	RoomSubscriptions map[string]SlidingRoomSettings `json:"room_subscriptions"`
	Extensions        SlidingExtensions              `json:"extensions"`
}

// SlidingRoomSettings are what a list or subscription sends of each room.
type SlidingRoomSettings struct {
	RequiredState [][]string `json:"required_state"`
	TimelineLimit int        `json:"timeline_limit"`
}

// SlidingList is one named list.
type SlidingList struct {
	SlidingRoomSettings
	Ranges  [][]int         `json:"ranges"`
	Filters *SlidingFilters `json:"filters"`
}

// SlidingFilters select a list's rooms.
type SlidingFilters struct {
	IsDM        *bool `json:"is_dm"`
	IsEncrypted *bool `json:"is_encrypted"`
	IsInvite    *bool `json:"is_invite"`
	// RoomTypes and NotRoomTypes: the type of the room's creation (null:
	// a room without one).
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	// Tags and NotTags: the room's tags (m.tag).
	Tags    []string `json:"tags"`
	NotTags []string `json:"not_tags"`
	// Spaces: the rooms that are children (m.space.child with via) of
	// one of these spaces, which the user is in.
	Spaces []string `json:"spaces"`
	// inSpaces is the children of Spaces, loaded by the build.
	inSpaces map[string]bool
}

func (f *SlidingFilters) needTypes() bool {
	return f != nil && (f.RoomTypes != nil || f.NotRoomTypes != nil)
}
func (f *SlidingFilters) needTags() bool { return f != nil && (f.Tags != nil || f.NotTags != nil) }

func typeIn(list []*string, typ string) bool {
	for _, t := range list {
		if (t == nil && typ == "") || (t != nil && *t == typ) {
			return true
		}
	}
	return false
}

func tagIn(list []string, tags map[string]bool) bool {
	for _, t := range list {
		if tags[t] {
			return true
		}
	}
	return false
}

// keep tells whether a room passes the filters.
func (f *SlidingFilters) keep(id string, invite bool, dms, encrypted map[string]bool, types map[string]string, tags map[string]map[string]bool) bool {
	if f == nil {
		return true
	}
	switch {
	case f.IsInvite != nil && *f.IsInvite != invite,
		f.IsDM != nil && *f.IsDM != dms[id],
		f.IsEncrypted != nil && *f.IsEncrypted != encrypted[id],
		f.RoomTypes != nil && !typeIn(f.RoomTypes, types[id]),
		f.NotRoomTypes != nil && typeIn(f.NotRoomTypes, types[id]),
		f.Tags != nil && !tagIn(f.Tags, tags[id]),
		f.NotTags != nil && tagIn(f.NotTags, tags[id]),
		f.Spaces != nil && !f.inSpaces[id]:
		return false
	}
	return true
}

// SlidingExtensions are the extensions asked for.
type SlidingExtensions struct {
	ToDevice *struct {
		Enabled *bool  `json:"enabled"`
		Since   string `json:"since"`
	} `json:"to_device"`
	E2EE *struct {
		Enabled *bool `json:"enabled"`
	} `json:"e2ee"`
	AccountData *struct {
		Enabled *bool `json:"enabled"`
		SlidingScope
	} `json:"account_data"`
	Receipts *struct {
		Enabled *bool `json:"enabled"`
		SlidingScope
	} `json:"receipts"`
	Typing *struct {
		Enabled *bool `json:"enabled"`
		SlidingScope
	} `json:"typing"`
}

// shape is a hash of what of the request decides which rooms and state
// are sent: its lists and subscriptions, in a canonical form.
func (b *SlidingBody) shape() uint64 {
	out, _ := json.Marshal(struct {
		L map[string]SlidingList
		S map[string]SlidingRoomSettings
	}{b.Lists, b.RoomSubscriptions})
	h := fnv.New64a()
	_, _ = h.Write(out)
	return h.Sum64()
}

func enabled(b *bool) bool { return b != nil && *b }

// SlidingResponse is a sliding sync response.
type SlidingResponse struct {
	Pos        string                  `json:"pos"`
	TxnID      string                  `json:"txn_id,omitempty"`
	Lists      map[string]slidingCount `json:"lists"`
	Rooms      map[string]*slidingRoom `json:"rooms"`
	Extensions map[string]any          `json:"extensions"`
}

type slidingCount struct {
	Count int `json:"count"`
}

type slidingHero struct {
	UserID string `json:"user_id"`
	Name   string `json:"displayname,omitempty"`
	Avatar string `json:"avatar_url,omitempty"`
}

type slidingRoom struct {
	Name              string            `json:"name,omitempty"`
	Avatar            string            `json:"avatar,omitempty"`
	Heroes            []slidingHero     `json:"heroes,omitempty"`
	Initial           bool              `json:"initial,omitempty"`
	RequiredState     []json.RawMessage `json:"required_state,omitempty"`
	Timeline          []json.RawMessage `json:"timeline,omitempty"`
	PrevBatch         string            `json:"prev_batch,omitempty"`
	Limited           bool              `json:"limited,omitempty"`
	NumLive           int               `json:"num_live"`
	BumpStamp         int64             `json:"bump_stamp"`
	JoinedCount       int               `json:"joined_count"`
	InvitedCount      int               `json:"invited_count"`
	NotificationCount int               `json:"notification_count"`
	HighlightCount    int               `json:"highlight_count"`
	// UnreadThreads are the counts per thread root, as /sync's.
	UnreadThreads    map[string]*unreadCounts `json:"unread_thread_notifications,omitempty"`
	InviteState      []json.RawMessage        `json:"invite_state,omitempty"`
	IsDM             bool                     `json:"is_dm,omitempty"`
	ExpandedTimeline bool                     `json:"expanded_timeline,omitempty"`
}

// maxSlidingTimeline bounds a room's timeline_limit.
const maxSlidingTimeline = 100

// Bounds of a request: lists, ranges per list, subscriptions and
// required_state entries per list or subscription.
const (
	maxSlidingLists         = 50
	maxSlidingRanges        = 50
	maxSlidingSubscriptions = 500
	maxSlidingRequired      = 100
)

func (b *SlidingBody) check() error {
	if len(b.Lists) > maxSlidingLists {
		return merr.InvalidParam("at most %d lists", maxSlidingLists)
	}
	if len(b.RoomSubscriptions) > maxSlidingSubscriptions {
		return merr.InvalidParam("at most %d room_subscriptions", maxSlidingSubscriptions)
	}
	for name, l := range b.Lists {
		if len(l.Ranges) > maxSlidingRanges {
			return merr.InvalidParam("lists.%s: at most %d ranges", name, maxSlidingRanges)
		}
		for _, r := range l.Ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return merr.InvalidParam("lists.%s.ranges: each range is [start, end] with 0 <= start <= end", name)
			}
		}
		if err := l.SlidingRoomSettings.check(); err != nil {
			return err
		}
		b.Lists[name] = l
	}
	for id, s := range b.RoomSubscriptions {
		if err := s.check(); err != nil {
			return err
		}
		b.RoomSubscriptions[id] = s
	}
	return b.Extensions.check()
}

func (s *SlidingRoomSettings) check() error {
	if s.TimelineLimit < 0 {
		return merr.InvalidParam("timeline_limit must not be negative")
	}
	s.TimelineLimit = min(s.TimelineLimit, maxSlidingTimeline)
	if len(s.RequiredState) > maxSlidingRequired {
		return merr.InvalidParam("at most %d required_state entries", maxSlidingRequired)
	}
	for _, p := range s.RequiredState {
		if len(p) != 2 {
			return merr.InvalidParam("required_state: each entry is [type, state_key]")
		}
	}
	return nil
}

// StartSliding answers a sliding sync request at once when it can;
// otherwise it returns a Waiter (registered), as StartSync does.
func (s *Service) StartSliding(ctx context.Context, req SlidingRequest) (*SlidingResponse, *SlidingWaiter, error) {
	if err := req.Body.check(); err != nil {
		return nil, nil, err
	}
	req.shape = req.Body.shape()
	key := slidingKey(req.UserID, req.DeviceID, req.Body.ConnID)
	var snap *slidingSnap
	if req.Pos != "" {
		var err error
		if snap, err = s.slidingConns.get(key, req.Pos); err != nil {
			return nil, nil, err
		}
	}
	if s.opts.PresenceEnabled {
		switch req.SetPresence {
		case "", "online":
			_ = s.SetPresence(ctx, req.UserID, "online", nil)
		case "unavailable", "offline":
			_ = s.SetPresence(ctx, req.UserID, req.SetPresence, nil)
		default:
			return nil, nil, merr.InvalidParam("set_presence must be online, offline or unavailable")
		}
	}
	s.CatchUp(ctx)
	p := &slidingPoll{s: s, req: req, key: key, snap: snap}
	if snap == nil {
		resp, _, err := p.Answer(ctx, true)
		return resp, nil, err
	}
	// A to-device since acknowledges the messages before it.
	if td := req.Body.Extensions.ToDevice; td != nil && enabled(td.Enabled) && td.Since != "" && s.opts.Keys != nil {
		if n, err := strconv.ParseInt(td.Since, 10, 64); err == nil {
			s.toDevice.Ack(ctx, req.UserID, req.DeviceID, n)
		}
	}
	p.cur = snap.at
	if snap.shape != req.shape {
		// Other windows, lists or subscriptions than last time: rooms the
		// client has not got may be in them now, which no wake-up tells.
		resp, ok, err := p.Answer(ctx, req.Timeout <= 0)
		if err != nil || ok {
			return resp, nil, err
		}
	}
	return notifier.Start[*SlidingResponse](ctx, s.n, req.UserID, req.DeviceID, min(req.Timeout, MaxTimeout), p, &p.w)
}

// SlidingWaiter is a sliding sync waiting for something to send.
type SlidingWaiter = notifier.Waiter[*SlidingResponse]

// slidingPoll is one sliding sync long-poll.
type slidingPoll struct {
	s    *Service
	req  SlidingRequest
	key  string
	snap *slidingSnap
	// cur is the position sampled from (moves on after empty builds).
	cur Pos
	w   SlidingWaiter
}

// News: anything after cur for this connection (sliding_news.go); a new
// connection (no snapshot) has everything to get.
func (p *slidingPoll) News() bool {
	return p.snap == nil || p.s.slidingNews(p.req, p.snap, p.cur)
}

func (p *slidingPoll) Answer(ctx context.Context, force bool) (*SlidingResponse, bool, error) {
	p.s.slidingConns.builds.Add(1)
	resp, next, nonEmpty, err := p.s.buildSliding(ctx, p.req, p.snap)
	if err != nil {
		return nil, false, err
	}
	if !force && !nonEmpty {
		p.cur = next.at.Max(p.cur)
		return nil, false, nil
	}
	resp.Pos = p.s.slidingConns.put(p.key, next, p.snap == nil)
	return resp, true, nil
}

func (p *slidingPoll) Empty(ctx context.Context) (*SlidingResponse, error) {
	resp, _, err := p.Answer(ctx, true)
	return resp, err
}

// slidingEntry is one of the user's rooms, for lists: bump orders the
// lists, latest (the room's latest position the user sees) tells whether
// the client has everything.
type slidingEntry struct {
	rv           notifier.RoomView
	bump, latest int64
}

// buildSliding builds the response from snap (nil: a new connection) and
// the snapshot that follows it. nonEmpty tells whether it carries
// anything the client has not got.
func (s *Service) buildSliding(ctx context.Context, req SlidingRequest, snap *slidingSnap) (*SlidingResponse, *slidingSnap, bool, error) {
	select {
	case s.buildSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, false, ctx.Err()
	}
	defer func() { <-s.buildSlots }()
	view := s.n.View(req.UserID)
	upto := view.Upto
	if snap != nil {
		upto = upto.Max(snap.at)
	}
	ignored, err := s.users.IgnoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, nil, false, err
	}
	// next starts from what snap holds, shared until it changes (an idle
	// connection's snapshots share one map).
	next := &slidingSnap{at: upto, sent: map[string]slidingSent{}, counts: map[string]int{}, shape: req.shape, ownSent: true}
	if snap != nil {
		next.sent, next.ownSent = snap.sent, false
	}
	resp := &SlidingResponse{TxnID: req.Body.TxnID, Lists: map[string]slidingCount{}, Rooms: map[string]*slidingRoom{}, Extensions: map[string]any{}}
	nonEmpty := false

	// The user's joined and invited rooms, newest first; the rooms the
	// client has that the user left since.
	var entries []slidingEntry
	var left []notifier.RoomView
	for _, rv := range view.Rooms {
		if rv.Mem.Pos > upto.Events {
			continue
		}
		switch rv.Mem.State {
		case "join":
			// The later of its latest bump event and the user's join.
			entries = append(entries, slidingEntry{rv: rv, bump: max(rv.Bump, rv.Mem.Pos), latest: max(rv.Events, rv.Mem.Pos)})
		case "invite":
			entries = append(entries, slidingEntry{rv: rv, bump: rv.Mem.Pos, latest: rv.Mem.Pos})
		case "leave", "ban":
			if snap != nil {
				if had, ok := snap.sent[rv.ID]; ok && rv.Mem.Pos > had.pos {
					left = append(left, rv)
				}
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].bump != entries[j].bump {
			return entries[i].bump > entries[j].bump
		}
		return entries[i].rv.ID < entries[j].rv.ID
	})
	byID := make(map[string]slidingEntry, len(entries))
	for _, e := range entries {
		byID[e.rv.ID] = e
	}

	var dms, encrypted map[string]bool
	var types map[string]string
	var tags map[string]map[string]bool
	needDM, needEnc, needTypes, needTags := false, false, false, false
	for _, l := range req.Body.Lists {
		if l.Filters != nil {
			needDM = needDM || l.Filters.IsDM != nil
			needEnc = needEnc || l.Filters.IsEncrypted != nil
			needTypes = needTypes || l.Filters.needTypes()
			needTags = needTags || l.Filters.needTags()
		}
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.rv.ID
	}
	if needTypes {
		if types, err = s.roomTypes(ctx, ids); err != nil {
			return nil, nil, false, err
		}
	}
	if needTags {
		if tags, err = s.roomTags(ctx, req.UserID, upto); err != nil {
			return nil, nil, false, err
		}
	}
	for name, l := range req.Body.Lists {
		if l.Filters == nil || l.Filters.Spaces == nil {
			continue
		}
		f := *l.Filters
		f.inSpaces = map[string]bool{}
		for _, space := range f.Spaces {
			if byID[space].rv.Mem.State != "join" {
				continue
			}
			if err := s.spaceChildren(ctx, space, f.inSpaces); err != nil {
				return nil, nil, false, err
			}
		}
		l.Filters = &f
		req.Body.Lists[name] = l
	}
	if needDM {
		if dms, err = s.slidingDirect(ctx, req.UserID, snap, next, view.AccountData, upto); err != nil {
			return nil, nil, false, err
		}
	}
	if needEnc {
		if encrypted, err = s.encryptedRooms(ctx, ids); err != nil {
			return nil, nil, false, err
		}
	}

	// The rooms to send, with the settings that ask for them (merged:
	// the largest timeline; in wantReq, every required_state entry of
	// the lists and subscriptions that hold the room).
	want := map[string]*SlidingRoomSettings{}
	wantReq := map[string]*slidingReq{}
	reqs := slidingReqs{}
	add := func(id string, set SlidingRoomSettings, r *slidingReq) {
		w := want[id]
		if w == nil {
			w = &SlidingRoomSettings{}
			want[id] = w
		}
		w.TimelineLimit = max(w.TimelineLimit, set.TimelineLimit)
		wantReq[id] = reqs.union(wantReq[id], r)
	}
	// win is the rooms of each list's window and the subscriptions, for
	// the extensions' lists and rooms.
	win := &slidingWindows{lists: map[string][]string{}, subs: map[string]bool{}}
	names := make([]string, 0, len(req.Body.Lists))
	for name := range req.Body.Lists {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := req.Body.Lists[name]
		var rooms []string
		for _, e := range entries {
			if !l.Filters.keep(e.rv.ID, e.rv.Mem.State == "invite", dms, encrypted, types, tags) {
				continue
			}
			rooms = append(rooms, e.rv.ID)
		}
		resp.Lists[name] = slidingCount{Count: len(rooms)}
		next.counts[name] = len(rooms)
		if snap == nil || snap.counts[name] != len(rooms) {
			nonEmpty = true
		}
		lr := reqs.get(l.RequiredState)
		for _, r := range l.Ranges {
			for i := r[0]; i <= r[1] && i < len(rooms); i++ {
				add(rooms[i], l.SlidingRoomSettings, lr)
				win.lists[name] = append(win.lists[name], rooms[i])
			}
		}
	}
	var outside []string
	for id, set := range req.Body.RoomSubscriptions {
		if _, ok := byID[id]; ok {
			add(id, set, reqs.get(set.RequiredState))
			win.subs[id] = true
		} else {
			outside = append(outside, id)
		}
	}
	// Subscriptions to rooms the user is not in: the world-readable ones.
	if len(outside) > 0 {
		readable, err := s.slidingReadable(ctx, outside, upto)
		if err != nil {
			return nil, nil, false, err
		}
		for _, e := range readable {
			byID[e.rv.ID] = e
			set := req.Body.RoomSubscriptions[e.rv.ID]
			add(e.rv.ID, set, reqs.get(set.RequiredState))
			win.subs[e.rv.ID] = true
		}
	}

	now := nowMS()
	// whole are the rooms the extensions send all of theirs for: those
	// sent whole in this response, and those back in the window (their
	// account data, receipts and typing may have changed while out).
	whole := map[string]bool{}
	win.whole = whole
	next.window = make([]string, 0, len(want))
	for id := range want {
		next.window = append(next.window, id)
	}
	sort.Strings(next.window)
	if snap != nil && slices.Equal(next.window, snap.window) {
		next.window = snap.window
	}
	for id, set := range want {
		e := byID[id]
		invite := e.rv.Mem.State == "invite"
		var prev slidingSent
		had := false
		if snap != nil {
			prev, had = snap.sent[id]
		}
		if had && prev.invite && !invite {
			had = false // an invite accepted: the client has none of the room yet
		}
		if !had {
			prev = slidingSent{}
		}
		if had && !snap.inWindow(id) {
			whole[id] = true
		}
		sentAt := prev.pos
		required := wantReq[id]
		newState := had && (prev.required == nil || prev.required.key != required.key)
		// A larger timeline_limit than the client last asked of the room
		// (opening it) sends its timeline again, expanded.
		expand := had && !invite && set.TimelineLimit > prev.limit
		if had && e.latest <= sentAt && !newState && !expand {
			// Nothing new for a room the client has, unless its unread
			// counts moved (the user read it on another device, say):
			// then the counts alone.
			if !invite && s.counts.Pushed() {
				c, err := s.slidingCounts(ctx, id, req.UserID)
				if err != nil {
					return nil, nil, false, err
				}
				if c != prev.counts {
					joined, invited, _ := s.n.RoomMembers(id, req.UserID)
					resp.Rooms[id] = &slidingRoom{BumpStamp: e.bump, JoinedCount: joined, InvitedCount: invited,
						NotificationCount: c.NotificationCount, HighlightCount: c.HighlightCount, UnreadThreads: s.slidingThreadCounts(id, req.UserID)}
					prev.counts, prev.limit = c, set.TimelineLimit
					next.setSent(id, prev)
					nonEmpty = true
					continue
				}
			}
			if prev.limit != set.TimelineLimit {
				prev.limit = set.TimelineLimit
				next.setSent(id, prev)
			}
			continue
		}
		var room *slidingRoom
		var lazy []string
		if invite {
			if had {
				continue
			}
			evs, err := s.invites.Invite(ctx, req.UserID, id, ignored)
			if err != nil {
				return nil, nil, false, err
			}
			if evs == nil {
				continue
			}
			room = &slidingRoom{Initial: true, InviteState: evs, BumpStamp: e.bump}
		} else {
			room, lazy, err = s.slidingRoom(ctx, req, e.rv, set.TimelineLimit, required, prev, had, expand, upto, now, ignored)
			if err != nil {
				return nil, nil, false, err
			}
			if had && !expand && e.latest <= sentAt && len(room.RequiredState) == 0 && len(room.Timeline) == 0 {
				// Other required_state, but nothing new to send: the
				// client has all of it (or asks for less).
				next.setSent(id, slidingSent{pos: sentAt, required: required, lazy: lazy, limit: set.TimelineLimit, counts: prev.counts})
				continue
			}
			if dms == nil {
				if dms, err = s.slidingDirect(ctx, req.UserID, snap, next, view.AccountData, upto); err != nil {
					return nil, nil, false, err
				}
			}
			room.IsDM = dms[id]
			room.BumpStamp = e.bump
		}
		if !had && !invite {
			whole[id] = true
		}
		next.setSent(id, slidingSent{pos: max(e.latest, sentAt), invite: invite, required: required, lazy: lazy, limit: set.TimelineLimit,
			counts: unreadCounts{NotificationCount: room.NotificationCount, HighlightCount: room.HighlightCount}})
		resp.Rooms[id] = room
		nonEmpty = true
	}
	if next.ownSent {
		next.trimLazy()
	}

	// Rooms left (or invites refused or withdrawn) since the client had
	// them: sent once more, up to the leave, then forgotten.
	if len(left) > 0 {
		var all [][]string
		limit := 0
		for _, l := range req.Body.Lists {
			limit = max(limit, l.TimelineLimit)
			all = append(all, l.RequiredState...)
		}
		required := reqs.get(all)
		for _, rv := range left {
			if _, ok := want[rv.ID]; ok {
				continue // subscribed to as world-readable: sent as such
			}
			prev := snap.sent[rv.ID]
			if prev.invite {
				prev.pos = rv.Mem.Pos - 1 // only the leave itself
			}
			at := upto
			at.Events = rv.Mem.Pos
			// The state sent is that the client asked for last.
			had := required
			if prev.required != nil {
				had = prev.required
			}
			room, _, err := s.slidingRoom(ctx, req, rv, limit, had, prev, true, false, at, now, ignored)
			if err != nil {
				return nil, nil, false, err
			}
			room.BumpStamp = rv.Mem.Pos
			next.deleteSent(rv.ID)
			resp.Rooms[rv.ID] = room
			nonEmpty = true
		}
	}

	news, err := s.slidingExtensions(ctx, req, snap, upto, win, resp)
	if err != nil {
		return nil, nil, false, err
	}
	nonEmpty = nonEmpty || news
	news, err = s.slidingEphemeral(ctx, req, snap, upto, win, byID, resp)
	if err != nil {
		return nil, nil, false, err
	}
	nonEmpty = nonEmpty || news
	return resp, next, nonEmpty, nil
}

// slidingRoom builds one joined room: whole (initial) when the client has
// not had it, else what came after prev (with its newest timeline_limit
// events when expand). Its required state is that of required the client
// has not had (as of prev.pos) or that changed since; $LAZY members it
// has had are not sent again. lazy is the members the client has after
// this, least recently sent first. The caller sets its bump_stamp.
func (s *Service) slidingRoom(ctx context.Context, req SlidingRequest, rv notifier.RoomView, limit int, required *slidingReq, prev slidingSent, had, expand bool, upto Pos, now int64, ignored map[string]struct{}) (room *slidingRoom, lazy []string, err error) {
	roomID := rv.ID
	sentAt := prev.pos
	room = &slidingRoom{Initial: !had, ExpandedTimeline: expand}
	sreq := SyncRequest{UserID: req.UserID, DeviceID: req.DeviceID, Opts: &Opts{TimelineLimit: limit}, ignored: ignored}
	since := int64(0)
	if had && !expand {
		since = sentAt
	}
	var vis *visibility
	keep := s.timelineKeepWith(ctx, sreq, roomID, rv.Mem, upto.Events, &vis)
	sel, err := s.selectTimeline(ctx, roomID, since, upto.Events, limit, keep)
	if err != nil {
		return nil, nil, err
	}
	if len(sel.events) > 0 {
		if room.Timeline, err = s.appendTimelineKnown(ctx, nil, sel.events, now, req.UserID, req.DeviceID, false, vis.history(roomID)); err != nil {
			return nil, nil, err
		}
		room.PrevBatch = pageToken(sel.prevBatch)
	}
	room.Limited = sel.limited
	if had {
		for _, e := range sel.events {
			if e.pos > sentAt {
				room.NumLive++
			}
		}
	}

	// State: the required entries of the state at upto; for a room the
	// client has, only those it was not sent (new to required) or that
	// changed since it was last sent.
	var state map[[2]string]string
	if sel.last != nil {
		// The window's newest event is the room's last one up to upto:
		// the state after it, without looking for it.
		state, err = s.stateAfterEvent(ctx, roomID, sel.last, upto.Events)
	} else {
		state, err = s.stateAtPos(ctx, roomID, upto.Events)
	}
	if err != nil {
		return nil, nil, err
	}
	// unchanged tells whether a state entry is as it was at sentAt. When
	// the timeline holds every event since then (as /sync's incremental
	// state does), the entries its state events set are the changed ones;
	// otherwise the state at sentAt tells.
	var hadReq *slidingReq
	unchanged := func([2]string, string) bool { return false }
	if had {
		hadReq = prev.required
		if !expand && !sel.limited && !sel.droppedState {
			changed := map[[2]string]bool{}
			for _, e := range sel.events {
				if e.stateKey != nil {
					changed[[2]string{e.typ, *e.stateKey}] = true
				}
			}
			unchanged = func(k [2]string, _ string) bool { return !changed[k] }
		} else {
			before, err := s.stateAtPos(ctx, roomID, sentAt)
			if err != nil {
				return nil, nil, err
			}
			unchanged = func(k [2]string, id string) bool { return before[k] == id }
		}
	}
	// The members the client has through $LAZY: forgotten when it asks
	// no more for them.
	var remembered map[string]bool
	if had && required.lazy && hadReq != nil && hadReq.lazy {
		lazy = prev.lazy
		remembered = make(map[string]bool, len(lazy))
		for _, u := range lazy {
			remembered[u] = true
		}
	}
	senders := map[string]bool{}
	for _, e := range sel.events {
		senders[e.sender] = true
	}
	me := req.UserID
	var ids []string
	send := map[string]bool{}
	// sentLazy are the members sent through $LAZY now; forget those
	// remembered whose member event changed and is not sent.
	var sentLazy, forget []string
	for k, id := range state {
		byLazy := false
		if !required.covers(k, me) {
			if !required.lazyMember(k, me, senders) {
				if remembered[k[1]] && k[0] == "m.room.member" && !unchanged(k, id) {
					// Changed, not sent: the client's copy is stale now.
					forget = append(forget, k[1])
				}
				continue
			}
			byLazy = true
		}
		if had && (hadReq.covers(k, me) || k[0] == "m.room.member" && remembered[k[1]]) && unchanged(k, id) {
			continue // the client has it
		}
		ids = append(ids, id)
		send[id] = true
		if byLazy {
			sentLazy = append(sentLazy, k[1])
		}
	}
	if len(sentLazy) > 0 || len(forget) > 0 {
		lazy = rememberLazy(lazy, sentLazy, forget, senders)
	}
	// The name and avatar: with a room new to the client, and when they
	// changed (absent, the client keeps what it has).
	nameID, hasName := state[[2]string{"m.room.name", ""}]
	avatarID, hasAvatar := state[[2]string{"m.room.avatar", ""}]
	hasName = hasName && !(had && unchanged([2]string{"m.room.name", ""}, nameID))
	hasAvatar = hasAvatar && !(had && unchanged([2]string{"m.room.avatar", ""}, avatarID))
	if hasName {
		ids = append(ids, nameID)
	}
	if hasAvatar {
		ids = append(ids, avatarID)
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var c struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	if e := evs[nameID]; hasName && e != nil && json.Unmarshal(e.content, &c) == nil {
		room.Name = c.Name
	}
	if e := evs[avatarID]; hasAvatar && e != nil && json.Unmarshal(e.content, &c) == nil {
		room.Avatar = c.URL
	}
	list := make([]*clientEvent, 0, len(send))
	for id := range send {
		if e := evs[id]; e != nil && e.stateKey != nil {
			list = append(list, e)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].pos < list[j].pos })
	if room.RequiredState, err = s.appendEvents(ctx, nil, list, now, "", "", false); err != nil {
		return nil, nil, err
	}

	joined, invited, heroes := s.n.RoomMembers(roomID, req.UserID)
	room.JoinedCount, room.InvitedCount = joined, invited
	if room.Name == "" && !had {
		sort.Strings(heroes)
		heroes = heroes[:min(len(heroes), 5)]
		var memberIDs []string
		for _, h := range heroes {
			if id, ok := state[[2]string{"m.room.member", h}]; ok {
				memberIDs = append(memberIDs, id)
			}
		}
		members, err := s.eventsByID(ctx, memberIDs)
		if err != nil {
			return nil, nil, err
		}
		for _, h := range heroes {
			hero := slidingHero{UserID: h}
			if e := members[state[[2]string{"m.room.member", h}]]; e != nil {
				var c struct {
					Name   string `json:"displayname"`
					Avatar string `json:"avatar_url"`
				}
				if json.Unmarshal(e.content, &c) == nil {
					hero.Name, hero.Avatar = c.Name, c.Avatar
				}
			}
			room.Heroes = append(room.Heroes, hero)
		}
	}
	counts, err := s.slidingCounts(ctx, roomID, req.UserID)
	if err != nil {
		return nil, nil, err
	}
	room.NotificationCount, room.HighlightCount = counts.NotificationCount, counts.HighlightCount
	room.UnreadThreads = s.slidingThreadCounts(roomID, req.UserID)
	return room, lazy, nil
}

// slidingCounts are a room's unread counts for the user: the room's
// totals, threads included (as Element X shows them).
func (s *Service) slidingCounts(ctx context.Context, roomID, userID string) (unreadCounts, error) {
	if !s.counts.Pushed() {
		return s.unread(ctx, roomID, userID)
	}
	total, _ := s.counts.FromPush(roomID, userID, false)
	return unreadCounts{NotificationCount: total.Notifications, HighlightCount: total.Highlights}, nil
}

// slidingThreadCounts are each thread's counts (unread_thread_notifications,
// as /sync gives them), beside the room's totals; none without push counts.
func (s *Service) slidingThreadCounts(roomID, userID string) map[string]*unreadCounts {
	if !s.counts.Pushed() {
		return nil
	}
	_, threads := s.counts.FromPush(roomID, userID, true)
	return threadCounts(threads)
}

// rememberLazy is had (never changed: snapshots share it) with the
// members just sent added, those of forget dropped, and the timeline's
// senders moved last (the most recently used); the least recently used
// are dropped past slidingLazyRoom.
func rememberLazy(had, sent, forget []string, senders map[string]bool) []string {
	drop := make(map[string]bool, len(sent)+len(forget))
	for _, u := range sent {
		drop[u] = true // sent again (it changed): added last
	}
	for _, u := range forget {
		drop[u] = true
	}
	out := make([]string, 0, len(had)+len(sent))
	var recent []string
	for _, u := range had {
		switch {
		case drop[u]:
		case senders[u]:
			recent = append(recent, u)
		default:
			out = append(out, u)
		}
	}
	out = append(out, recent...)
	sort.Strings(sent)
	out = append(out, sent...)
	if len(out) > slidingLazyRoom {
		out = slices.Clone(out[len(out)-slidingLazyRoom:])
	}
	return out
}

// newSlidingReq is the canonical form of a required_state list.
func newSlidingReq(req [][]string) *slidingReq {
	out := &slidingReq{entries: make([][2]string, 0, len(req))}
	for _, e := range req {
		out.entries = append(out.entries, [2]string{e[0], e[1]})
	}
	slices.SortFunc(out.entries, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	out.entries = slices.Compact(out.entries)
	parts := make([]string, 0, len(out.entries))
	for _, e := range out.entries {
		parts = append(parts, e[0]+"\x00"+e[1])
		if e == [2]string{"m.room.member", "$LAZY"} {
			out.lazy = true
		}
	}
	out.key = strings.Join(parts, "\x01")
	return out
}

// lazyMember tells whether k is a member event ["m.room.member", "$LAZY"]
// asks for: a timeline sender's, or the user's own.
func (r *slidingReq) lazyMember(k [2]string, me string, senders map[string]bool) bool {
	return r != nil && r.lazy && k[0] == "m.room.member" && (senders[k[1]] || k[1] == me)
}

// covers tells whether the entries ask for the state entry k outright
// (["*", "*"] everything; [type, "*"] every key of the type; "$ME" the
// user's own key; $LAZY, which depends on the timeline, aside: see
// lazyMember). A nil slidingReq (a room not sent yet) covers nothing.
func (r *slidingReq) covers(k [2]string, me string) bool {
	if r == nil {
		return false
	}
	for _, e := range r.entries {
		typ, key := e[0], e[1]
		if typ != "*" && typ != k[0] {
			continue
		}
		switch key {
		case "*":
			return true
		case "$ME":
			if k[1] == me {
				return true
			}
		case "$LAZY":
		default:
			if key == k[1] {
				return true
			}
		}
	}
	return false
}

// slidingReqs interns the required_states of one build: the rooms with
// the same required_state share one slidingReq.
type slidingReqs map[string]*slidingReq

// get is the interned form of req.
func (m slidingReqs) get(req [][]string) *slidingReq {
	r := newSlidingReq(req)
	if have, ok := m[r.key]; ok {
		return have
	}
	m[r.key] = r
	return r
}

// union is the interned union of a and b (a may be nil).
func (m slidingReqs) union(a, b *slidingReq) *slidingReq {
	if a == nil || a == b {
		return b
	}
	all := make([][]string, 0, len(a.entries)+len(b.entries))
	for _, e := range a.entries {
		all = append(all, []string{e[0], e[1]})
	}
	for _, e := range b.entries {
		all = append(all, []string{e[0], e[1]})
	}
	return m.get(all)
}

// trimLazy keeps the members remembered in all the rooms of a snapshot
// within slidingLazyConn: the rooms sent longest ago forget theirs first.
func (snap *slidingSnap) trimLazy() {
	total := 0
	for _, v := range snap.sent {
		total += len(v.lazy)
	}
	if total <= slidingLazyConn {
		return
	}
	ids := make([]string, 0, len(snap.sent))
	for id, v := range snap.sent {
		if len(v.lazy) > 0 {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return snap.sent[ids[i]].pos < snap.sent[ids[j]].pos })
	for _, id := range ids {
		if total <= slidingLazyConn {
			break
		}
		v := snap.sent[id]
		total -= len(v.lazy)
		v.lazy = nil
		snap.setSent(id, v)
	}
}

// slidingDirect is directRooms, kept in the connection's snapshots while
// the user's account data stays the same (adAt, the user's position in
// the view the build's upto starts from: the read covers it).
func (s *Service) slidingDirect(ctx context.Context, userID string, snap, next *slidingSnap, adAt int64, upto Pos) (map[string]bool, error) {
	if snap != nil && snap.dms != nil && snap.dmsAt == adAt {
		next.dms, next.dmsAt = snap.dms, adAt
		return snap.dms, nil
	}
	dms, err := s.directRooms(ctx, userID, upto)
	if err == nil {
		next.dms, next.dmsAt = dms, adAt
	}
	return dms, err
}

// directRooms are the rooms the user's m.direct names.
func (s *Service) directRooms(ctx context.Context, userID string, upto Pos) (map[string]bool, error) {
	global, _, err := s.accountDataStream.Changes(ctx, userID, 0, upto.AccountData, func(typ string) bool { return typ == "m.direct" }, func(string) bool { return false })
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, raw := range global {
		var ev struct {
			Content map[string][]string `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil {
			continue
		}
		for _, rooms := range ev.Content {
			for _, r := range rooms {
				out[r] = true
			}
		}
	}
	return out, nil
}

// encryptedRooms are those of ids with m.room.encryption in their state.
func (s *Service) encryptedRooms(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.stateOfRooms(ctx, "m.room.encryption", ids, func(roomID, _ string) { out[roomID] = true })
	return out, err
}

// roomTypes are the creation types of the rooms (those without one
// left out), cached: a room's type never changes.
func (s *Service) roomTypes(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	var missing []string
	for _, id := range ids {
		if t, ok := s.slidingConns.types.Get(id); ok {
			if t != "" {
				out[id] = t
			}
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	creates := map[string]string{}
	if err := s.stateOfRooms(ctx, "m.room.create", missing, func(roomID, eventID string) { creates[roomID] = eventID }); err != nil {
		return nil, err
	}
	evIDs := make([]string, 0, len(creates))
	for _, e := range creates {
		evIDs = append(evIDs, e)
	}
	evs, err := s.eventsByID(ctx, evIDs)
	if err != nil {
		return nil, err
	}
	for roomID, evID := range creates {
		e := evs[evID]
		if e == nil {
			continue
		}
		var c struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(e.content, &c)
		s.slidingConns.types.Put(roomID, c.Type)
		if c.Type != "" {
			out[roomID] = c.Type
		}
	}
	return out, nil
}

// stateOfRooms calls fn with the event ID of each of the rooms' current
// (typ, "") state event, in batches.
func (s *Service) stateOfRooms(ctx context.Context, typ string, ids []string, fn func(roomID, eventID string)) error {
	const batch = 200
	for len(ids) > 0 {
		n := min(len(ids), batch)
		args := make([]any, 0, n+1)
		args = append(args, typ)
		var in strings.Builder
		for i, id := range ids[:n] {
			if i > 0 {
				in.WriteString(", ")
			}
			args = append(args, id)
			in.WriteString("$" + strconv.Itoa(len(args)))
		}
		ids = ids[n:]
		rows, err := s.db.Query(ctx, `SELECT room_id, event_id FROM room_state WHERE type = $1 AND state_key = '' AND room_id IN (`+in.String()+`)`, args...)
		if err != nil {
			return fmt.Errorf("%s of rooms: %w", typ, err)
		}
		for rows.Next() {
			var roomID, eventID string
			if err := rows.Scan(&roomID, &eventID); err != nil {
				rows.Close()
				return err
			}
			fn(roomID, eventID)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// spaceChildren adds to into the children of a space: its current
// m.space.child state events with a via.
func (s *Service) spaceChildren(ctx context.Context, space string, into map[string]bool) error {
	rows, err := s.db.Query(ctx, `SELECT event_id FROM room_state WHERE room_id = $1 AND type = 'm.space.child'`, space)
	if err != nil {
		return fmt.Errorf("children of %s: %w", space, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	err = rows.Err()
	rows.Close()
	if err != nil || len(ids) == 0 {
		return err
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return err
	}
	for _, e := range evs {
		var c struct {
			Via []string `json:"via"`
		}
		if e.stateKey != nil && json.Unmarshal(e.content, &c) == nil && len(c.Via) > 0 {
			into[*e.stateKey] = true
		}
	}
	return nil
}

// roomTags are the tags (m.tag) of the user's rooms.
func (s *Service) roomTags(ctx context.Context, userID string, upto Pos) (map[string]map[string]bool, error) {
	_, rooms, err := s.accountDataStream.Changes(ctx, userID, 0, upto.AccountData, func(string) bool { return false }, func(typ string) bool { return typ == "m.tag" })
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]bool{}
	for roomID, evs := range rooms {
		for _, raw := range evs {
			var ev struct {
				Type    string `json:"type"`
				Content struct {
					Tags map[string]json.RawMessage `json:"tags"`
				} `json:"content"`
			}
			if json.Unmarshal(raw, &ev) != nil || ev.Type != "m.tag" {
				continue
			}
			set := map[string]bool{}
			for t := range ev.Content.Tags {
				set[t] = true
			}
			out[roomID] = set
		}
	}
	return out, nil
}
