package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Federation is what the roomserver needs from other servers for
// memberships across servers; the federation API implements it (its
// answers are verified: signatures, and for a join the state and auth
// chain against the auth rules). Errors that are Matrix errors (merr) reach
// the client as they are.
type Federation interface {
	// Invite asks the invitee's server to sign an invite of its user.
	Invite(ctx context.Context, invite gomatrixserverlib.PDU, strippedState []json.RawMessage) (gomatrixserverlib.PDU, error)
	// Join joins a local user to a room that lives on other servers
	// (make_join, send_join through the first of servers that answers).
	Join(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (*RemoteJoin, error)
	// Leave makes a local user leave (or reject an invite to) a room this
	// server is not in (make_leave, send_leave).
	Leave(ctx context.Context, userID, roomID string, servers []string) (gomatrixserverlib.PDU, error)
	// Knock knocks a local user on a room that lives on other servers
	// (make_knock, send_knock through the first of servers that answers)
	// and returns the knock with the room's stripped state as that server
	// answered it.
	Knock(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (knock gomatrixserverlib.PDU, strippedState []json.RawMessage, err error)
	// QueryAlias asks the alias's server which room it names.
	QueryAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
}

// RemoteJoin is a join made through another server: the join event and
// the room's state before it with its auth chain, as that server answered.
type RemoteJoin struct {
	Event     gomatrixserverlib.PDU
	State     []gomatrixserverlib.PDU
	AuthChain []gomatrixserverlib.PDU
}

// IsLocal tells whether a user ID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	return ids.ServerOf(userID, '@') == s.opts.ServerName
}

// serverInRoom tells whether a user of this server is joined to the room:
// only then is the room's state here current, and events can be built on it.
func (s *Service) serverInRoom(r *room) bool {
	for k, p := range r.state {
		if k.typ != spec.MRoomMember || !s.IsLocal(k.key) {
			continue
		}
		if m, _ := p.Membership(); m == spec.Join {
			return true
		}
	}
	return false
}

// remoteServers lists servers that may help with a room this server is not
// in: the given ones, then the sender of the user's invite, the room ID's
// server (older room versions), then the servers of members as last known.
func (s *Service) remoteServers(r *room, roomID, userID string, via []string) []string {
	seen := map[string]bool{s.opts.ServerName: true}
	var out []string
	add := func(srv string) {
		if srv != "" && !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	for _, v := range via {
		add(v)
	}
	if r != nil {
		if p := r.state[stateKey{spec.MRoomMember, userID}]; p != nil {
			add(ids.ServerOf(string(p.SenderID()), '@'))
		}
	}
	add(ids.ServerOf(roomID, '!'))
	if r != nil {
		for _, k := range sortedStateKeys(r.state) {
			if k.typ != spec.MRoomMember {
				continue
			}
			if m, _ := r.state[k].Membership(); m == spec.Join {
				add(ids.ServerOf(k.key, '@'))
			}
		}
	}
	return out
}

// JoinVia is JoinWith with servers to join through when the room lives
// elsewhere (the client's via or server_name).
func (s *Service) JoinVia(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]json.RawMessage) (string, error) {
	if s.opts.Federation == nil {
		return s.JoinWith(ctx, userID, roomIDOrAlias, content)
	}
	roomID, via, err := s.resolveVia(ctx, roomIDOrAlias, via)
	if err != nil {
		return "", err
	}
	if err := s.checkNotBlocked(ctx, roomID, userID); err != nil {
		return "", err
	}
	remote, servers, err := s.joinsRemotely(ctx, roomID, userID, via)
	if err != nil {
		return "", err
	}
	if !remote {
		return s.JoinWith(ctx, userID, roomID, content)
	}
	if len(servers) == 0 {
		return "", merr.NotFound("No server to join %s through: give one with via or server_name", roomID)
	}
	if err := checkMemberFields(memberFields(content)); err != nil {
		return "", err
	}
	raw, err := s.memberContentJSON(ctx, userID, spec.Join, memberFields(content))
	if err != nil {
		return "", err
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", err
	}
	rj, err := s.opts.Federation.Join(ctx, userID, roomID, servers, c)
	if err != nil {
		return "", err
	}
	if err := s.ImportJoin(ctx, rj); err != nil {
		return "", err
	}
	return roomID, nil
}

// resolveVia resolves a room ID or alias for a membership change that may
// go through other servers: a local alias here, another server's alias by
// asking that server, whose answer adds to the servers to go through.
func (s *Service) resolveVia(ctx context.Context, roomIDOrAlias string, via []string) (string, []string, error) {
	if !strings.HasPrefix(roomIDOrAlias, "#") {
		if !validRoomID(roomIDOrAlias) {
			return "", nil, merr.InvalidParam("%q is neither a room ID nor an alias", roomIDOrAlias)
		}
		return roomIDOrAlias, via, nil
	}
	if ids.ServerOf(roomIDOrAlias, '#') == s.opts.ServerName || s.opts.Federation == nil {
		id, err := s.ResolveAlias(ctx, roomIDOrAlias)
		return id, via, err
	}
	if err := s.checkAlias(roomIDOrAlias); err != nil {
		return "", nil, err
	}
	id, servers, err := s.opts.Federation.QueryAlias(ctx, roomIDOrAlias)
	if err != nil {
		return "", nil, err
	}
	return id, append(append([]string{}, via...), servers...), nil
}

// joinsRemotely tells whether a join to the room must go through another
// server (the room is unknown here, or no user of this server is in it),
// and through which.
func (s *Service) joinsRemotely(ctx context.Context, roomID, userID string, via []string) (bool, []string, error) {
	var remote bool
	var servers []string
	err := s.withRoom(ctx, roomID, func(r *room) error {
		if s.needsRemote(r) {
			remote, servers = true, s.remoteServers(r, roomID, userID, via)
		}
		return nil
	})
	if merr.Is(err, "M_NOT_FOUND") {
		return true, s.remoteServers(nil, roomID, userID, via), nil
	}
	return remote, servers, err
}

// needsRemote tells whether membership changes in the room must go through
// other servers: no user of this server is in it, and it is either known
// here only by an invite or knock (no create event) or other servers'
// users are in it. A room nobody is in any more stays local.
func (s *Service) needsRemote(r *room) bool {
	if s.opts.Federation == nil || s.serverInRoom(r) {
		return false
	}
	if r.state[stateKey{spec.MRoomCreate, ""}] == nil {
		return true
	}
	for k, p := range r.state {
		if k.typ == spec.MRoomMember && !s.IsLocal(k.key) {
			if m, _ := p.Membership(); m == spec.Join {
				return true
			}
		}
	}
	return false
}

// ImportJoin stores a join made through another server: the room's state
// before it enters this server's copy of the room (with positions, in
// depth order, so that readers and the sync engine see the room's state
// and members as for any other room), the auth chain beyond it as
// outliers, then the join, which becomes the room's only forward
// extremity. The answer was verified by the federation API.
func (s *Service) ImportJoin(ctx context.Context, rj *RemoteJoin) error {
	join := rj.Event
	roomID := join.RoomID().String()
	verImpl, err := gomatrixserverlib.GetRoomVersion(join.Version())
	if err != nil {
		return merr.Custom(400, "M_UNSUPPORTED_ROOM_VERSION", "Room version %s is not supported", join.Version())
	}
	unlock := s.locks.Lock(roomID)
	defer unlock()
	r, err := s.loadRoom(ctx, roomID)
	var newRoom *roomRow
	if merr.Is(err, "M_NOT_FOUND") {
		r = &room{id: roomID, version: verImpl, state: map[stateKey]gomatrixserverlib.PDU{}}
		newRoom = &roomRow{version: string(verImpl.Version())}
	} else if err != nil {
		return err
	}
	if known, err := EventsByID(ctx, s.db, []string{join.EventID()}); err != nil {
		return err
	} else if len(known) > 0 {
		return nil // the join came back through /send first
	}
	stateIDs := make([]string, 0, len(rj.State))
	for _, p := range rj.State {
		stateIDs = append(stateIDs, p.EventID())
	}
	timeline, err := EventsByID(ctx, s.db, stateIDs)
	if err != nil {
		return err
	}
	inTimeline := make(map[string]bool, len(timeline))
	for _, e := range timeline {
		inTimeline[e.EventID] = true
	}
	outliers, err := selectOutliers(ctx, s.db, append(append([]string{}, stateIDs...), authIDs(rj.AuthChain)...))
	if err != nil {
		return err
	}
	d := newDraft(r)
	d.base = map[stateKey]gomatrixserverlib.PDU{}
	state := append([]gomatrixserverlib.PDU{}, rj.State...)
	sort.SliceStable(state, func(i, j int) bool { return state[i].Depth() < state[j].Depth() })
	for _, p := range append(append([]gomatrixserverlib.PDU{join}, state...), rj.AuthChain...) {
		if err := checkStorable(p); err != nil {
			return err
		}
	}
	for _, p := range state {
		sk := p.StateKey()
		if sk == nil || p.RoomID().String() != roomID {
			return merr.BadJSON("The state of %s holds an unusable event %s", roomID, p.EventID())
		}
		if inTimeline[p.EventID()] {
			d.base[stateKey{p.Type(), *sk}] = p
		}
	}
	d.state = d.base
	for _, p := range state {
		if inTimeline[p.EventID()] {
			continue
		}
		d.push(p, eventMeta{})
		if outliers[p.EventID()].status != "" {
			d.promoted = append(d.promoted, p.EventID())
		}
	}
	d.push(join, eventMeta{})
	d.extremities, d.depth = []string{join.EventID()}, join.Depth()
	inState := make(map[string]bool, len(stateIDs))
	for _, id := range stateIDs {
		inState[id] = true
	}
	extra := func(ctx context.Context, tx *storage.Tx) error {
		for _, p := range rj.AuthChain {
			id := p.EventID()
			if inState[id] || inTimeline[id] || outliers[id].status != "" || id == join.EventID() {
				continue
			}
			if p.RoomID().String() != roomID {
				return merr.BadJSON("The auth chain of %s holds an event of another room", roomID)
			}
			if err := storeOutlier(ctx, tx, p, statusOutlier, "", 0); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := s.commit(ctx, d, newRoom, extra); err != nil {
		return err
	}
	return nil
}

func authIDs(pdus []gomatrixserverlib.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// ReceiveInvite stores an invite of a local user that another server sent
// (already signed by this server). In a room this server is in, it is an
// event like any other; otherwise the room is known here by the invite
// alone (a stub, with the inviter's stripped state for the client) until
// the user joins or rejects it.
func (s *Service) ReceiveInvite(ctx context.Context, invite gomatrixserverlib.PDU, strippedState []json.RawMessage) error {
	roomID := invite.RoomID().String()
	target := invite.StateKey()
	if target == nil || invite.Type() != spec.MRoomMember || !s.IsLocal(*target) {
		return merr.BadJSON("Not an invite of a user of this server")
	}
	if m, _ := invite.Membership(); m != spec.Invite {
		return merr.BadJSON("Not an invite")
	}
	if err := checkStorable(invite); err != nil {
		return err
	}
	if err := s.checkNotBlocked(ctx, roomID, *target); err != nil {
		return err
	}
	inRoom := false
	err := s.withRoom(ctx, roomID, func(r *room) error {
		inRoom = s.serverInRoom(r)
		return nil
	})
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return err
	}
	if inRoom {
		_, err := s.InputEvent(ctx, invite)
		return err
	}
	unsigned := map[string]any{}
	if strippedState != nil {
		unsigned["invite_room_state"] = strippedState
	}
	return s.storeOutOfRoom(ctx, invite, unsigned)
}

// storeOutOfRoom stores a membership event of a local user in a room this
// server is not in (an invite received, an invite rejected): it enters the
// timeline and the user's membership, without changing anything else of
// what is known of the room.
func (s *Service) storeOutOfRoom(ctx context.Context, pdu gomatrixserverlib.PDU, unsigned map[string]any) error {
	if err := checkStorable(pdu); err != nil {
		return err
	}
	roomID := pdu.RoomID().String()
	unlock := s.locks.Lock(roomID)
	defer unlock()
	r, err := s.loadRoom(ctx, roomID)
	var newRoom *roomRow
	if merr.Is(err, "M_NOT_FOUND") {
		verImpl, verr := gomatrixserverlib.GetRoomVersion(pdu.Version())
		if verr != nil {
			return merr.Custom(400, "M_INCOMPATIBLE_ROOM_VERSION", "Room version %s is not supported", pdu.Version())
		}
		r = &room{id: roomID, version: verImpl, state: map[stateKey]gomatrixserverlib.PDU{}}
		newRoom = &roomRow{version: string(verImpl.Version())}
	} else if err != nil {
		return err
	}
	if known, err := s.knownPDU(ctx, pdu.EventID()); err != nil || known {
		return err
	}
	d := newDraft(r)
	d.base = r.state
	d.push(pdu, eventMeta{unsigned: unsigned})
	d.extremities, d.depth = r.extremities, r.depth
	_, err = s.commit(ctx, d, newRoom, nil)
	return err
}

// outOfRoomEnd takes an event that ends a local user's invite or knock in
// a room this server is not in — a leave or ban of theirs sent by a user
// of the room's server that sent it (the invite revoked, the knock turned
// away), built on that invite or knock — as the invite was taken: into the user's membership alone, as
// this server cannot check it against a state it does not have. done is
// false for any other event.
func (s *Service) outOfRoomEnd(ctx context.Context, origin string, pdu gomatrixserverlib.PDU) (bool, error) {
	sk := pdu.StateKey()
	if s.opts.Federation == nil || origin == "" || pdu.Type() != spec.MRoomMember || sk == nil || !s.IsLocal(*sk) ||
		ids.ServerOf(string(pdu.SenderID()), '@') != origin {
		return false, nil
	}
	if m, _ := pdu.Membership(); m != spec.Leave && m != spec.Ban {
		return false, nil
	}
	var ends bool
	err := s.withRoom(ctx, pdu.RoomID().String(), func(r *room) error {
		cur := r.state[stateKey{spec.MRoomMember, *sk}]
		if m := membershipOf(r, *sk); (m == spec.Invite || m == spec.Knock) && s.needsRemote(r) {
			// It must be built on the invite or knock it ends.
			ends = pdu.Version() == r.version.Version() && slices.Contains(pdu.AuthEventIDs(), cur.EventID())
		}
		return nil
	})
	if err != nil || !ends {
		return false, nil
	}
	return true, s.storeOutOfRoom(ctx, pdu, nil)
}

// leaveRemotely rejects an invite (or leaves) a room this server is not in,
// through the servers that know it; when none answers, the invite is
// rejected here only, with a leave event of this server's making that
// follows the invite.
func (s *Service) leaveRemotely(ctx context.Context, r *room, userID string) error {
	servers := s.remoteServers(r, r.id, userID, nil)
	var leave gomatrixserverlib.PDU
	var err error
	if len(servers) > 0 {
		leave, err = s.opts.Federation.Leave(ctx, userID, r.id, servers)
	}
	if leave == nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		if leave, err = s.outOfBandLeave(r, userID); err != nil {
			return err
		}
	}
	return s.storeOutOfRoom(ctx, leave, nil)
}

// outOfBandLeave is a leave built here on the user's invite, for an invite
// no server of the room can be asked to take back.
func (s *Service) outOfBandLeave(r *room, userID string) (gomatrixserverlib.PDU, error) {
	cur := r.state[stateKey{spec.MRoomMember, userID}]
	if cur == nil {
		return nil, merr.Forbidden("You are not a member of this room")
	}
	key := userID
	proto := &gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: r.id, Type: spec.MRoomMember, StateKey: &key,
		Content: spec.RawJSON(`{"membership":"leave"}`), PrevEvents: []string{cur.EventID()}, AuthEvents: []string{cur.EventID()}, Depth: cur.Depth() + 1}
	b := r.version.NewEventBuilderFromProtoEvent(proto)
	pdu, err := b.Build(nowTime(), s.serverName, s.opts.Key.ID, s.opts.Key.Private)
	if err != nil {
		return nil, fmt.Errorf("build leave: %w", err)
	}
	return pdu, nil
}

// remoteInvite has the invitee's server sign the draft's last event (an
// invite of its user) and puts the signed event in its place.
func (s *Service) remoteInvite(ctx context.Context, d *draft, pdu gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	last := &d.events[len(d.events)-1]
	var stripped []json.RawMessage
	if st, ok := last.meta.unsigned["invite_room_state"].([]StrippedEvent); ok {
		for _, e := range st {
			b, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			stripped = append(stripped, b)
		}
	}
	signed, err := s.opts.Federation.Invite(ctx, pdu, stripped)
	if err != nil {
		return nil, err
	}
	if signed.EventID() != pdu.EventID() {
		return nil, merr.Custom(502, "M_UNKNOWN", "The invitee's server changed the invite")
	}
	last.pdu = signed
	return signed, nil
}
