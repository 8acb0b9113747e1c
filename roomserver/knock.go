package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
)

// KnockVia knocks the user on a room given by ID or alias (room versions 7
// and later, join_rule knock or knock_restricted) and returns the room
// ID. In a room this server is in, the knock is an event like any other:
// the auth rules refuse it when the join rule does not allow knocking or
// the user is banned, invited or joined. In a room that lives elsewhere
// (the same rule as for joins), it goes through one of via (or the
// servers the room's ID, an invite or the last known members name), and
// is kept here as an invite received is: with the room's stripped state
// that server answered, in unsigned.knock_room_state.
func (s *Service) KnockVia(ctx context.Context, userID, roomIDOrAlias string, via []string, reason string) (string, error) {
	guest, err := s.isGuest(ctx, userID)
	if err != nil {
		return "", err
	}
	if guest {
		return "", merr.GuestAccessForbidden("Guests cannot knock on rooms")
	}
	fields := reasonFields(reason, false)
	if err := checkMemberFields(fields); err != nil {
		return "", err
	}
	roomID, via, err := s.resolveVia(ctx, roomIDOrAlias, via)
	if err != nil {
		return "", err
	}
	if err := s.checkNotBlocked(ctx, roomID, userID); err != nil {
		return "", err
	}
	remote, servers, err := false, []string(nil), error(nil)
	if s.opts.Federation != nil {
		remote, servers, err = s.joinsRemotely(ctx, roomID, userID, via)
		if err != nil {
			return "", err
		}
	}
	if !remote {
		if _, err := s.member(ctx, roomID, userID, userID, spec.Knock, fields, nil); err != nil {
			return "", err
		}
		return roomID, nil
	}
	if len(servers) == 0 {
		return "", merr.NotFound("No server to knock on %s through: give one with via or server_name", roomID)
	}
	raw, err := s.memberContentJSON(ctx, userID, spec.Knock, fields)
	if err != nil {
		return "", err
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", err
	}
	knock, stripped, err := s.opts.Federation.Knock(ctx, userID, roomID, servers, c)
	if err != nil {
		return "", err
	}
	if knock.RoomID().String() != roomID {
		return "", merr.Custom(502, "M_UNKNOWN", "The knock came back for another room")
	}
	unsigned := map[string]any{}
	if stripped != nil {
		unsigned["knock_room_state"] = stripped
	}
	if err := s.storeOutOfRoom(ctx, knock, unsigned); err != nil {
		return "", err
	}
	return roomID, nil
}

// StrippedState is the room's current state as shown to those who are not
// in it yet (the answer to send_knock): its create event, join rules,
// name, avatar, canonical alias, encryption and topic.
func (s *Service) StrippedState(ctx context.Context, roomID string) ([]StrippedEvent, error) {
	var out []StrippedEvent
	err := s.withRoom(ctx, roomID, func(r *room) error {
		out = strippedState(r.state, "")
		return nil
	})
	if out == nil {
		out = []StrippedEvent{}
	}
	return out, err
}
