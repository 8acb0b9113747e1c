package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// memberContent is the part of a membership event's content the server
// reads.
type memberContent struct {
	Membership  string `json:"membership"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	IsDirect    bool   `json:"is_direct,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// memberFields are the content of a membership event besides membership:
// what the client gave (reason, is_direct, a per-room displayname and
// avatar_url, keys of its own).
type memberFields map[string]json.RawMessage

// reasonFields are the fields of the membership endpoints: a reason, and
// is_direct for invites.
func reasonFields(reason string, isDirect bool) memberFields {
	f := memberFields{}
	if reason != "" {
		f["reason"] = json.RawMessage(mustJSON(reason))
	}
	if isDirect {
		f["is_direct"] = json.RawMessage("true")
	}
	return f
}

// Limits of the profile in a membership event (Synapse's).
const (
	maxMemberDisplayName = 256
	maxMemberAvatarURL   = 1000
)

// checkMemberFields validates client-given fields of a membership event.
func checkMemberFields(f memberFields) error {
	for k, max := range map[string]int{"displayname": maxMemberDisplayName, "avatar_url": maxMemberAvatarURL, "reason": 2048} {
		raw, ok := f[k]
		if !ok || string(raw) == "null" {
			continue
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return merr.BadJSON("%s must be a string", k)
		}
		if len(v) > max {
			return merr.BadJSON("%s is longer than %d bytes", k, max)
		}
	}
	if raw, ok := f["is_direct"]; ok {
		var v bool
		if json.Unmarshal(raw, &v) != nil {
			return merr.BadJSON("is_direct must be true or false")
		}
	}
	return nil
}

// strippedStateTypes are shown to invitees before they join.
var strippedStateTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomAvatar,
	spec.MRoomCanonicalAlias, "m.room.encryption", spec.MRoomTopic}

// StrippedEvent is an event reduced to what an invitee may see.
type StrippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Sender   string          `json:"sender"`
	Content  json.RawMessage `json:"content"`
}

func strippedState(state map[stateKey]gomatrixserverlib.PDU, sender string) []StrippedEvent {
	var out []StrippedEvent
	add := func(p gomatrixserverlib.PDU) {
		if p == nil {
			return
		}
		out = append(out, StrippedEvent{Type: p.Type(), StateKey: *p.StateKey(), Sender: string(p.SenderID()), Content: json.RawMessage(p.Content())})
	}
	for _, t := range strippedStateTypes {
		add(state[stateKey{t, ""}])
	}
	add(state[stateKey{spec.MRoomMember, sender}])
	return out
}

// memberContentJSON is the content of a membership event: the fields,
// membership, and for joins and invites the target's profile where the
// fields give none (a per-room displayname or avatar_url stays; knocks
// carry it too, so that the room sees who knocks). is_direct
// is only kept on invites.
func (s *Service) memberContentJSON(ctx context.Context, target, membership string, fields memberFields) (spec.RawJSON, error) {
	c := make(map[string]json.RawMessage, len(fields)+3)
	for k, v := range fields {
		c[k] = v
	}
	c["membership"] = json.RawMessage(mustJSON(membership))
	if membership != spec.Invite {
		delete(c, "is_direct")
	}
	// Fields only the server may set.
	delete(c, "join_authorised_via_users_server")
	delete(c, "third_party_invite")
	if (membership == spec.Join || membership == spec.Invite || membership == spec.Knock) && s.profiles != nil {
		_, hasName := c["displayname"]
		_, hasAvatar := c["avatar_url"]
		if !hasName || !hasAvatar {
			dn, av, err := s.profiles.Profile(ctx, target)
			if err != nil {
				return nil, err
			}
			if !hasName && dn != "" {
				c["displayname"] = json.RawMessage(mustJSON(dn))
			}
			if !hasAvatar && av != "" {
				c["avatar_url"] = json.RawMessage(mustJSON(av))
			}
		}
	}
	return mustJSON(c), nil
}

