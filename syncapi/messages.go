package syncapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// MessagesRequest is a parsed GET /rooms/{roomId}/messages.
type MessagesRequest struct {
	UserID, DeviceID, RoomID string
	From, To                 string
	// Dir is the dir parameter as given: "b" or "f"; Messages refuses
	// anything else once it knows the user may read the room (a room one
	// may not read answers 403 whatever the parameters) and sets Backwards.
	Dir       string
	Backwards bool
	Limit     int
	Opts      *Opts
}

// MessagesResponse is the answer of /messages.
type MessagesResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	State []json.RawMessage `json:"state,omitempty"`
}

// access loads what the user may see of a room; users who were never in a
// room that is not world-readable are refused.
func (s *Service) access(ctx context.Context, roomID, userID string) (*visibility, error) {
	if !validRoom(roomID) {
		return nil, merr.InvalidParam("Invalid room ID")
	}
	s.CatchUp(ctx)
	vis, err := loadVisibility(ctx, s.db, roomID, userID)
	if err != nil {
		return nil, err
	}
	if len(vis.membership) == 0 {
		for _, c := range vis.histVis {
			if c.value == "world_readable" {
				return vis, nil
			}
		}
		// Unknown rooms answer the same as rooms one is not in, so that
		// room IDs cannot be probed.
		return nil, merr.Forbidden("You are not in this room")
	}
	if vis.current != "join" && vis.current != "invite" && vis.current != "knock" {
		// A room the user left and then forgot is no longer theirs to
		// read, as if they had never been in it.
		forgotten, err := s.rooms.Forgotten(ctx, userID, roomID)
		if err != nil {
			return nil, err
		}
		if forgotten && !worldReadable(vis) {
			return nil, merr.Forbidden("You have forgotten this room")
		}
	}
	return vis, nil
}

// worldReadable tells whether the room's history is world readable now.
func worldReadable(vis *visibility) bool {
	return len(vis.histVis) > 0 && vis.histVis[len(vis.histVis)-1].value == "world_readable"
}

func validRoom(id string) bool { return len(id) > 1 && len(id) <= 255 && id[0] == '!' }

