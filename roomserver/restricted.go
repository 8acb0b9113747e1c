package roomserver

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
)

// joinRulesContent is the part of m.room.join_rules a restricted join reads.
type joinRulesContent struct {
	JoinRule string `json:"join_rule"`
	Allow    []struct {
		Type   string `json:"type"`
		RoomID string `json:"room_id"`
	} `json:"allow"`
}

// joinAuthoriser picks the user of this server who lets userID into a
// restricted room (join_rule restricted or knock_restricted, room versions
// 8 and later): the user must be joined to one of the rooms the rule
// allows, and the authorising user must be joined here with the power to
// invite. "" means the join needs no authorising user (not a restricted
// room, or the user is invited or joined already).
func (s *Service) joinAuthoriser(ctx context.Context, r *room, userID string) (string, error) {
	p := r.state[stateKey{spec.MRoomJoinRules, ""}]
	if p == nil || r.version.CheckRestrictedJoinsAllowed() != nil {
		return "", nil
	}
	var jr joinRulesContent
	if json.Unmarshal(p.Content(), &jr) != nil || (jr.JoinRule != spec.Restricted && jr.JoinRule != spec.KnockRestricted) {
		return "", nil
	}
	switch membershipOf(r, userID) {
	case spec.Join, spec.Invite:
		return "", nil
	}
	member := false
	for _, a := range jr.Allow {
		if a.Type != "m.room_membership" || a.RoomID == r.id {
			continue
		}
		m, _, err := s.Membership(ctx, a.RoomID, userID)
		if err != nil && !merr.Is(err, "M_NOT_FOUND") {
			return "", err
		}
		if m == spec.Join {
			member = true
			break
		}
	}
	if !member {
		// Knock-restricted rooms still let the user knock; a plain join
		// then fails the auth rules with their own message.
		return "", nil
	}
	pl := powerLevels(r)
	for _, k := range sortedStateKeys(r.state) {
		if k.typ != spec.MRoomMember || !s.IsLocal(k.key) || membershipOf(r, k.key) != spec.Join {
			continue
		}
		if pl.UserLevel(spec.SenderID(k.key)) >= pl.Invite {
			return k.key, nil
		}
	}
	return "", merr.Custom(http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN", "No user of this server may let you into this room")
}

// withAuthoriser adds join_authorised_via_users_server to a join's content
// when the room is restricted and the user may join through a room it
// allows.
func (s *Service) withAuthoriser(ctx context.Context, r *room, userID string, content spec.RawJSON) (spec.RawJSON, error) {
	via, err := s.joinAuthoriser(ctx, r, userID)
	if err != nil || via == "" {
		return content, err
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, err
	}
	c["join_authorised_via_users_server"] = json.RawMessage(mustJSON(via))
	return mustJSON(c), nil
}