// addMember adds a membership event for target to the draft. Joins and
// invites carry the target's profile unless the fields give one.
func (s *Service) addMember(ctx context.Context, d *draft, sender, target, membership string, fields memberFields, meta *eventMeta) (gomatrixserverlib.PDU, error) {
	content, err := s.memberContentJSON(ctx, target, membership, fields)
	if err != nil {
		return nil, err
	}
	return s.addMemberContent(d, sender, target, membership, content, meta)
}

// addMemberContent adds a membership event with its content to the draft;
// an invite carries the room's stripped state for the invitee, a knock
// for the knocker.
func (s *Service) addMemberContent(d *draft, sender, target, membership string, content spec.RawJSON, meta *eventMeta) (gomatrixserverlib.PDU, error) {
	m := eventMeta{}
	if meta != nil {
		m = *meta
	}
	switch membership {
	case spec.Invite:
		m.unsigned = map[string]any{"invite_room_state": strippedState(d.state, sender)}
	case spec.Knock:
		// What the knocker's clients show of the room until they are let in.
		m.unsigned = map[string]any{"knock_room_state": strippedState(d.state, "")}
	}
	k := target
	return s.add(d, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomMember, StateKey: &k, Content: content}, m)
}

// errUnchanged is what a membership check returns when nothing is to be
// sent: the current membership event stands.
var errUnchanged = errors.New("membership unchanged")

// member sends one membership event for target and returns its ID. check,
// when set, sees the room first (holding its lock) and may refuse, or
// return errUnchanged. An event that would repeat the current one (same
// sender and content) is not sent again: its ID is returned.
func (s *Service) member(ctx context.Context, roomID, sender, target, membership string, fields memberFields, check func(r *room) error) (string, error) {
	if err := checkMemberFields(fields); err != nil {
		return "", err
	}
	if membership == spec.Join || membership == spec.Invite || membership == spec.Knock {
		if err := s.checkNotBlocked(ctx, roomID, target); err != nil {
			return "", err
		}
	}
	var id string
	err := s.withRoom(ctx, roomID, func(r *room) error {
		cur := r.state[stateKey{spec.MRoomMember, target}]
		if check != nil {
			if err := check(r); err != nil {
				if errors.Is(err, errUnchanged) {
					if cur != nil {
						id = cur.EventID()
					}
					return nil
				}
				return err
			}
		}
		content, err := s.memberContentJSON(ctx, target, membership, fields)
		if err != nil {
			return err
		}
		if membership == spec.Join && target == sender && membershipOf(r, target) != spec.Join {
			if content, err = s.withAuthoriser(ctx, r, target, content); err != nil {
				return err
			}
		}
		if cur != nil && string(cur.SenderID()) == sender && jsonEqual(cur.Content(), content) {
			id = cur.EventID()
			return nil
		}
		d := newDraft(r)
		pdu, err := s.addMemberContent(d, sender, target, membership, content, nil)
		if err != nil {
			return err
		}
		if membership == spec.Invite && !s.IsLocal(target) {
			// The invitee's server signs the invite first (and may refuse it).
			if pdu, err = s.remoteInvite(ctx, d, pdu); err != nil {
				return err
			}
		}
		if _, err := s.commit(ctx, d, nil, nil); err != nil {
			return err
		}
		id = pdu.EventID()
		return nil
	})
	return id, err
}

// withRoom runs fn holding the room's lock with its in-memory state.
func (s *Service) withRoom(ctx context.Context, roomID string, fn func(r *room) error) error {
	if !validRoomID(roomID) {
		return merr.InvalidParam("Invalid room ID %q", roomID)
	}
	unlock := s.locks.Lock(roomID)
	defer unlock()
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return err
	}
	return fn(r)
}

func validRoomID(id string) bool {
	return len(id) > 1 && len(id) <= 255 && id[0] == '!' && storage.StorableText(id)
}

func membershipOf(r *room, userID string) string {
	p := r.state[stateKey{spec.MRoomMember, userID}]
	if p == nil {
		return ""
	}
	m, _ := p.Membership()
	return m
}

