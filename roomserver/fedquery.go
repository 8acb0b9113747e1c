package roomserver

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Reads for the Server-Server API's history endpoints (/event, /state,
// /state_ids, /event_auth, /backfill, /get_missing_events). Another server
// is served the events of the timeline and those kept outside it (outliers,
// soft-failed events), never rejected ones, in their federation form: the
// stored JSON without the unsigned data this server added for its clients.
// Whether a server may see an event (ServerMaySee) follows the history
// visibility rules at that event, applied to the server's users.

// FederationPDU is a stored event as another server gets it.
type FederationPDU struct {
	EventID string
	RoomID  string
	// JSON is the event in its federation form (no unsigned data).
	JSON json.RawMessage
}

// servable is a stored event that may be served to another server.
type servable struct {
	id, roomID string
	typ        string
	stateKey   *string
	depth      int64
	pos        int64 // 0 outside the timeline
	prevs      []string
	auths      []string
	// snapshot is the state before the event; stateKnown is false for an
	// outlier known by its ID alone (no state stored with it).
	snapshot   int64
	stateKnown bool
	json       []byte
}

// versionOf is the room version of a room (404 for an unknown room).
func (s *Service) versionOf(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	if !storage.StorableText(roomID) {
		return nil, merr.NotFound("Unknown room %s", roomID)
	}
	row, err := selectRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, merr.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(row.version))
	if err != nil {
		return nil, fmt.Errorf("room %s has unknown version %s", roomID, row.version)
	}
	return v, nil
}

// loadServable reads the servable events of a room among ids (timeline
// events, outliers and soft-failed ones; rejected ones, unknown ones and
// those of other rooms are left out).
func (s *Service) loadServable(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, ids []string) (map[string]*servable, error) {
	out := make(map[string]*servable, len(ids))
	ids = storableIDs(ids)
	for len(ids) > 0 {
		n := min(len(ids), 500)
		batch := ids[:n]
		ids = ids[n:]
		evs, err := EventsByID(ctx, s.db, batch)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.RoomID != roomID {
				continue
			}
			p, err := verImpl.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, e.RedactedBy != "")
			if err != nil {
				return nil, fmt.Errorf("parse stored event %s: %w", e.EventID, err)
			}
			out[e.EventID] = &servable{id: e.EventID, roomID: e.RoomID, typ: e.Type, stateKey: e.StateKey, depth: e.Depth, pos: e.Pos,
				prevs: p.PrevEventIDs(), auths: p.AuthEventIDs(), snapshot: e.Snapshot, stateKnown: true, json: e.JSON}
		}
		if len(evs) == len(batch) {
			continue
		}
		var rest []string
		for _, id := range batch {
			if out[id] == nil {
				rest = append(rest, id)
			}
		}
		rows, err := s.db.Query(ctx, `SELECT event_id, snapshot_id, json FROM event_outliers
WHERE event_id IN ($1) AND room_id = $2 AND status <> 'rejected'`, rest, roomID)
		if err != nil {
			return nil, fmt.Errorf("select outliers: %w", err)
		}
		for rows.Next() {
			var id, js string
			var snap int64
			if err := rows.Scan(&id, &snap, &js); err != nil {
				rows.Close()
				return nil, err
			}
			p, err := verImpl.NewEventFromTrustedJSONWithEventID(id, []byte(js), false)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("parse outlier %s: %w", id, err)
			}
			out[id] = &servable{id: id, roomID: roomID, typ: p.Type(), stateKey: p.StateKey(), depth: p.Depth(),
				prevs: p.PrevEventIDs(), auths: p.AuthEventIDs(), snapshot: snap, stateKnown: snap != 0, json: []byte(js)}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// federationJSON is a stored event's JSON without its unsigned data (prev_content,
// replaces_state, invite_room_state: what this server adds for its
// clients, covered by no signature).
func federationJSON(id string, js []byte) (json.RawMessage, error) {
	return FederationJSON(id, js)
}

// FederationJSON is a stored event's JSON as other servers get it: without
// the unsigned data this server keeps for its clients.
func FederationJSON(id string, js []byte) (json.RawMessage, error) {
	if !bytes.Contains(js, []byte(`"unsigned"`)) {
		return js, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("stored event %s: %w", id, err)
	}
	delete(m, "unsigned")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode event %s: %w", id, err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func (e *servable) pdu() (FederationPDU, error) {
	js, err := federationJSON(e.id, e.json)
	return FederationPDU{EventID: e.id, RoomID: e.roomID, JSON: js}, err
}

