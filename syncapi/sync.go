package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/notifier"
	"github.com/haven-chat/haven/syncapi/streams"
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
	return notifier.Start[*Response](ctx, s.n, req.UserID, req.DeviceID, timeout, &syncPoll{s: s, req: req, cur: *since})
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

// timelineSel is the timeline chosen for one room of a response.
type timelineSel struct {
	// events are the returned events, oldest first.
	events  []*clientEvent
	limited bool
	// last is the room's newest event in the window, returned or not (nil
	// when the window is empty).
	last *clientEvent
	// droppedState: a state event of the window is not in the timeline
	// (filtered out, or hidden by history visibility).
	droppedState bool
	// prevBatch is the position /messages continues backwards from.
	prevBatch int64
}

// scanBudget bounds the events one room's timeline looks through when a
// filter or history visibility leaves events out.
const scanBudget = 500

// selectTimeline picks a room's timeline from the events with since < pos
// <= upto: the newest limit events that keep accepts, looking further back
// past the ones it rejects (at most scanBudget events in all). limited
// tells whether more accepted events may lie before the returned ones.
func (s *Service) selectTimeline(ctx context.Context, roomID string, since, upto int64, limit int, keep func(*clientEvent) (bool, error)) (timelineSel, error) {
	sel := timelineSel{prevBatch: upto}
	if limit == 0 {
		// An empty timeline by the filter: the newest event tells where
		// the state block ends, and every state event of the window is
		// left out of the timeline.
		evs, err := s.eventsDesc(ctx, roomID, since, upto, 1, true)
		if err != nil || len(evs) == 0 {
			return sel, err
		}
		sel.last, sel.droppedState = evs[0], true
		return sel, nil
	}
	var picked []*clientEvent // newest first
	cursor, scanned, oldest := upto, 0, int64(0)
	batch := limit + 1
scan:
	for {
		evs, err := s.eventsDesc(ctx, roomID, since, cursor, batch, cursor == upto)
		if err != nil {
			return sel, err
		}
		for _, e := range evs {
			if sel.last == nil {
				sel.last = e
			}
			ok, err := keep(e)
			if err != nil {
				return sel, err
			}
			if ok {
				if len(picked) == limit {
					sel.limited = true
					break scan
				}
				picked = append(picked, e)
			} else if e.stateKey != nil {
				sel.droppedState = true
			}
			oldest = e.pos
			scanned++
		}
		if len(evs) < batch {
			break // back at since
		}
		if scanned >= scanBudget {
			sel.limited = true
			break
		}
		cursor = oldest - 1
		batch = min(max(2*batch, 50), scanBudget)
	}
	sel.events = make([]*clientEvent, len(picked))
	for i, e := range picked {
		sel.events[len(picked)-1-i] = e
	}
	switch {
	case len(picked) > 0:
		sel.prevBatch = sel.events[0].pos - 1
	case sel.limited:
		sel.prevBatch = oldest - 1
	}
	return sel, nil
}

// eventsDesc returns up to n of the room's events with since < pos <=
// upto, newest first; recent says the window ends at the room's newest
// events, which the recent-events cache may hold.
func (s *Service) eventsDesc(ctx context.Context, roomID string, since, upto int64, n int, recent bool) ([]*clientEvent, error) {
	if recent {
		if evs, ok := s.recentWindow(roomID, since, upto, n-1); ok {
			out := make([]*clientEvent, len(evs))
			for i, e := range evs {
				out[len(evs)-1-i] = e
			}
			return out, nil
		}
	}
	return s.queryEvents(ctx, "timeline of "+roomID, `SELECT `+roomserver.EventColumns+` FROM events WHERE room_id = $1 AND pos > $2 AND pos <= $3 ORDER BY pos DESC LIMIT $4`,
		roomID, since, upto, n)
}

func (s *Service) renderCached(e *roomserver.Event) (*clientEvent, error) {
	if ce, ok := s.rendered.Get(e.EventID); ok && ce.redacted == e.RedactedBy {
		return ce, nil
	}
	ce, err := render(e)
	if err != nil {
		return nil, err
	}
	s.rendered.Put(e.EventID, ce)
	return ce, nil
}

// queryEvents runs a query selecting roomserver.EventColumns and renders
// its rows through the cache, in row order. what names the query in errors.
func (s *Service) queryEvents(ctx context.Context, what string, q string, args ...any) ([]*clientEvent, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []*clientEvent
	for rows.Next() {
		e, err := roomserver.ScanEvent(rows)
		if err != nil {
			return nil, err
		}
		ce, err := s.renderCached(&e)
		if err != nil {
			return nil, err
		}
		out = append(out, ce)
	}
	return out, rows.Err()
}