// Invite invites target into the room.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error {
	_, err := s.invite(ctx, sender, roomID, target, reasonFields(reason, isDirect))
	return err
}

func (s *Service) invite(ctx context.Context, sender, roomID, target string, fields memberFields) (string, error) {
	if !ValidUserID(target) {
		return "", merr.InvalidParam("Invalid user ID %q", target)
	}
	if err := s.checkInvitees(ctx, []string{target}); err != nil {
		return "", err
	}
	return s.member(ctx, roomID, sender, target, spec.Invite, fields, func(r *room) error {
		switch membershipOf(r, target) {
		case spec.Join:
			return merr.Forbidden("%s is already in the room", target)
		case spec.Ban:
			return merr.Forbidden("%s is banned from the room", target)
		}
		return nil
	})
}

// Join joins the user to a room given by ID or alias and returns the room ID.
func (s *Service) Join(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error) {
	return s.JoinWith(ctx, userID, roomIDOrAlias, reasonFields(reason, false))
}

// JoinWith is Join with the content of the join event: the body of /join
// (a reason, keys of the client's own, a per-room displayname or
// avatar_url) stays in the event; the profile fills what it does not give.
// A user already joined with that content sends nothing.
func (s *Service) JoinWith(ctx context.Context, userID, roomIDOrAlias string, content map[string]json.RawMessage) (string, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		id, err := s.ResolveAlias(ctx, roomIDOrAlias)
		if err != nil {
			return "", err
		}
		roomID = id
	} else if !validRoomID(roomIDOrAlias) {
		return "", merr.InvalidParam("%q is neither a room ID nor an alias", roomIDOrAlias)
	}
	if err := s.checkNotBlocked(ctx, roomID, userID); err != nil {
		return "", err
	}
	if err := s.checkGuestJoin(ctx, userID, roomID); err != nil {
		return "", err
	}
	if _, err := s.member(ctx, roomID, userID, userID, spec.Join, memberFields(content), nil); err != nil {
		return "", err
	}
	return roomID, nil
}

// isGuest tells whether a user is a guest account of this server.
func (s *Service) isGuest(ctx context.Context, userID string) (bool, error) {
	if s.accounts == nil || !strings.HasSuffix(userID, ":"+s.opts.ServerName) {
		return false, nil
	}
	return s.accounts.IsGuest(ctx, userID)
}

// guestsMayJoin: the room's m.room.guest_access is can_join.
func guestsMayJoin(r *room) bool {
	ev := r.state[stateKey{spec.MRoomGuestAccess, ""}]
	if ev == nil {
		return false
	}
	var c struct {
		GuestAccess string `json:"guest_access"`
	}
	return json.Unmarshal(ev.Content(), &c) == nil && c.GuestAccess == "can_join"
}

// checkGuestJoin refuses a guest's join of a room that does not allow
// guests.
func (s *Service) checkGuestJoin(ctx context.Context, userID, roomID string) error {
	guest, err := s.isGuest(ctx, userID)
	if err != nil || !guest {
		return err
	}
	return s.withRoom(ctx, roomID, func(r *room) error {
		if !guestsMayJoin(r) {
			return merr.GuestAccessForbidden("This room does not allow guests to join")
		}
		return nil
	})
}