func pdusOf(evs []*servable) ([]FederationPDU, error) {
	out := make([]FederationPDU, 0, len(evs))
	for _, e := range evs {
		p, err := e.pdu()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// FederationEvent returns an event for another server: a timeline event,
// an outlier or a soft-failed event; a rejected or unknown one is
// M_NOT_FOUND.
func (s *Service) FederationEvent(ctx context.Context, eventID string) (FederationPDU, error) {
	if !storage.StorableText(eventID) {
		return FederationPDU{}, merr.NotFound("Event not found")
	}
	roomID, err := s.roomOfEvent(ctx, eventID)
	if err != nil {
		return FederationPDU{}, err
	}
	evs, err := s.FederationEvents(ctx, roomID, []string{eventID})
	if err != nil {
		return FederationPDU{}, err
	}
	if len(evs) == 0 {
		return FederationPDU{}, merr.NotFound("Event not found")
	}
	return evs[0], nil
}

// roomOfEvent is the room of a servable event, M_NOT_FOUND when there is none.
func (s *Service) roomOfEvent(ctx context.Context, eventID string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM events WHERE event_id = $1`, eventID).Scan(&roomID)
	if isNoRows(err) {
		err = s.db.QueryRow(ctx, `SELECT room_id FROM event_outliers WHERE event_id = $1 AND status <> 'rejected'`, eventID).Scan(&roomID)
	}
	if isNoRows(err) {
		return "", merr.NotFound("Event not found")
	}
	if err != nil {
		return "", fmt.Errorf("room of event %s: %w", eventID, err)
	}
	return roomID, nil
}

// FederationEvents returns the servable events of a room among ids, in
// the order of ids (unknown and rejected ones left out).
func (s *Service) FederationEvents(ctx context.Context, roomID string, ids []string) ([]FederationPDU, error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	got, err := s.loadServable(ctx, verImpl, roomID, ids)
	if err != nil {
		return nil, err
	}
	list := make([]*servable, 0, len(got))
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if e := got[id]; e != nil && !seen[id] {
			seen[id] = true
			list = append(list, e)
		}
	}
	return pdusOf(list)
}

// ServerInRoom tells whether a server has a user joined to the room now
// (M_NOT_FOUND for an unknown room).
func (s *Service) ServerInRoom(ctx context.Context, roomID, server string) (bool, error) {
	if _, err := s.versionOf(ctx, roomID); err != nil {
		return false, err
	}
	if server == "" || !storage.StorableText(server) {
		return false, nil
	}
	// The suffix narrows the rows; the domain check decides (a user's
	// server is everything after the first colon).
	rows, err := s.db.Query(ctx, `SELECT state_key FROM room_state
WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' AND substr(state_key, length(state_key) - $3 + 1) = $2`,
		roomID, ":"+server, len(server)+1)
	if err != nil {
		return false, fmt.Errorf("servers of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return false, err
		}
		if domainOf(userID) == server {
			return true, nil
		}
	}
	return false, rows.Err()
}

// domainOf is the server name of a user ID.
func domainOf(userID string) string {
	_, d, _ := strings.Cut(userID, ":")
	return d
}

// StateIDsAtEvent returns the state of the room before an event (the
// state /state and /state_ids answer with) and the auth chain of that
// state: the auth events of its events, recursively. An event whose state
// is not known here (an outlier known by its ID alone) is M_NOT_FOUND.
func (s *Service) StateIDsAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []string, err error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	evs, err := s.loadServable(ctx, verImpl, roomID, []string{eventID})
	if err != nil {
		return nil, nil, err
	}
	ev := evs[eventID]
	if ev == nil {
		return nil, nil, merr.NotFound("Event not found")
	}
	if !ev.stateKnown {
		return nil, nil, merr.NotFound("The state at this event is not known to this server")
	}
	st, err := s.loadSnapshot(ctx, ev.snapshot)
	if err != nil {
		return nil, nil, err
	}
	state = idsOf(st)
	sort.Strings(state)
	pdus, err := s.loadPDUs(ctx, verImpl, state)
	if err != nil {
		return nil, nil, err
	}
	var from []string
	for _, p := range pdus {
		from = append(from, p.AuthEventIDs()...)
	}
	authChain, err = s.authChainIDs(ctx, verImpl, from)
	return state, authChain, err
}

