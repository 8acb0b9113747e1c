package syncapi

import (
	"context"
	"encoding/json"
	"math"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/notifier"
)

// SyncRequest is a parsed GET /sync.
type SyncRequest struct {
	UserID      string
	DeviceID    string
	Since       string
	Timeout     time.Duration
	FullState   bool
	SetPresence string
	// Opts is the compiled filter.
	Opts *Opts
	// eventStream: the legacy GET /events (legacy.go), which carries no
	// to-device messages, device lists or key counts.
	eventStream bool
	// ignored are the users the user ignores (m.ignored_user_list),
	// loaded when a response is built.
	ignored map[string]struct{}
}

// Opts is a filter compiled for building responses.
type Opts struct {
	TimelineLimit    int
	LazyMembers      bool
	IncludeLeave     bool
	FederationFormat bool
	RoomAllowed      func(roomID string) bool
	TimelineRoom     func(roomID string) bool
	TimelineMatch    func(typ, sender string, hasURL bool) bool
	StateMatch       func(typ, sender string) bool
	EphemeralMatch   func(typ string) bool
	RoomDataMatch    func(typ string) bool
	AccountDataMatch func(typ string) bool
	PresenceMatch    func(sender string) bool
	// ThreadCounts: the filter asks for unread_thread_notifications.
	ThreadCounts bool
	// TimelineNone: the filter lets no event into timelines.
	TimelineNone bool
	// RedundantMembers: with LazyMembers, send the timeline senders' member
	// events in every response, even when the client has them
	// (include_redundant_members).
	RedundantMembers bool
}

// DefaultOpts is the behaviour with no filter.
func DefaultOpts() *Opts {
	return &Opts{TimelineLimit: 10}
}

func (o *Opts) roomOK(id string) bool { return o.RoomAllowed == nil || o.RoomAllowed(id) }

// timelineLimit is the room's timeline limit: 0 when the filter lets
// nothing into it, so that nothing is looked for.
func (o *Opts) timelineLimit(roomID string) int {
	if o.TimelineNone || (o.TimelineRoom != nil && !o.TimelineRoom(roomID)) {
		return 0
	}
	return o.TimelineLimit
}
func (o *Opts) timelineOK(c *clientEvent) bool {
	return o.TimelineMatch == nil || o.TimelineMatch(c.typ, c.sender, c.hasURL)
}
func (o *Opts) stateOK(typ, sender string) bool {
	return o.StateMatch == nil || o.StateMatch(typ, sender)
}
func (o *Opts) ephemeralOK(typ string) bool { return o.EphemeralMatch == nil || o.EphemeralMatch(typ) }
func (o *Opts) roomDataOK(typ string) bool  { return o.RoomDataMatch == nil || o.RoomDataMatch(typ) }
func (o *Opts) accountDataOK(typ string) bool {
	return o.AccountDataMatch == nil || o.AccountDataMatch(typ)
}
func (o *Opts) presenceOK(user string) bool { return o.PresenceMatch == nil || o.PresenceMatch(user) }

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type unreadCounts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