// dropGuests makes the room's guests leave it once it no longer allows
// guests (its m.room.guest_access changed): the spec asks servers to.
func (s *Service) dropGuests(ctx context.Context, roomID string) error {
	var guests []string
	err := s.withRoom(ctx, roomID, func(r *room) error {
		if guestsMayJoin(r) {
			return nil
		}
		for k := range r.state {
			if k.typ != spec.MRoomMember || membershipOf(r, k.key) != spec.Join {
				continue
			}
			guest, err := s.isGuest(ctx, k.key)
			if err != nil {
				return err
			}
			if guest {
				guests = append(guests, k.key)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, g := range guests {
		if err := s.Leave(ctx, g, roomID, "Guest access was revoked"); err != nil {
			return err
		}
	}
	return nil
}

// Leave makes the user leave (or reject an invite). Leaving a room one has
// already left is not an error.
func (s *Service) Leave(ctx context.Context, userID, roomID, reason string) error {
	_, err := s.leave(ctx, userID, roomID, reasonFields(reason, false))
	return err
}

func (s *Service) leave(ctx context.Context, userID, roomID string, fields memberFields) (string, error) {
	var remote *room
	err := s.withRoom(ctx, roomID, func(r *room) error {
		if m := membershipOf(r, userID); (m == spec.Invite || m == spec.Knock) && s.needsRemote(r) {
			remote = r
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if remote != nil {
		return "", s.leaveRemotely(ctx, remote, userID)
	}
	return s.member(ctx, roomID, userID, userID, spec.Leave, fields, func(r *room) error {
		switch membershipOf(r, userID) {
		case spec.Leave, spec.Ban:
			return errUnchanged
		case "":
			return merr.Forbidden("You are not a member of this room")
		}
		return nil
	})
}

// Kick removes target from the room.
func (s *Service) Kick(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.kick(ctx, sender, roomID, target, reasonFields(reason, false))
	return err
}

func (s *Service) kick(ctx context.Context, sender, roomID, target string, fields memberFields) (string, error) {
	if !ValidUserID(target) {
		return "", merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.member(ctx, roomID, sender, target, spec.Leave, fields, func(r *room) error {
		switch membershipOf(r, target) {
		case spec.Join, spec.Invite, spec.Knock:
			return nil
		}
		return merr.Forbidden("%s is not in the room", target)
	})
}

// Ban bans target from the room.
func (s *Service) Ban(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.ban(ctx, sender, roomID, target, reasonFields(reason, false))
	return err
}

func (s *Service) ban(ctx context.Context, sender, roomID, target string, fields memberFields) (string, error) {
	if !ValidUserID(target) {
		return "", merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.member(ctx, roomID, sender, target, spec.Ban, fields, nil)
}

// Unban lifts a ban.
func (s *Service) Unban(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.unban(ctx, sender, roomID, target, reasonFields(reason, false))
	return err
}

func (s *Service) unban(ctx context.Context, sender, roomID, target string, fields memberFields) (string, error) {
	if !ValidUserID(target) {
		return "", merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.member(ctx, roomID, sender, target, spec.Leave, fields, func(r *room) error {
		if membershipOf(r, target) != spec.Ban {
			return merr.Forbidden("%s is not banned", target)
		}
		return nil
	})
}

// memberState sends an m.room.member state event from the state API
// (PUT /rooms/{roomId}/state/m.room.member/{userId}): an ordinary state
// event under the auth rules, through the same paths as the membership
// endpoints — a join, an invite (with the room's stripped state for the
// invitee), a leave (a kick of someone else, the lifting of a ban), a ban,
// a knock. The content is kept (per-room displayname and avatar_url, a
// reason, keys of the client's own); joins and invites get the profile
// where it gives none. A user changes their per-room profile by sending
// their join again with another displayname or avatar_url.
func (s *Service) memberState(ctx context.Context, sender, roomID, target string, content json.RawMessage) (string, error) {
	var fields memberFields
	if err := json.Unmarshal(content, &fields); err != nil {
		return "", merr.BadJSON("Event content must be a JSON object")
	}
	var membership string
	if raw, ok := fields["membership"]; !ok || json.Unmarshal(raw, &membership) != nil {
		return "", merr.BadJSON("content.membership must be a string")
	}
	delete(fields, "membership")
	if !ValidUserID(target) {
		return "", merr.InvalidParam("The state key of m.room.member must be a user ID, not %q", target)
	}
	switch membership {
	case spec.Join:
		if target != sender {
			return "", merr.Forbidden("You can only join a room yourself")
		}
		return s.member(ctx, roomID, sender, target, spec.Join, fields, nil)
	case spec.Invite:
		return s.invite(ctx, sender, roomID, target, fields)
	case spec.Leave:
		if target == sender {
			return s.leave(ctx, sender, roomID, fields)
		}
		// A kick, or the lifting of a ban: the auth rules ask for the
		// power of one or the other.
		return s.member(ctx, roomID, sender, target, spec.Leave, fields, func(r *room) error {
			switch membershipOf(r, target) {
			case spec.Join, spec.Invite, spec.Knock, spec.Ban:
				return nil
			}
			return merr.Forbidden("%s is not in the room", target)
		})
	case spec.Ban:
		return s.ban(ctx, sender, roomID, target, fields)
	case spec.Knock:
		if target != sender {
			return "", merr.Forbidden("You can only knock yourself")
		}
		return s.member(ctx, roomID, sender, target, spec.Knock, fields, nil)
	}
	return "", merr.BadJSON("Unknown membership %q: use join, invite, leave, ban or knock", membership)
}

// Forget hides a room the user has left from their sync.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	if !validRoomID(roomID) {
		return merr.InvalidParam("Invalid room ID %q", roomID)
	}
	m, _, err := s.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	switch m {
	case spec.Join, spec.Invite, "knock":
		return merr.Unknown("You must leave the room before forgetting it")
	case "":
		return merr.NotFound("You have never been in this room")
	}
	_, err = s.db.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT (user_id, room_id) DO NOTHING`, userID, roomID)
	if err != nil {
		return fmt.Errorf("forget %s: %w", roomID, err)
	}
	return nil
}

// Forgotten tells whether the user forgot the room.
func (s *Service) Forgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&n)
	return n > 0, err
}

// LeaveAllRooms makes a (deactivated) user leave every room and reject every invite.
func (s *Service) LeaveAllRooms(ctx context.Context, userID string) error {
	rooms, err := s.RoomsOf(ctx, userID)
	if err != nil {
		return err
	}
	for roomID, m := range rooms {
		if m == spec.Join || m == spec.Invite || m == "knock" {
			if err := s.Leave(ctx, userID, roomID, ""); err != nil && !merr.Is(err, "M_FORBIDDEN") {
				return err
			}
		}
	}
	return nil
}

// PropagateProfile sends new join events carrying the user's current profile
// into every room they are joined to.
func (s *Service) PropagateProfile(ctx context.Context, userID string) error {
	rooms, err := s.RoomsOf(ctx, userID)
	if err != nil {
		return err
	}
	for roomID, m := range rooms {
		if m != spec.Join {
			continue
		}
		if _, err := s.Join(ctx, userID, roomID, ""); err != nil && !merr.Is(err, "M_FORBIDDEN") {
			return err
		}
	}
	return nil
}

// RoomsOf returns the user's current membership in every room they have one in.
func (s *Service) RoomsOf(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, membership FROM room_state WHERE type = 'm.room.member' AND state_key = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, m string
		if err := rows.Scan(&id, &m); err != nil {
			return nil, err
		}
		out[id] = m
	}
	return out, rows.Err()
}

// Membership returns the user's current membership in a room and its position.
func (s *Service) Membership(ctx context.Context, roomID, userID string) (string, int64, error) {
	if !storage.StorableText(roomID) {
		return "", 0, merr.NotFound("Unknown room %s", roomID)
	}
	if !storage.StorableText(userID) {
		return "", 0, nil
	}
	var m string
	var pos int64
	err := s.db.QueryRow(ctx, `SELECT membership, pos FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`, roomID, userID).Scan(&m, &pos)
	if err != nil {
		if isNoRows(err) {
			if _, err := selectRoom(ctx, s.db, roomID); err != nil {
				if err == storage.ErrNotFound {
					return "", 0, merr.NotFound("Unknown room %s", roomID)
				}
				return "", 0, err
			}
			return "", 0, nil
		}
		return "", 0, fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	return m, pos, nil
}