// eventsByID renders events by ID through the cache.
func (s *Service) eventsByID(ctx context.Context, ids []string) (map[string]*clientEvent, error) {
	out := make(map[string]*clientEvent, len(ids))
	var missing []string
	for _, id := range ids {
		if ce, ok := s.rendered.Get(id); ok {
			out[id] = ce
		} else {
			missing = append(missing, id)
		}
	}
	for len(missing) > 0 {
		n := min(len(missing), 500)
		evs, err := roomserver.EventsByID(ctx, s.db, missing[:n])
		if err != nil {
			return nil, err
		}
		missing = missing[n:]
		for i := range evs {
			ce, err := s.renderCached(&evs[i])
			if err != nil {
				return nil, err
			}
			out[ce.eventID] = ce
		}
	}
	return out, nil
}

// appendEvents renders events for the user's device, with redacted_because
// where due.
func (s *Service) appendEvents(ctx context.Context, dst []json.RawMessage, evs []*clientEvent, now int64, user, device string, federation bool) ([]json.RawMessage, error) {
	var redactions map[string]*clientEvent
	for _, e := range evs {
		if e.redacted != "" {
			if redactions == nil {
				ids := []string{}
				for _, x := range evs {
					if x.redacted != "" {
						ids = append(ids, x.redacted)
					}
				}
				var err error
				if redactions, err = s.eventsByID(ctx, ids); err != nil {
					return nil, err
				}
			}
		}
	}
	if federation {
		// The stored (federation) form is not kept in memory: read it.
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.eventID
		}
		stored, err := roomserver.EventsByID(ctx, s.db, ids)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]json.RawMessage, len(stored))
		for _, e := range stored {
			byID[e.EventID] = e.JSON
		}
		for _, e := range evs {
			if js, ok := byID[e.eventID]; ok {
				dst = append(dst, js)
			}
		}
		return dst, nil
	}
	for _, e := range evs {
		var because []byte
		if r := redactions[e.redacted]; r != nil {
			because = r.JSON(now)
		}
		// One allocation: room for the age, a transaction ID and the
		// reader's membership (appendTimeline) besides what is stored.
		buf := make([]byte, 0, len(e.head)+len(e.unsigned)+len(because)+len(e.txnID)+96)
		dst = append(dst, e.appendJSON(buf, now, user, device, because))
	}
	return dst, nil
}