type joinedRoom struct {
	Summary             map[string]any `json:"summary"`
	State               eventList      `json:"state"`
	Timeline            timeline       `json:"timeline"`
	Ephemeral           eventList      `json:"ephemeral"`
	AccountData         eventList      `json:"account_data"`
	UnreadNotifications *unreadCounts  `json:"unread_notifications,omitempty"`
	// UnreadThreads are the counts per thread root (filter
	// unread_thread_notifications); UnreadNotifications is then the main
	// timeline's.
	UnreadThreads map[string]*unreadCounts `json:"unread_thread_notifications,omitempty"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

// knockedRoom is a room the user knocked on, as they see it until they are
// let in (invited or joined) or turned away (left).
type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
}

type leftRoom struct {
	State       eventList `json:"state"`
	Timeline    timeline  `json:"timeline"`
	AccountData eventList `json:"account_data"`
}

type roomsResponse struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
	// Peek holds the rooms the device peeks into (MSC2753, peek.go).
	Peek map[string]*joinedRoom `json:"peek,omitempty"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// Response is a /sync response.
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       roomsResponse  `json:"rooms"`
	AccountData eventList      `json:"account_data"`
	Presence    eventList      `json:"presence"`
	ToDevice    eventList      `json:"to_device"`
	DeviceLists deviceLists    `json:"device_lists"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count"`

	// FallbackKeyTypes are the algorithms of the device's unused fallback keys.
	FallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

func newResponse() *Response {
	return &Response{
		Rooms:       roomsResponse{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		AccountData: eventList{Events: []json.RawMessage{}},
		Presence:    eventList{Events: []json.RawMessage{}},
		ToDevice:    eventList{Events: []json.RawMessage{}},
		DeviceLists: deviceLists{Changed: []string{}, Left: []string{}},
		OTKCounts:   map[string]int{},

		FallbackKeyTypes: []string{},
	}
}

func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 && len(r.Rooms.Peek) == 0 && len(r.AccountData.Events) == 0 &&
		len(r.Presence.Events) == 0 && len(r.ToDevice.Events) == 0 && len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// MaxTimeout caps how long a /sync may wait.
const MaxTimeout = 3 * time.Minute

// Sync answers one /sync request: at once when anything is new for the
// device (or on an initial or full-state sync), otherwise when something
// commits for it or when the timeout passes. A waiting sync holds no database
// connection and costs no query.
func (s *Service) Sync(ctx context.Context, req SyncRequest) (*Response, error) {
	resp, w, err := s.StartSync(ctx, req)
	if err != nil || w == nil {
		return resp, err
	}
	return w.Wait(ctx)
}

// StartSync answers a /sync at once when it can. Otherwise it returns a
// Waiter, whose listener is registered: nothing committed from then on is
// missed, and the caller chooses how to wait (Wait, or Park).
func (s *Service) StartSync(ctx context.Context, req SyncRequest) (*Response, *Waiter, error) {
	if req.Opts == nil {
		req.Opts = DefaultOpts()
	}
	s.CatchUp(ctx)
	var since *Pos
	if req.Since != "" {
		p, err := ParsePos(req.Since)
		if err != nil {
			return nil, nil, err
		}
		if s.lostTime(p) {
			// A token from the time lost at a restore: the client holds
			// things this server no longer has, and positions it will not
			// hand out again. It starts over, as an initial sync (full
			// state, limited timelines) from which its next token goes on.
			logging.From(ctx).WithField("user_id", req.UserID).Info("sync: token from before a restore, answered as an initial sync")
		} else {
			// A token from ahead of this server (a database restored from a
			// backup without its restore windows) is held to what the server
			// has, so nothing written from now on is skipped. The typing
			// stream runs on the clock and is left.
			cur := s.n.Current()
			typing := p.Typing
			p = p.Min(cur)
			p.Typing = typing
			since = &p
			// A token past to-device messages acknowledges them (keys.go).
			if !req.eventStream {
				s.toDevice.Ack(ctx, req.UserID, req.DeviceID, since.ToDevice)
			}
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
	if since == nil || req.FullState {
		resp, err := s.build(ctx, req, since, s.n.View(req.UserID))
		return resp, nil, err
	}
	timeout := min(req.Timeout, MaxTimeout)
	p := &syncPoll{s: s, req: req, cur: *since}
	return notifier.Start[*Response](ctx, s.n, req.UserID, req.DeviceID, timeout, p, &p.w)
}

// Waiter is a /sync that found nothing to answer yet (notifier.Waiter):
// its listener is registered, so a commit for the device wakes it; Wait
// holds a goroutine while waiting, Park holds none.
type Waiter = notifier.Waiter[*Response]

// syncPoll is one /sync long-poll as the notifier's Waiter drives it:
// sampled from memory, answered by build from its position on.
type syncPoll struct {
	s   *Service
	req SyncRequest
	cur Pos
	// w is the poll's Waiter (one allocation for both).
	w Waiter
}

// News: does anything concerning the device lie after the poll's position?
func (p *syncPoll) News() bool { return p.s.n.HasNews(p.req.UserID, p.req.DeviceID, p.cur) }

// Answer builds the response from the poll's position; an empty one is
// not an answer (unless forced): the position moves on to its next_batch.
func (p *syncPoll) Answer(ctx context.Context, force bool) (*Response, bool, error) {
	resp, err := p.s.build(ctx, p.req, &p.cur, p.s.n.View(p.req.UserID))
	if err != nil {
		return nil, false, err
	}
	if force || !resp.empty() {
		return resp, true, nil
	}
	next, _ := ParsePos(resp.NextBatch)
	p.cur = next.Max(p.cur)
	return nil, false, nil
}

// Empty is the answer of a sync that waited in vain: its own token, and
// the key counts every response carries.
func (p *syncPoll) Empty(ctx context.Context) (*Response, error) {
	resp := newResponse()
	resp.NextBatch = p.cur.String()
	if p.req.eventStream {
		return resp, nil
	}
	if err := p.s.keyCounts(ctx, p.req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Waiting is the number of /syncs waiting (registered listeners).
func (s *Service) Waiting() int { return s.n.Waiting() }

// build makes the response for the window (since, view.Upto].
func (s *Service) build(ctx context.Context, req SyncRequest, since *Pos, view notifier.UserView) (*Response, error) {
	// A few builds at a time: more would not finish sooner on this many
	// cores, only hold more memory (a stampede of initial syncs after a
	// restart, for one).
	select {
	case s.buildSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.buildSlots }()
	ignored, err := s.users.IgnoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	req.ignored = ignored
	resp := newResponse()
	upto := view.Upto
	if since != nil {
		// Never go backwards (a token from before a restart with a newer typing clock).
		upto = upto.Max(*since)
	}
	resp.NextBatch = upto.String()
	o := req.Opts
	var sinceEv int64
	initial := since == nil
	if !initial {
		sinceEv = since.Events
	}
	full := initial || req.FullState
	now := nowMS()

	// Account data (global and per room) changed in the window.
	roomData := map[string][]json.RawMessage{}
	if initial || req.FullState || upto.AccountData > since.AccountData {
		after := int64(0)
		if !full {
			after = since.AccountData
		}
		global, rooms, err := s.accountData(ctx, req.UserID, after, upto.AccountData, o)
		if err != nil {
			return nil, err
		}
		resp.AccountData.Events = append(resp.AccountData.Events, global...)
		roomData = rooms
	}

	// joinedNow are the rooms this response brings newly joined.
	var joinedNow []string
	receipts, err := s.receiptsFor(ctx, req.UserID, view, since, full, upto)
	if err != nil {
		return nil, err
	}
	for _, rv := range view.Rooms {
		roomID, mem := rv.ID, rv.Mem
		if !o.roomOK(roomID) {
			continue
		}
		if mem.Pos > upto.Events {
			// changed after our snapshot of positions; the next sync has it
			continue
		}
		switch mem.State {
		case "join":
			newly := full || mem.Pos > sinceEv
			if !newly && rv.Events <= sinceEv && rv.Receipts <= since.Receipts &&
				rv.Typing <= since.Typing && len(roomData[roomID]) == 0 {
				continue
			}
			jr, err := s.joinedRoom(ctx, req, rv, sinceEv, upto, since, newly, now, receipts)
			if err != nil {
				return nil, err
			}
			if newly && !initial {
				joinedNow = append(joinedNow, roomID)
			}
			jr.AccountData.Events = append(jr.AccountData.Events, roomData[roomID]...)
			if !newly && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 && len(jr.Ephemeral.Events) == 0 && len(jr.AccountData.Events) == 0 {
				continue
			}
			resp.Rooms.Join[roomID] = jr
		case "invite":
			if !initial && mem.Pos <= sinceEv {
				continue
			}
			ir, err := s.invitedRoom(ctx, req.UserID, roomID, req.ignored)
			if err != nil {
				return nil, err
			}
			if ir != nil {
				resp.Rooms.Invite[roomID] = ir
			}
		case "knock":
			if !initial && mem.Pos <= sinceEv {
				continue
			}
			kr, err := s.knockedRoom(ctx, req.UserID, roomID)
			if err != nil {
				return nil, err
			}
			if kr != nil {
				resp.Rooms.Knock[roomID] = kr
			}
		case "leave", "ban":
			if initial && !o.IncludeLeave || !initial && mem.Pos <= sinceEv {
				continue
			}
			if forgotten, err := s.rooms.Forgotten(ctx, req.UserID, roomID); err != nil {
				return nil, err
			} else if forgotten {
				continue
			}
			lr, err := s.leftRoom(ctx, req, roomID, mem, sinceEv, initial, now)
			if err != nil {
				return nil, err
			}
			lr.AccountData.Events = append(lr.AccountData.Events, roomData[roomID]...)
			resp.Rooms.Leave[roomID] = lr
		}
	}

	if err := s.peekedRooms(ctx, req, view, since, upto, now, resp); err != nil {
		return nil, err
	}

	if s.opts.PresenceEnabled && (initial || upto.Presence > since.Presence || len(joinedNow) > 0) {
		s.presenceSection(req.UserID, since, upto, joinedNow, resp)
	}
	// To-device messages, device lists and key counts (keys.go).
	if req.eventStream {
		return resp, nil
	}
	if err := s.keysSection(ctx, req, since, upto, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// accountData loads the user's account data changed in (after, upto] as
// events (streams.AccountData): the global entries, and those of each
// room, as the filter keeps them.
func (s *Service) accountData(ctx context.Context, userID string, after, upto int64, o *Opts) ([]json.RawMessage, map[string][]json.RawMessage, error) {
	return s.accountDataStream.Changes(ctx, userID, after, upto, o.AccountDataMatch, o.RoomDataMatch)
}

// peekedRooms adds the rooms the device peeks into: whole when the peek is
// new to the client, else what happened since the token. A room the user
// has joined (or was invited to) since is in those sections instead.
func (s *Service) peekedRooms(ctx context.Context, req SyncRequest, view notifier.UserView, since *Pos, upto Pos, now int64, resp *Response) error {
	peeks := s.n.Peeks(req.UserID, req.DeviceID)
	if len(peeks) == 0 {
		return nil
	}
	// The user's membership (any, at a position) in each of their rooms.
	mems := make(map[string]notifier.Membership, len(view.Rooms))
	for _, rv := range view.Rooms {
		mems[rv.ID] = rv.Mem
	}
	var sinceEv int64
	if since != nil {
		sinceEv = since.Events
	}
	for _, rv := range peeks {
		m, ok := mems[rv.ID]
		if ok && (m.State == "join" || m.State == "invite" || m.Pos >= rv.Mem.Pos) {
			// In the room's own section; a membership change after the
			// peek started (joining, then leaving) ended the peek.
			continue
		}
		if !req.Opts.roomOK(rv.ID) || rv.PeekPos > upto.Peeks {
			continue
		}
		newly := since == nil || req.FullState || rv.PeekPos > since.Peeks
		if !newly && rv.Events <= sinceEv && rv.Typing <= since.Typing {
			continue
		}
		// Every event goes through history visibility: a peeker sees
		// only while the room is world-readable.
		rv.Mem.Pos = math.MaxInt64
		jr, err := s.joinedRoom(ctx, req, rv, sinceEv, upto, since, newly, now, nil)
		if err != nil {
			return err
		}
		if !newly && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 && len(jr.Ephemeral.Events) == 0 {
			continue
		}
		if resp.Rooms.Peek == nil {
			resp.Rooms.Peek = map[string]*joinedRoom{}
		}
		resp.Rooms.Peek[rv.ID] = jr
	}
	return nil
}

// receiptsFor loads, in one query for all of them, the receipts of the
// joined rooms that the response will carry: all of them for rooms the
// device sees whole (initial sync, full state, newly joined), those after
// since for rooms with new receipts.
func (s *Service) receiptsFor(ctx context.Context, userID string, view notifier.UserView, since *Pos, full bool, upto Pos) (map[string]json.RawMessage, error) {
	var whole, changed []string
	for _, rv := range view.Rooms {
		if rv.Mem.State != "join" || rv.Mem.Pos > upto.Events {
			continue
		}
		switch {
		case full || rv.Mem.Pos > since.Events:
			whole = append(whole, rv.ID)
		case rv.Receipts > since.Receipts:
			changed = append(changed, rv.ID)
		}
	}
	var after int64
	if since != nil {
		after = since.Receipts
	}
	return s.receipts.ForRooms(ctx, userID, whole, changed, after, upto.Receipts)
}

// invitedRoom is the invite section of a room; an invite from a user the
// invitee ignores is left out (nil).
func (s *Service) invitedRoom(ctx context.Context, userID, roomID string, ignored map[string]struct{}) (*invitedRoom, error) {
	evs, err := s.invites.Invite(ctx, userID, roomID, ignored)
	if err != nil || evs == nil {
		return nil, err
	}
	return &invitedRoom{InviteState: eventList{Events: evs}}, nil
}

// knockedRoom is the knock section of a room: the room's stripped state
// at the knock and the knock itself.
func (s *Service) knockedRoom(ctx context.Context, userID, roomID string) (*knockedRoom, error) {
	evs, err := s.invites.Knock(ctx, userID, roomID)
	if err != nil || evs == nil {
		return nil, err
	}
	return &knockedRoom{KnockState: eventList{Events: evs}}, nil
}

// presenceSection adds the presence of the user and of everyone sharing a
// room with them that changed in the window (all of it in an initial sync),
// and that of every member of the rooms joinedNow (rooms newly joined in
// this response, whose members the client did not know before), from
// memory.
func (s *Service) presenceSection(userID string, since *Pos, upto Pos, joinedNow []string, resp *Response) {
	after := int64(0)
	if since != nil {
		after = since.Presence
	}
	resp.Presence.Events = append(resp.Presence.Events, s.presence.Changes(s.n, userID, after, upto.Presence, joinedNow, nowMS())...)
}