// StateAtEvent is StateIDsAtEvent with the events themselves, in their
// federation form: what /state and send_join answer.
func (s *Service) StateAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []FederationPDU, err error) {
	stateIDs, chainIDs, err := s.StateIDsAtEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	if state, err = s.FederationEvents(ctx, roomID, stateIDs); err != nil {
		return nil, nil, err
	}
	authChain, err = s.FederationEvents(ctx, roomID, chainIDs)
	return state, authChain, err
}

// AuthChainIDs returns the auth chain of an event: its auth events and
// theirs, recursively (not the event itself).
func (s *Service) AuthChainIDs(ctx context.Context, roomID, eventID string) ([]string, error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	evs, err := s.loadServable(ctx, verImpl, roomID, []string{eventID})
	if err != nil {
		return nil, err
	}
	ev := evs[eventID]
	if ev == nil {
		return nil, merr.NotFound("Event not found")
	}
	return s.authChainIDs(ctx, verImpl, ev.auths)
}

// authChainIDs walks auth_events from the given IDs, level by level; the
// result holds the IDs reached that are known here, sorted.
func (s *Service) authChainIDs(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, from []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	queue := from
	for len(queue) > 0 {
		var want []string
		for _, id := range queue {
			if !seen[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		queue = nil
		if len(want) == 0 {
			break
		}
		pdus, err := s.loadPDUs(ctx, verImpl, storableIDs(want))
		if err != nil {
			return nil, err
		}
		for id, p := range pdus {
			out = append(out, id)
			queue = append(queue, p.AuthEventIDs()...)
		}
	}
	sort.Strings(out)
	return out, nil
}

// byDepth is a max-heap of events: the deepest first, then the latest
// position, then the event ID (for a stable order).
type byDepth []*servable

func (h byDepth) Len() int { return len(h) }
func (h byDepth) Less(i, j int) bool {
	if h[i].depth != h[j].depth {
		return h[i].depth > h[j].depth
	}
	if h[i].pos != h[j].pos {
		return h[i].pos > h[j].pos
	}
	return h[i].id > h[j].id
}
func (h byDepth) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *byDepth) Push(x any)   { *h = append(*h, x.(*servable)) }
func (h *byDepth) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// BackfillEvents answers /backfill: the given events and those before
// them, walking prev_events back, the deepest first, up to limit events,
// newest first. Unknown events end the walk there.
func (s *Service) BackfillEvents(ctx context.Context, roomID string, from []string, limit int) ([]FederationPDU, error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []FederationPDU{}, nil
	}
	seen := map[string]bool{}
	var want []string
	for _, id := range from {
		if !seen[id] {
			seen[id] = true
			want = append(want, id)
		}
	}
	h := &byDepth{}
	out := []*servable{}
	for {
		got, err := s.loadServable(ctx, verImpl, roomID, want)
		if err != nil {
			return nil, err
		}
		for _, id := range want {
			if e := got[id]; e != nil {
				heap.Push(h, e)
			}
		}
		if h.Len() == 0 {
			break
		}
		e := heap.Pop(h).(*servable)
		out = append(out, e)
		if len(out) >= limit {
			break
		}
		want = nil
		for _, p := range e.prevs {
			if !seen[p] {
				seen[p] = true
				want = append(want, p)
			}
		}
	}
	return pdusOf(out)
}

// MissingEvents answers /get_missing_events: a breadth-first walk of the
// prev_events of latest, skipping (and not walking past) the events in
// earliest and those shallower than minDepth, up to limit events, returned
// oldest first. The latest events themselves are not returned.
func (s *Service) MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]FederationPDU, error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range earliest {
		seen[id] = true
	}
	var want []string
	for _, id := range latest {
		if !seen[id] {
			seen[id] = true
			want = append(want, id)
		}
	}
	got, err := s.loadServable(ctx, verImpl, roomID, want)
	if err != nil {
		return nil, err
	}
	var front []*servable
	for _, id := range want {
		if e := got[id]; e != nil {
			front = append(front, e)
		}
	}
	out := []*servable{}
	for len(front) > 0 && len(out) < limit {
		want = nil
		for _, e := range front {
			for _, p := range e.prevs {
				if !seen[p] {
					seen[p] = true
					want = append(want, p)
				}
			}
		}
		got, err := s.loadServable(ctx, verImpl, roomID, want)
		if err != nil {
			return nil, err
		}
		front = nil
		for _, id := range want {
			e := got[id]
			if e == nil || e.depth < minDepth {
				continue
			}
			if len(out) >= limit {
				break
			}
			out = append(out, e)
			front = append(front, e)
		}
	}
	// Oldest first: by depth, then by the order the walk found them in
	// reverse (the walk goes backwards).
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].depth < out[j].depth })
	return pdusOf(out)
}