func (s *Service) joinedRoom(ctx context.Context, req SyncRequest, rv notifier.RoomView, sinceEv int64, upto Pos, since *Pos, newly bool, now int64, receipts map[string]json.RawMessage) (*joinedRoom, error) {
	roomID, mem := rv.ID, rv.Mem
	o := req.Opts
	jr := &joinedRoom{
		State:       eventList{Events: []json.RawMessage{}},
		Timeline:    timeline{Events: []json.RawMessage{}},
		Ephemeral:   eventList{Events: []json.RawMessage{}},
		AccountData: eventList{Events: []json.RawMessage{}},
	}
	windowStart := sinceEv
	if newly && (since == nil || mem.Pos > sinceEv) {
		windowStart = 0
	}
	if req.FullState && since != nil && mem.Pos <= sinceEv {
		windowStart = sinceEv
	}
	var vis *visibility // loaded by keep when the window reaches before the membership
	keep := s.timelineKeepWith(ctx, req, roomID, mem, upto.Events, &vis)
	sel, err := s.selectTimeline(ctx, roomID, windowStart, upto.Events, o.timelineLimit(roomID), keep)
	if err != nil {
		return nil, err
	}
	tl := sel.events
	if jr.Timeline.Events, err = s.appendTimelineKnown(ctx, jr.Timeline.Events, tl, now, req.UserID, req.DeviceID, o.FederationFormat, vis.history(roomID)); err != nil {
		return nil, err
	}
	jr.Timeline.Limited = sel.limited
	jr.Timeline.PrevBatch = pageToken(sel.prevBatch)

	in := stateInput{req: req, roomID: roomID, sinceEv: sinceEv, fresh: newly, uptoEv: upto.Events, sel: &sel}
	ids, err := s.stateIDs(ctx, in)
	if err != nil {
		return nil, err
	}
	state, err := s.appendState(ctx, jr, ids, o, now, req.DeviceID)
	if err != nil {
		return nil, err
	}
	s.recordLazy(in, state)

	// Ephemeral: typing and receipts.
	if (newly || rv.Typing > since.Typing) && o.ephemeralOK("m.typing") {
		users := s.typing.Users(roomID)
		if len(users) > 0 || !newly {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, streams.TypingEvent(users))
		}
	}
	if o.ephemeralOK("m.receipt") {
		if ev := receipts[roomID]; ev != nil {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if mem.State == "peek" {
		// A peeker has no unread counts.
	} else if s.counts.Pushed() && (newly || sel.last != nil || rv.Receipts > sinceOr(since, func(p *Pos) int64 { return p.Receipts })) {
		s.pushCounts(jr, roomID, req.UserID, o.ThreadCounts)
	} else if newly || len(tl) > 0 || rv.Receipts > sinceOr(since, func(p *Pos) int64 { return p.Receipts }) {
		c, err := s.unread(ctx, roomID, req.UserID)
		if err != nil {
			return nil, err
		}
		jr.UnreadNotifications = &c
	}
	if newly || hasMembershipChange(tl) {
		jr.Summary = s.summary(roomID, req.UserID)
		// Heroes name a room that has no name of its own.
		named, err := s.roomNamed(ctx, roomID, sel.last, upto.Events)
		if err != nil {
			return nil, err
		}
		if named {
			delete(jr.Summary, "m.heroes")
		}
	} else {
		jr.Summary = map[string]any{}
	}
	return jr, nil
}

func sinceOr(p *Pos, f func(*Pos) int64) int64 {
	if p == nil {
		return 0
	}
	return f(p)
}

func hasMembershipChange(evs []*clientEvent) bool {
	for _, e := range evs {
		if e.typ == "m.room.member" {
			return true
		}
	}
	return false
}

// stateAtPos returns the room's state after the last event at or before pos.
func (s *Service) stateAtPos(ctx context.Context, roomID string, pos int64) (map[[2]string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT `+roomserver.EventColumns+` FROM events WHERE room_id = $1 AND pos <= $2 ORDER BY pos DESC LIMIT 1`, roomID, pos)
	if err != nil {
		return nil, fmt.Errorf("last event of %s: %w", roomID, err)
	}
	var ev *roomserver.Event
	for rows.Next() {
		e, err := roomserver.ScanEvent(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		ev = &e
	}
	rows.Close()
	if ev == nil {
		return map[[2]string]string{}, nil
	}
	return s.rooms.StateIDsAfter(ctx, *ev)
}

func (s *Service) appendState(ctx context.Context, jr *joinedRoom, ids []string, o *Opts, now int64, device string) ([]*clientEvent, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	list := make([]*clientEvent, 0, len(evs))
	for _, e := range evs {
		if o.stateOK(e.typ, e.sender) {
			list = append(list, e)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].pos < list[j].pos })
	// State events carry no transaction_id.
	jr.State.Events, err = s.appendEvents(ctx, jr.State.Events, list, now, "", "", o.FederationFormat)
	return list, err
}

func (s *Service) lazyMembers(ctx context.Context, jr *joinedRoom, tl []*clientEvent, o *Opts, now int64, device string) error {
	inTimeline := map[string]bool{}
	for _, e := range tl {
		if e.typ == "m.room.member" && e.stateKey != nil {
			inTimeline[*e.stateKey] = true
		}
	}
	need := map[string]bool{}
	for _, e := range tl {
		if !inTimeline[e.sender] {
			need[e.sender] = true
		}
	}
	if len(need) == 0 {
		return nil
	}
	before, err := s.rooms.StateIDsAtSnapshot(ctx, tl[0].snapshot)
	if err != nil {
		return err
	}
	var ids []string
	for u := range need {
		if id, ok := before[[2]string{"m.room.member", u}]; ok {
			ids = append(ids, id)
		}
	}
	_, err = s.appendState(ctx, jr, ids, o, now, device)
	return err
}

// roomNamed tells whether the room has a name or a canonical alias (not
// empty) in its state after last (at pos when last is nil).
func (s *Service) roomNamed(ctx context.Context, roomID string, last *clientEvent, pos int64) (bool, error) {
	state, err := s.stateAfterEvent(ctx, roomID, last, pos)
	if err != nil {
		return false, err
	}
	var ids []string
	for _, k := range [][2]string{{"m.room.name", ""}, {"m.room.canonical_alias", ""}} {
		if id, ok := state[k]; ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return false, nil
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		var c struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		}
		if json.Unmarshal(e.content, &c) == nil && (c.Name != "" || c.Alias != "") {
			return true, nil
		}
	}
	return false, nil
}

func (s *Service) summary(roomID, userID string) map[string]any {
	joined, invited, heroes := s.n.RoomMembers(roomID, userID)
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	return map[string]any{"m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited}
}

// unread counts the messages from others after the user's read receipt
// (streams.Counts, without a push service).
func (s *Service) unread(ctx context.Context, roomID, userID string) (unreadCounts, error) {
	n, err := s.counts.Messages(ctx, roomID, userID)
	return unreadCounts{NotificationCount: n}, err
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

func (s *Service) leftRoom(ctx context.Context, req SyncRequest, roomID string, mem notifier.Membership, sinceEv int64, initial bool, now int64) (*leftRoom, error) {
	o := req.Opts
	lr := &leftRoom{State: eventList{Events: []json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{}}, AccountData: eventList{Events: []json.RawMessage{}}}
	vis, err := loadVisibility(ctx, s.db, roomID, req.UserID)
	if err != nil {
		return nil, err
	}
	keep := s.timelineKeepWith(ctx, req, roomID, mem, mem.Pos, &vis)
	sel, err := s.selectTimeline(ctx, roomID, sinceEv, mem.Pos, o.timelineLimit(roomID), keep)
	if err != nil {
		return nil, err
	}
	if lr.Timeline.Events, err = s.appendTimelineKnown(ctx, lr.Timeline.Events, sel.events, now, req.UserID, req.DeviceID, o.FederationFormat, vis.history(roomID)); err != nil {
		return nil, err
	}
	lr.Timeline.Limited = sel.limited
	lr.Timeline.PrevBatch = pageToken(sel.prevBatch)
	// The state up to the leave: what changed since the token for a room
	// the client knew as joined; all of it for a room it joined and left
	// within the window (or on an initial sync).
	joinedAtSince := !initial && vis.membershipAfter(sinceEv) == "join"
	if !initial && !joinedAtSince && !vis.joinedWithin(sinceEv, mem.Pos) {
		return lr, nil // an invite or knock that ended: the client never had the room's state
	}
	in := stateInput{req: req, roomID: roomID, sinceEv: sinceEv, fresh: !joinedAtSince, uptoEv: mem.Pos, sel: &sel}
	ids, err := s.stateIDs(ctx, in)
	if err != nil {
		return nil, err
	}
	jr := &joinedRoom{State: eventList{Events: []json.RawMessage{}}}
	state, err := s.appendState(ctx, jr, ids, o, now, req.DeviceID)
	if err != nil {
		return nil, err
	}
	s.recordLazy(in, state)
	lr.State.Events = append(lr.State.Events, jr.State.Events...)
	return lr, nil
}

// ignoredSender: the event is a message (not state) from an ignored user,
// which a client is not sent.
func ignoredSender(ignored map[string]struct{}, e *clientEvent) bool {
	if e.stateKey != nil || len(ignored) == 0 {
		return false
	}
	_, ok := ignored[e.sender]
	return ok
}

// timelineKeepWith decides which of a room's events go into the user's
// timeline: those the filter accepts (not from ignored users) and, of those from before the user's
// current membership, those history visibility lets them see. Events of
// the room's state at upto are always shown, hidden or not: a client must
// see how the room came to be as it is (who joined while the user was
// away).
//
// vis is the user's visibility in the room: loaded (into *vis) when first
// needed, unless the caller loaded it already.
func (s *Service) timelineKeepWith(ctx context.Context, req SyncRequest, roomID string, mem notifier.Membership, upto int64, visp **visibility) func(*clientEvent) (bool, error) {
	o := req.Opts
	roomOK := o.TimelineRoom == nil || o.TimelineRoom(roomID)
	var current map[[2]string]string
	return func(e *clientEvent) (bool, error) {
		if !roomOK || !o.timelineOK(e) || ignoredSender(req.ignored, e) {
			return false, nil
		}
		if e.pos >= mem.Pos {
			return true, nil
		}
		if *visp == nil {
			v, err := loadVisibility(ctx, s.db, roomID, req.UserID)
			if err != nil {
				return false, err
			}
			*visp = v
		}
		if (*visp).canSee(e.pos, e.sender, e.typ, e.stateKey) {
			return true, nil
		}
		if e.stateKey == nil {
			return false, nil
		}
		if current == nil {
			c, err := s.stateAtPos(ctx, roomID, upto)
			if err != nil {
				return false, err
			}
			current = c
		}
		return current[[2]string{e.typ, *e.stateKey}] == e.eventID, nil
	}
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
