package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/streams"
)

// The endpoints of before spec r0 that older clients and bots still call
// and that Synapse still serves: the event stream (GET /events), the
// initial syncs (GET /initialSync, GET /rooms/{roomId}/initialSync) and
// GET /events/{eventId}. They are answered by the same builders as /sync
// and /messages, reshaped.

// EventStreamTimeline is how many events of one room one answer of GET
// /events carries at most; past it the room's state changes come along
// (as in a limited /sync), so clients still know the room's state.
const EventStreamTimeline = 100

// EventsRequest is a parsed GET /events.
type EventsRequest struct {
	UserID, DeviceID string
	// From is a sync token; empty means from now.
	From    string
	Timeout time.Duration
}

// EventsResponse is the answer of GET /events.
type EventsResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end"`
}

// Events answers GET /events: what happened for the user after From, at
// once, or as soon as something does, or empty when the timeout passes. It
// is a /sync (with its listener, sample and wait) flattened into one list:
// room events with their room_id, typing and receipts, account data and
// presence.
func (s *Service) Events(ctx context.Context, req EventsRequest) (*EventsResponse, error) {
	from := req.From
	if from == "" {
		s.CatchUp(ctx)
		from = s.n.Current().String()
	}
	resp, err := s.Sync(ctx, SyncRequest{UserID: req.UserID, DeviceID: req.DeviceID, Since: from, Timeout: req.Timeout,
		Opts: &Opts{TimelineLimit: EventStreamTimeline}, eventStream: true})
	if err != nil {
		return nil, err
	}
	return &EventsResponse{Chunk: resp.eventStream(), Start: from, End: resp.NextBatch}, nil
}

// eventStream lists the response's events in the form of GET /events.
func (r *Response) eventStream() []json.RawMessage {
	out := []json.RawMessage{}
	for _, id := range sortedKeys(r.Rooms.Join) {
		jr := r.Rooms.Join[id]
		out = append(out, jr.State.Events...)
		out = append(out, jr.Timeline.Events...)
		for _, ev := range jr.Ephemeral.Events {
			out = append(out, withRoomID(ev, id))
		}
		for _, ev := range jr.AccountData.Events {
			out = append(out, withRoomID(ev, id))
		}
	}
	for _, id := range sortedKeys(r.Rooms.Invite) {
		// The invite's own member event closes the invite state.
		if evs := r.Rooms.Invite[id].InviteState.Events; len(evs) > 0 {
			out = append(out, withRoomID(evs[len(evs)-1], id))
		}
	}
	for _, id := range sortedKeys(r.Rooms.Leave) {
		lr := r.Rooms.Leave[id]
		out = append(out, lr.State.Events...)
		out = append(out, lr.Timeline.Events...)
	}
	out = append(out, r.AccountData.Events...)
	return append(out, r.Presence.Events...)
}

// withRoomID adds room_id to an event object that has none (/sync leaves
// it out of ephemeral and account data events, which its rooms section
// already names).
func withRoomID(ev json.RawMessage, roomID string) json.RawMessage {
	rest := bytes.TrimSpace(ev)
	if len(rest) == 0 || rest[0] != '{' {
		return ev
	}
	rest = bytes.TrimSpace(rest[1:])
	b := make([]byte, 0, len(ev)+len(roomID)+16)
	b = append(b, `{"room_id":`...)
	b = appendString(b, roomID)
	if len(rest) > 0 && rest[0] != '}' {
		b = append(b, ',')
	}
	return append(b, rest...)
}

// LegacyMessages is the messages section of the initial syncs: the latest
// events, oldest first, with the tokens to page back from (start) and on
// from (end).
type LegacyMessages struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end"`
}

// RoomSnapshot is one room of GET /initialSync.
type RoomSnapshot struct {
	RoomID string `json:"room_id"`
	// Membership is the user's; empty for a world-readable room they were never in.
	Membership  string            `json:"membership,omitempty"`
	Visibility  string            `json:"visibility"`
	Messages    *LegacyMessages   `json:"messages,omitempty"`
	State       []json.RawMessage `json:"state,omitempty"`
	AccountData []json.RawMessage `json:"account_data"`
	// Inviter and Invite: for an invite, who sent it and the member event.
	Inviter string          `json:"inviter,omitempty"`
	Invite  json.RawMessage `json:"invite,omitempty"`
}

// RoomInitialSync is the answer of GET /rooms/{roomId}/initialSync.
type RoomInitialSync struct {
	RoomSnapshot
	Presence []json.RawMessage `json:"presence"`
}

// InitialSyncResponse is the answer of GET /initialSync.
type InitialSyncResponse struct {
	End         string            `json:"end"`
	Rooms       []*RoomSnapshot   `json:"rooms"`
	Presence    []json.RawMessage `json:"presence"`
	AccountData []json.RawMessage `json:"account_data"`
}