// serverView is what decides a server's visibility at one point of a room:
// the history visibility and the memberships of the server's users.
type serverView struct {
	hv      string
	members map[string]string // user → membership, the server's users only
}

// allows applies the history visibility rules to a server: some user of
// it could see the event. world_readable and shared (also an unset or not
// understood setting, which counts as shared) let any server that is in
// the room see it — the endpoints serve only servers in the room now;
// invited needs a user joined or invited, joined a user joined.
func (v serverView) allows() bool {
	switch v.hv {
	case string(gomatrixserverlib.HistoryVisibilityJoined):
		for _, m := range v.members {
			if m == spec.Join {
				return true
			}
		}
		return false
	case string(gomatrixserverlib.HistoryVisibilityInvited):
		for _, m := range v.members {
			if m == spec.Join || m == spec.Invite {
				return true
			}
		}
		return false
	}
	return true
}

// historyVisibilityOf reads an m.room.history_visibility event's setting.
func historyVisibilityOf(p gomatrixserverlib.PDU) string {
	var c gomatrixserverlib.HistoryVisibilityContent
	_ = json.Unmarshal(p.Content(), &c)
	return string(c.HistoryVisibility)
}

// viewAt reads a server's view of the state snapshot snap.
func (s *Service) viewAt(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, server string, snap int64) (serverView, error) {
	v := serverView{members: map[string]string{}}
	st, err := s.loadSnapshot(ctx, snap)
	if err != nil {
		return v, err
	}
	var ids []string
	for k, id := range st {
		if (k.typ == spec.MRoomHistoryVisibility && k.key == "") || (k.typ == spec.MRoomMember && domainOf(k.key) == server) {
			ids = append(ids, id)
		}
	}
	pdus, err := s.loadPDUs(ctx, verImpl, ids)
	if err != nil {
		return v, err
	}
	for _, p := range pdus {
		switch p.Type() {
		case spec.MRoomHistoryVisibility:
			v.hv = historyVisibilityOf(p)
		case spec.MRoomMember:
			m, _ := p.Membership()
			v.members[*p.StateKey()] = m
		}
	}
	return v, nil
}

// ServerMaySee tells, for each servable event of the room among ids,
// whether the server may see it: the history visibility rules at the
// event (the state before it) allow one of the server's users to see it.
// An event that changes the history visibility, or the membership of one
// of the server's users, is visible if the rules allow it before or after
// the event. An outlier known by its ID alone (no state known at it) is
// visible. Unknown and rejected events are absent from the answer.
func (s *Service) ServerMaySee(ctx context.Context, server, roomID string, ids []string) (map[string]bool, error) {
	verImpl, err := s.versionOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	evs, err := s.loadServable(ctx, verImpl, roomID, ids)
	if err != nil {
		return nil, err
	}
	views := map[int64]serverView{}
	out := make(map[string]bool, len(evs))
	for id, e := range evs {
		if !e.stateKnown {
			out[id] = true
			continue
		}
		v, ok := views[e.snapshot]
		if !ok {
			if v, err = s.viewAt(ctx, verImpl, server, e.snapshot); err != nil {
				return nil, err
			}
			views[e.snapshot] = v
		}
		allowed := v.allows()
		if !allowed && e.stateKey != nil && (e.typ == spec.MRoomHistoryVisibility || (e.typ == spec.MRoomMember && domainOf(*e.stateKey) == server)) {
			p, err := verImpl.NewEventFromTrustedJSONWithEventID(e.id, e.json, false)
			if err != nil {
				return nil, fmt.Errorf("parse stored event %s: %w", e.id, err)
			}
			after := serverView{hv: v.hv, members: make(map[string]string, len(v.members)+1)}
			for u, m := range v.members {
				after.members[u] = m
			}
			if e.typ == spec.MRoomHistoryVisibility {
				after.hv = historyVisibilityOf(p)
			} else {
				after.members[*e.stateKey], _ = p.Membership()
			}
			allowed = after.allows()
		}
		out[id] = allowed
	}
	return out, nil
}