// Messages pages through a room's history.
func (s *Service) Messages(ctx context.Context, req MessagesRequest) (*MessagesResponse, error) {
	o := req.Opts
	if o == nil {
		o = DefaultOpts()
	}
	vis, err := s.access(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	switch req.Dir {
	case "b":
		req.Backwards = true
	case "f":
		req.Backwards = false
	default:
		return nil, merr.InvalidParam("dir must be b or f")
	}
	return s.messages(ctx, req, o, vis)
}

// messages pages through a room's history with the user's visibility
// loaded, in topological order (topoKey): an event received late from
// another server shows where it belongs in the DAG, not as the newest.
func (s *Service) messages(ctx context.Context, req MessagesRequest, o *Opts, vis *visibility) (*MessagesResponse, error) {
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	if limit > 1000 {
		limit = 1000
	}
	// Only published positions are shown, and a user who left sees nothing
	// that arrived after leaving.
	current := s.n.Current().Events
	ceiling := current
	if vis.current != "join" && vis.current != "invite" && len(vis.membership) > 0 {
		ceiling = vis.membership[len(vis.membership)-1].pos
	}
	// The window: keys above lower and at or below upper.
	lower, upper := bottomKey, topKey
	var from topoKey
	if req.From != "" {
		var err error
		if from, err = s.historyKey(ctx, req.RoomID, req.From); err != nil {
			return nil, err
		}
		if req.Backwards {
			upper = from
		} else {
			lower = from
		}
	}
	if req.To != "" {
		to, err := s.historyKey(ctx, req.RoomID, req.To)
		if err != nil {
			return nil, err
		}
		if req.Backwards {
			lower = to
		} else {
			upper = to
		}
	}
	// With federation, history here may have gaps (events whose parents
	// this server never got): paging back stops at the newest gap in the
	// window, fetches what lies before it from the other servers in the
	// room, and reads on (gap, backfill.go in the roomserver).
	floor := lower
	gapTopo, hasGap := int64(0), false
	if req.Backwards && s.opts.Backfill != nil {
		var err error
		if gapTopo, hasGap, err = s.gapBelow(ctx, req.RoomID, upper.topo, floor); err != nil {
			return nil, err
		}
		if hasGap {
			lower = topoKey{topo: gapTopo, pos: math.MinInt64}
		}
	}
	var ignored map[string]struct{}
	var err error
	if req.UserID != "" { // "": an admin reading the room (AdminMessages)
		if ignored, err = s.users.IgnoredUsers(ctx, req.UserID); err != nil {
			return nil, err
		}
	}
	// Page through the window in batches until the page is full: events
	// the user may not see (history visibility, ignored users) or the filter
	// rejects are passed over, up to scanBudget of them.
	var chunk []*clientEvent
	var last topoKey // the key of the last event looked at
	more := false    // events may follow the last one looked at
	backfills := 0
	for scanned, batch := 0, limit; ; batch = min(max(2*batch, 50), scanBudget) {
		evs, err := s.historyWindow(ctx, req.RoomID, lower, upper, ceiling, req.Backwards, batch)
		if err != nil {
			return nil, err
		}
		full := false
		for i, e := range evs {
			last = e.key()
			scanned++
			if vis.canSee(e.pos, e.sender, e.typ, e.stateKey) && o.timelineOK(e) && !ignoredSender(ignored, e) {
				chunk = append(chunk, e)
				if len(chunk) == limit {
					full = true
					more = i < len(evs)-1 || len(evs) == batch
					break
				}
			}
		}
		if full {
			more = more || hasGap
			break
		}
		if len(evs) < batch && hasGap {
			if backfills == maxBackfillsPerPage {
				// The next page starts at this gap.
				more = true
				break
			}
			// At the gap: ask the other servers in the room for what came
			// before it, then read on below it, as far as the next gap.
			backfills++
			if _, err := s.opts.Backfill.Backfill(ctx, req.RoomID, gapTopo, limit-len(chunk)); err != nil {
				logging.From(ctx).WithError(err).WithField("room_id", req.RoomID).Info("Backfill failed")
			}
			if len(evs) > 0 {
				upper = last.justBefore()
			}
			if gapTopo, hasGap, err = s.gapBelow(ctx, req.RoomID, gapTopo-1, floor); err != nil {
				return nil, err
			}
			lower = floor
			if hasGap {
				lower = topoKey{topo: gapTopo, pos: math.MinInt64}
			}
			continue
		}
		if len(evs) < batch {
			break // the window is exhausted
		}
		if scanned >= scanBudget {
			more = true
			break
		}
		if req.Backwards {
			upper = last.justBefore()
		} else {
			lower = last
		}
	}
	now := nowMS()
	resp := &MessagesResponse{Chunk: []json.RawMessage{}, Start: req.From}
	if resp.Start == "" {
		if req.Backwards {
			// Now, as a stream token: it stands for every event
			// published so far, whatever their keys.
			resp.Start = pageToken(current)
		} else {
			resp.Start = pageToken(0)
		}
	}
	if resp.Chunk, err = s.appendTimelineKnown(ctx, resp.Chunk, chunk, now, req.UserID, req.DeviceID, o.FederationFormat, vis.history(req.RoomID)); err != nil {
		return nil, err
	}
	if more {
		if req.Backwards {
			resp.End = historyToken(last.justBefore())
		} else {
			resp.End = historyToken(last)
		}
	}
	if o.LazyMembers && len(chunk) > 0 {
		jr := &joinedRoom{}
		if err := s.lazyMembers(ctx, jr, sortedByKey(chunk), o, now, req.DeviceID); err != nil {
			return nil, err
		}
		resp.State = jr.State.Events
	}
	return resp, nil
}

// maxBackfillsPerPage bounds the gaps one /messages page fills.
const maxBackfillsPerPage = 3

// gapBelow is the newest gap in the room's history (an event naming a
// prev_event this server lacks) at topological depth belowTopo or lower
// and above floor.
func (s *Service) gapBelow(ctx context.Context, roomID string, belowTopo int64, floor topoKey) (int64, bool, error) {
	t, ok, err := roomserver.TopGap(ctx, s.db, roomID, belowTopo)
	if err != nil || !ok || t <= floor.topo {
		return 0, false, err
	}
	return t, true, nil
}

// historyWindow reads up to n of the room's events with lower < key <=
// upper and pos <= ceiling, nearest to upper first when backwards, else
// nearest to lower first.
func (s *Service) historyWindow(ctx context.Context, roomID string, lower, upper topoKey, ceiling int64, backwards bool, n int) ([]*clientEvent, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return s.queryEvents(ctx, "messages of "+roomID, `SELECT `+roomserver.EventColumns+` FROM events
WHERE room_id = $1 AND (topo, pos) > ($2, $3) AND (topo, pos) <= ($4, $5) AND pos <= $6
ORDER BY topo `+order+`, pos `+order+` LIMIT $7`, roomID, lower.topo, lower.pos, upper.topo, upper.pos, ceiling, n)
}

// historyKey reads a pagination token as a key of the room's history. A
// stream position (an older "t" token, /sync's prev_batch, a sync token)
// becomes the greatest key among the room's events at or before it: paging
// backwards from there returns every event the position covers — then,
// where they belong, those that arrived later with older places in the
// DAG — and forwards every event above them.
func (s *Service) historyKey(ctx context.Context, roomID, token string) (topoKey, error) {
	p, err := parseHistoryToken(token)
	if err != nil || p.isKey {
		return p.key, err
	}
	k := bottomKey
	err = s.db.QueryRow(ctx, `SELECT topo, pos FROM events WHERE room_id = $1 AND pos <= $2 ORDER BY topo DESC, pos DESC LIMIT 1`,
		roomID, p.stream).Scan(&k.topo, &k.pos)
	if errors.Is(err, sql.ErrNoRows) {
		return bottomKey, nil
	}
	if err != nil {
		return k, fmt.Errorf("history key of %s at %d: %w", roomID, p.stream, err)
	}
	return k, nil
}

// sortedByKey is evs in history order.
func sortedByKey(evs []*clientEvent) []*clientEvent {
	out := append([]*clientEvent(nil), evs...)
	sort.Slice(out, func(i, j int) bool { return out[i].key().less(out[j].key()) })
	return out
}

// visibleEvent loads one event the user may see.
func (s *Service) visibleEvent(ctx context.Context, roomID, eventID, userID string) (*clientEvent, *visibility, error) {
	vis, err := s.access(ctx, roomID, userID)
	if merr.Is(err, "M_FORBIDDEN") {
		// The spec answers 404 both for unknown events and for events one may not see.
		return nil, nil, merr.NotFound("Event not found")
	}
	if err != nil {
		return nil, nil, err
	}
	evs, err := roomserver.EventsByID(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, nil, err
	}
	if len(evs) == 0 || evs[0].RoomID != roomID {
		return nil, nil, merr.NotFound("Event not found")
	}
	ce, err := s.renderCached(&evs[0])
	if err != nil {
		return nil, nil, err
	}
	if !vis.canSee(ce.pos, ce.sender, ce.typ, ce.stateKey) {
		return nil, nil, merr.NotFound("Event not found")
	}
	return ce, vis, nil
}

// Event answers GET /rooms/{roomId}/event/{eventId}.
func (s *Service) Event(ctx context.Context, userID, deviceID, roomID, eventID string) (json.RawMessage, error) {
	ce, _, err := s.visibleEvent(ctx, roomID, eventID, userID)
	if err != nil {
		return nil, err
	}
	out, err := s.appendTimeline(ctx, nil, []*clientEvent{ce}, nowMS(), userID, deviceID, false)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// ContextResponse is the answer of /context.
type ContextResponse struct {
	Start        string            `json:"start"`
	End          string            `json:"end"`
	Event        json.RawMessage   `json:"event"`
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	State        []json.RawMessage `json:"state"`
}

// Context answers GET /rooms/{roomId}/context/{eventId}.
func (s *Service) Context(ctx context.Context, userID, deviceID, roomID, eventID string, limit int, o *Opts) (*ContextResponse, error) {
	if o == nil {
		o = DefaultOpts()
	}
	if limit < 0 {
		return nil, merr.InvalidParam("limit must not be negative")
	}
	if limit > 100 {
		limit = 100
	}
	ce, vis, err := s.visibleEvent(ctx, roomID, eventID, userID)
	if err != nil {
		return nil, err
	}
	ignored, err := s.users.IgnoredUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	nBefore, nAfter := limit/2, limit-limit/2
	ceiling := s.n.Current().Events
	if vis.current != "join" && vis.current != "invite" && len(vis.membership) > 0 {
		ceiling = vis.membership[len(vis.membership)-1].pos
	}
	load := func(backwards bool, lower, upper topoKey, n int) ([]*clientEvent, error) {
		if n == 0 {
			return nil, nil
		}
		evs, err := s.historyWindow(ctx, roomID, lower, upper, ceiling, backwards, n)
		if err != nil {
			return nil, err
		}
		var out []*clientEvent
		for _, c := range evs {
			if vis.canSee(c.pos, c.sender, c.typ, c.stateKey) && o.timelineOK(c) && !ignoredSender(ignored, c) {
				out = append(out, c)
			}
		}
		return out, nil
	}
	// In history order, as /messages: the events with keys next to the
	// event's on either side.
	before, err := load(true, bottomKey, ce.key().justBefore(), nBefore)
	if err != nil {
		return nil, err
	}
	after, err := load(false, ce.key(), topKey, nAfter)
	if err != nil {
		return nil, err
	}
	now := nowMS()
	resp := &ContextResponse{EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}, State: []json.RawMessage{}}
	known := vis.history(roomID)
	one, err := s.appendTimelineKnown(ctx, nil, []*clientEvent{ce}, now, userID, deviceID, o.FederationFormat, known)
	if err != nil {
		return nil, err
	}
	resp.Event = one[0]
	if resp.EventsBefore, err = s.appendTimelineKnown(ctx, resp.EventsBefore, before, now, userID, deviceID, o.FederationFormat, known); err != nil {
		return nil, err
	}
	if resp.EventsAfter, err = s.appendTimelineKnown(ctx, resp.EventsAfter, after, now, userID, deviceID, o.FederationFormat, known); err != nil {
		return nil, err
	}
	start := ce.key().justBefore()
	if len(before) > 0 {
		start = before[len(before)-1].key().justBefore()
	}
	end := ce.key()
	if len(after) > 0 {
		end = after[len(after)-1].key()
	}
	resp.Start, resp.End = historyToken(start), historyToken(end)
	// State at the event (lazy-loaded to the senders shown, if asked).
	stateIDs, err := s.rooms.StateIDsAtSnapshot(ctx, ce.snapshot)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{userID: true, ce.sender: true}
	for _, e := range before {
		senders[e.sender] = true
	}
	for _, e := range after {
		senders[e.sender] = true
	}
	var ids []string
	for k, id := range stateIDs {
		if o.LazyMembers && k[0] == "m.room.member" && !senders[k[1]] {
			continue
		}
		ids = append(ids, id)
	}
	jr := &joinedRoom{}
	if _, err := s.appendState(ctx, jr, ids, o, now, deviceID); err != nil {
		return nil, err
	}
	resp.State = append(resp.State, jr.State.Events...)
	return resp, nil
}

// RoomState answers /rooms/{roomId}/state: the current state for members,
// the state when they left for former members.
func (s *Service) RoomState(ctx context.Context, userID, roomID string) ([]json.RawMessage, map[[2]string]*ClientEvent, error) {
	vis, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, nil, err
	}
	return s.roomState(ctx, roomID, vis)
}

