package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
)

// MembershipTemplate is the answer to make_join, make_leave and
// make_knock: an unsigned event for the other server to fill in and sign,
// and the room's version.
type MembershipTemplate struct {
	Event       json.RawMessage
	RoomVersion string
}

// MakeMembership builds the template of a membership event (join, leave,
// knock) of a user of another server, on the room's current state and
// forward extremities, refusing it when the auth rules would (403
// M_FORBIDDEN). versions, when given, are the room versions the user's
// server supports.
func (s *Service) MakeMembership(ctx context.Context, roomID, userID, membership string, versions []string) (MembershipTemplate, error) {
	var out MembershipTemplate
	err := s.withRoom(ctx, roomID, func(r *room) error {
		if !s.serverInRoom(r) {
			return merr.NotFound("This server is not in room %s", roomID)
		}
		ver := string(r.version.Version())
		if versions != nil && !contains(versions, ver) {
			return merr.Custom(400, "M_INCOMPATIBLE_ROOM_VERSION", "The room is of version %s, which your server does not support", ver)
		}
		key := userID
		content := spec.RawJSON(`{"membership":` + string(mustJSON(membership)) + `}`)
		if membership == spec.Join {
			var err error
			if content, err = s.withAuthoriser(ctx, r, userID, content); err != nil {
				return err
			}
		}
		proto := &gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &key, Content: content}
		prev := r.extremities
		if len(prev) > maxPrevEvents {
			prev = prev[len(prev)-maxPrevEvents:]
		}
		proto.PrevEvents = append([]string{}, prev...)
		proto.Depth = r.depth + 1
		b := r.version.NewEventBuilderFromProtoEvent(proto)
		if err := b.AddAuthEvents(stateProvider(r.state)); err != nil {
			return merr.BadJSON("Invalid event: %s", err.Error())
		}
		// Signed with this server's key only to run the auth rules on it.
		trial, err := b.Build(nowTime(), s.serverName, s.opts.Key.ID, s.opts.Key.Private)
		if err != nil {
			return mapBuildError(err)
		}
		if err := gomatrixserverlib.Allowed(trial, stateProvider(r.state), userIDForSender); err != nil {
			return merr.Forbidden("%s", authMessage(err))
		}
		proto.AuthEvents = b.AuthEvents
		ev, err := json.Marshal(proto)
		if err != nil {
			return err
		}
		out = MembershipTemplate{Event: ev, RoomVersion: ver}
		return nil
	})
	return out, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
