package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

type memberContent struct {
	Membership  string `json:"membership"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	IsDirect    bool   `json:"is_direct,omitempty"`
	Reason      string `json:"reason,omitempty"`
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

// addMember adds a membership event for target to the draft. Joins and
// invites carry the target's profile.
func (s *Service) addMember(ctx context.Context, d *draft, sender, target, membership, reason string, isDirect bool, meta *eventMeta) error {
	c := memberContent{Membership: membership, Reason: reason, IsDirect: isDirect && membership == spec.Invite}
	if (membership == spec.Join || membership == spec.Invite) && s.profiles != nil {
		dn, av, err := s.profiles.Profile(ctx, target)
		if err != nil {
			return err
		}
		c.DisplayName, c.AvatarURL = dn, av
	}
	m := eventMeta{}
	if meta != nil {
		m = *meta
	}
	if membership == spec.Invite {
		m.unsigned = map[string]any{"invite_room_state": strippedState(d.state, sender)}
	}
	k := target
	_, err := s.add(d, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomMember, StateKey: &k, Content: mustJSON(c)}, m)
	return err
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
	return len(id) > 1 && len(id) <= 255 && id[0] == '!'
}

func membershipOf(r *room, userID string) string {
	p := r.state[stateKey{spec.MRoomMember, userID}]
	if p == nil {
		return ""
	}
	m, _ := p.Membership()
	return m
}

// sendMember sends one membership event.
func (s *Service) sendMember(ctx context.Context, roomID, sender, target, membership, reason string, isDirect bool) error {
	return s.withRoom(ctx, roomID, func(r *room) error {
		d := newDraft(r)
		if err := s.addMember(ctx, d, sender, target, membership, reason, isDirect, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
}

// Invite invites target into the room.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error {
	if !ValidUserID(target) {
		return merr.InvalidParam("Invalid user ID %q", target)
	}
	if err := s.checkInvitees(ctx, []string{target}); err != nil {
		return err
	}
	return s.withRoom(ctx, roomID, func(r *room) error {
		switch membershipOf(r, target) {
		case spec.Join:
			return merr.Forbidden("%s is already in the room", target)
		case spec.Ban:
			return merr.Forbidden("%s is banned from the room", target)
		}
		d := newDraft(r)
		if err := s.addMember(ctx, d, sender, target, spec.Invite, reason, isDirect, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
}

// Join joins the user to a room given by ID or alias and returns the room ID.
func (s *Service) Join(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error) {
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
	guest, err := s.isGuest(ctx, userID)
	if err != nil {
		return "", err
	}
	err = s.withRoom(ctx, roomID, func(r *room) error {
		if guest && !guestsMayJoin(r) {
			return merr.GuestAccessForbidden("This room does not allow guests to join")
		}
		if membershipOf(r, userID) == spec.Join {
			cur := r.state[stateKey{spec.MRoomMember, userID}]
			var c memberContent
			_ = json.Unmarshal(cur.Content(), &c)
			if s.profiles == nil {
				return nil
			}
			dn, av, err := s.profiles.Profile(ctx, userID)
			if err != nil {
				return err
			}
			if dn == c.DisplayName && av == c.AvatarURL {
				return nil // already joined with this profile: nothing to send
			}
		}
		d := newDraft(r)
		if err := s.addMember(ctx, d, userID, userID, spec.Join, reason, false, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
	if err != nil {
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
	return s.withRoom(ctx, roomID, func(r *room) error {
		switch membershipOf(r, userID) {
		case spec.Leave, spec.Ban:
			return nil
		case "":
			return merr.Forbidden("You are not a member of this room")
		}
		d := newDraft(r)
		if err := s.addMember(ctx, d, userID, userID, spec.Leave, reason, false, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
}

// Kick removes target from the room.
func (s *Service) Kick(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.withRoom(ctx, roomID, func(r *room) error {
		switch membershipOf(r, target) {
		case spec.Join, spec.Invite, "knock":
		default:
			return merr.Forbidden("%s is not in the room", target)
		}
		d := newDraft(r)
		if err := s.addMember(ctx, d, sender, target, spec.Leave, reason, false, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
}

// Ban bans target from the room.
func (s *Service) Ban(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.sendMember(ctx, roomID, sender, target, spec.Ban, reason, false)
}

// Unban lifts a ban.
func (s *Service) Unban(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return merr.InvalidParam("Invalid user ID %q", target)
	}
	return s.withRoom(ctx, roomID, func(r *room) error {
		if membershipOf(r, target) != spec.Ban {
			return merr.Forbidden("%s is not banned", target)
		}
		d := newDraft(r)
		if err := s.addMember(ctx, d, sender, target, spec.Leave, reason, false, nil); err != nil {
			return err
		}
		_, err := s.commit(ctx, d, nil, nil)
		return err
	})
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