// roomState is RoomState with the user's visibility loaded.
func (s *Service) roomState(ctx context.Context, roomID string, vis *visibility) ([]json.RawMessage, map[[2]string]*ClientEvent, error) {
	var ids map[[2]string]string
	var err error
	if vis.current == "join" || len(vis.membership) == 0 {
		ids, err = s.stateAtPos(ctx, roomID, s.n.Current().Events)
	} else {
		ids, err = s.stateAtPos(ctx, roomID, vis.membership[len(vis.membership)-1].pos)
	}
	if err != nil {
		return nil, nil, err
	}
	list := make([]string, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	evs, err := s.eventsByID(ctx, list)
	if err != nil {
		return nil, nil, err
	}
	byKey := make(map[[2]string]*ClientEvent, len(ids))
	sorted := make([]*clientEvent, 0, len(evs))
	for k, id := range ids {
		if e := evs[id]; e != nil {
			byKey[k] = e
			sorted = append(sorted, e)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].pos < sorted[j].pos })
	now := nowMS()
	out := make([]json.RawMessage, 0, len(sorted))
	for _, e := range sorted {
		out = append(out, e.JSON(now))
	}
	return out, byKey, nil
}

// StateEvent answers /rooms/{roomId}/state/{type}/{stateKey} with the content.
func (s *Service) StateEvent(ctx context.Context, userID, roomID, typ, key string, format string) (json.RawMessage, error) {
	_, byKey, err := s.RoomState(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	e := byKey[[2]string{typ, key}]
	if e == nil {
		return nil, merr.NotFound("Event not found")
	}
	if format == "event" {
		return e.JSON(nowMS()), nil
	}
	return json.RawMessage(e.content), nil
}

// memberships are the values of a member event's membership.
var memberships = map[string]bool{"join": true, "invite": true, "knock": true, "leave": true, "ban": true}

// Members answers /rooms/{roomId}/members: the member events as of at (a
// /sync or /messages token; now when empty), for a user who left as of
// their leaving at the latest. membership and not_membership filter; given
// both, an event passes if either lets it through (the spec's "or").
func (s *Service) Members(ctx context.Context, userID, roomID, at, membership, notMembership string) ([]json.RawMessage, error) {
	for _, v := range []string{membership, notMembership} {
		if v != "" && !memberships[v] {
			return nil, merr.InvalidParam("Unknown membership %q: use join, invite, knock, leave or ban", v)
		}
	}
	vis, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	pos := s.n.Current().Events
	if at != "" {
		p, err := parsePageToken(at)
		if err != nil {
			return nil, err
		}
		pos = min(pos, p)
		// The members at a point of history the user may not see (before
		// they joined a room whose history is for members) are refused, as
		// on Synapse.
		if !vis.canSee(pos, "", "", nil) {
			return nil, merr.Forbidden("You may not see the room at this point")
		}
	}
	if vis.current != "join" && len(vis.membership) > 0 {
		pos = min(pos, vis.membership[len(vis.membership)-1].pos)
	}
	ids, err := s.stateAtPos(ctx, roomID, pos)
	if err != nil {
		return nil, err
	}
	var list []string
	for k, id := range ids {
		if k[0] == "m.room.member" {
			list = append(list, id)
		}
	}
	evs, err := s.eventsByID(ctx, list)
	if err != nil {
		return nil, err
	}
	sorted := make([]*clientEvent, 0, len(evs))
	for _, e := range evs {
		sorted = append(sorted, e)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].pos < sorted[j].pos })
	now := nowMS()
	out := []json.RawMessage{}
	for _, e := range sorted {
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(e.content, &c)
		if !memberFilter(c.Membership, membership, notMembership) {
			continue
		}
		out = append(out, e.JSON(now))
	}
	return out, nil
}