// InitialSync answers GET /initialSync: the rooms the user is joined to or
// invited to (and, with archived, those they left), each with its latest
// limit events and state, and the token to follow GET /events from.
func (s *Service) InitialSync(ctx context.Context, userID, deviceID string, limit int, archived bool) (*InitialSyncResponse, error) {
	s.CatchUp(ctx)
	view := s.n.View(userID)
	upto := view.Upto
	global, roomData, err := s.accountData(ctx, userID, 0, upto.AccountData, DefaultOpts())
	if err != nil {
		return nil, err
	}
	resp := &InitialSyncResponse{End: upto.String(), Rooms: []*RoomSnapshot{}, Presence: []json.RawMessage{}, AccountData: global}
	sort.Slice(view.Rooms, func(i, j int) bool { return view.Rooms[i].ID < view.Rooms[j].ID })
	for _, rv := range view.Rooms {
		var snap *RoomSnapshot
		switch rv.Mem.State {
		case "invite":
			if snap, err = s.inviteSnapshot(ctx, userID, rv.ID); err != nil {
				return nil, err
			}
		case "join", "leave", "ban":
			if rv.Mem.State != "join" {
				forgotten, err := s.rooms.Forgotten(ctx, userID, rv.ID)
				if err != nil {
					return nil, err
				}
				if !archived || forgotten {
					continue
				}
			}
			vis, err := loadVisibility(ctx, s.db, rv.ID, userID)
			if err != nil {
				return nil, err
			}
			if snap, err = s.roomSnapshot(ctx, userID, deviceID, rv.ID, vis, limit); err != nil {
				return nil, err
			}
			snap.AccountData = append(snap.AccountData, roomData[rv.ID]...)
		}
		if snap != nil {
			resp.Rooms = append(resp.Rooms, snap)
		}
	}
	if s.opts.PresenceEnabled {
		pr := newResponse()
		s.presenceSection(userID, nil, upto, nil, pr)
		resp.Presence = pr.Presence.Events
	}
	return resp, nil
}

// RoomInitialSync answers GET /rooms/{roomId}/initialSync: the room as the
// user sees it now (as they left it, for a former member) with its latest
// limit events, and the presence of its members.
func (s *Service) RoomInitialSync(ctx context.Context, userID, deviceID, roomID string, limit int) (*RoomInitialSync, error) {
	vis, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	snap, err := s.roomSnapshot(ctx, userID, deviceID, roomID, vis, limit)
	if err != nil {
		return nil, err
	}
	_, roomData, err := s.accountData(ctx, userID, 0, s.n.Current().AccountData, DefaultOpts())
	if err != nil {
		return nil, err
	}
	snap.AccountData = append(snap.AccountData, roomData[roomID]...)
	resp := &RoomInitialSync{RoomSnapshot: *snap, Presence: []json.RawMessage{}}
	if s.opts.PresenceEnabled && vis.current == "join" {
		now := nowMS()
		members := s.n.Members(roomID)
		sort.Strings(members)
		for _, u := range members {
			if e := s.presence.Get(u); e != nil {
				resp.Presence = append(resp.Presence, streams.PresenceEvent(u, e, now))
			}
		}
	}
	return resp, nil
}

// roomSnapshot is a room's entry of the initial syncs for a user whose
// visibility of it is loaded: the latest limit events (through the
// /messages builder) and the state (through the /state builder).
func (s *Service) roomSnapshot(ctx context.Context, userID, deviceID, roomID string, vis *visibility, limit int) (*RoomSnapshot, error) {
	snap := &RoomSnapshot{RoomID: roomID, Membership: vis.current, AccountData: []json.RawMessage{}}
	var err error
	if snap.Visibility, err = s.visibilityName(ctx, roomID); err != nil {
		return nil, err
	}
	end := pageToken(s.n.Current().Events)
	msgs := &LegacyMessages{Chunk: []json.RawMessage{}, Start: end, End: end}
	if limit > 0 {
		page, err := s.messages(ctx, MessagesRequest{UserID: userID, DeviceID: deviceID, RoomID: roomID, Backwards: true, Limit: limit}, DefaultOpts(), vis)
		if err != nil {
			return nil, err
		}
		for i := len(page.Chunk) - 1; i >= 0; i-- {
			msgs.Chunk = append(msgs.Chunk, page.Chunk[i])
		}
		// Without an end the page reached the first event the user may see.
		msgs.Start = page.End
		if msgs.Start == "" {
			msgs.Start = pageToken(0)
		}
	}
	snap.Messages = msgs
	if snap.State, _, err = s.roomState(ctx, roomID, vis); err != nil {
		return nil, err
	}
	return snap, nil
}

// inviteSnapshot is an invite's entry of GET /initialSync: the invite event and who sent it.
func (s *Service) inviteSnapshot(ctx context.Context, userID, roomID string) (*RoomSnapshot, error) {
	ignored, err := s.users.IgnoredUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	ir, err := s.invitedRoom(ctx, userID, roomID, ignored)
	if err != nil || ir == nil {
		return nil, err
	}
	snap := &RoomSnapshot{RoomID: roomID, Membership: "invite", AccountData: []json.RawMessage{}}
	if snap.Visibility, err = s.visibilityName(ctx, roomID); err != nil {
		return nil, err
	}
	evs := ir.InviteState.Events
	snap.Invite = withRoomID(evs[len(evs)-1], roomID)
	var f struct {
		Sender string `json:"sender"`
	}
	_ = json.Unmarshal(snap.Invite, &f)
	snap.Inviter = f.Sender
	return snap, nil
}

// visibilityName is "public" for a room in the room directory, else "private".
func (s *Service) visibilityName(ctx context.Context, roomID string) (string, error) {
	pub, err := s.rooms.Published(ctx, roomID)
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return "", err
	}
	if pub {
		return "public", nil
	}
	return "private", nil
}

// EventByID answers GET /events/{eventId}: the event, wherever it is, if
// the user may see it; 404 otherwise, as for one that does not exist.
func (s *Service) EventByID(ctx context.Context, userID, deviceID, eventID string) (json.RawMessage, error) {
	evs, err := roomserver.EventsByID(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, merr.NotFound("Event not found")
	}
	return s.Event(ctx, userID, deviceID, evs[0].RoomID, eventID)
}