// memberFilter applies /members' membership and not_membership to one
// membership m: with both, m passes if it is membership or is not
// not_membership.
func memberFilter(m, membership, notMembership string) bool {
	switch {
	case membership != "" && notMembership != "":
		return m == membership || m != notMembership
	case membership != "":
		return m == membership
	case notMembership != "":
		return m != notMembership
	}
	return true
}

// JoinedMember is one entry of /joined_members.
type JoinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers answers /rooms/{roomId}/joined_members for members of the room.
func (s *Service) JoinedMembers(ctx context.Context, userID, roomID string) (map[string]JoinedMember, error) {
	if !validRoom(roomID) {
		return nil, merr.InvalidParam("Invalid room ID")
	}
	s.CatchUp(ctx)
	if !s.isJoined(userID, roomID) {
		return nil, merr.Forbidden("You are not in this room")
	}
	rows, err := s.db.Query(ctx, `SELECT s.state_key, e.json FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.room_id = $1 AND s.type = 'm.room.member' AND s.membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined members of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := map[string]JoinedMember{}
	for rows.Next() {
		var u, js string
		if err := rows.Scan(&u, &js); err != nil {
			return nil, err
		}
		var f struct {
			Content struct {
				DisplayName *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &f)
		out[u] = JoinedMember{DisplayName: f.Content.DisplayName, AvatarURL: f.Content.AvatarURL}
	}
	return out, rows.Err()
}

// JoinedRooms lists the rooms the user is joined to.
func (s *Service) JoinedRooms(ctx context.Context, userID string) []string {
	s.CatchUp(ctx)
	v := s.n.View(userID)
	out := []string{}
	for _, r := range v.Rooms {
		if r.Mem.State == "join" {
			out = append(out, r.ID)
		}
	}
	sort.Strings(out)
	return out
}
