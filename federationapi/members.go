package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

const maxMemberEventBytes = 64 << 10

// makeMembership answers make_join, make_leave and make_knock: a template
// of the membership event for a user of the asking server.
func (a *API) makeMembership(membership string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ps, err := pathParams(r, "roomId", "userId")
		if err != nil {
			return err
		}
		roomID, userID := ps[0], ps[1]
		if ids.ServerOf(userID, '@') != origin.From(r.Context()) {
			return merr.Forbidden("The user is not of the asking server")
		}
		if err := a.Rooms.CheckServerACL(r.Context(), roomID, origin.From(r.Context())); err != nil {
			return err
		}
		var versions []string
		if membership != spec.Leave {
			// make_join and make_knock list the asking server's room
			// versions; none given means version 1 only.
			versions = r.URL.Query()["ver"]
			if len(versions) == 0 {
				versions = []string{"1"}
			}
		}
		t, err := a.Rooms.MakeMembership(r.Context(), roomID, userID, membership, versions)
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, map[string]any{"event": t.Event, "room_version": t.RoomVersion})
	}
}

// memberEvent reads a signed membership event of a user of the asking
// server from the body of send_join, send_leave or send_knock.
func (a *API) memberEvent(r *http.Request, membership string) (gomatrixserverlib.PDU, error) {
	ps, err := pathParams(r, "roomId", "eventId")
	if err != nil {
		return nil, err
	}
	roomID, eventID := ps[0], ps[1]
	if err := a.Rooms.CheckServerACL(r.Context(), roomID, origin.From(r.Context())); err != nil {
		return nil, err
	}
	body, err := httpx.ReadBody(r, maxMemberEventBytes)
	if err != nil {
		return nil, err
	}
	if !json.Valid(body) {
		return nil, merr.NotJSON("Content not JSON")
	}
	ver, err := a.Rooms.RoomVersion(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	pdu, err := a.parseUnverified(body, ver)
	if err != nil {
		return nil, err
	}
	if via := authorisedVia(pdu); membership == spec.Join && via != "" && ids.ServerOf(via, '@') == a.ServerName {
		// A restricted join one of our users lets in: our signature is
		// part of what the auth rules check.
		pdu = pdu.Sign(a.ServerName, a.Key.ID, a.Key.Private)
	}
	if err := a.verifyPDU(r.Context(), pdu); err != nil {
		return nil, err
	}
	m, _ := pdu.Membership()
	sk := pdu.StateKey()
	switch {
	case pdu.EventID() != eventID:
		return nil, merr.BadJSON("The event ID does not match the path")
	case pdu.RoomID().String() != roomID:
		return nil, merr.BadJSON("The event is for another room")
	case pdu.Type() != spec.MRoomMember || m != membership:
		return nil, merr.BadJSON("Not a %s event", membership)
	case sk == nil || *sk != string(pdu.SenderID()):
		return nil, merr.BadJSON("The state_key must be the sender")
	case ids.ServerOf(string(pdu.SenderID()), '@') != origin.From(r.Context()):
		return nil, merr.Forbidden("The sender is not of the asking server")
	}
	return pdu, nil
}

// input stores a membership event from the asking server; refused ones
// are 403.
func (a *API) input(ctx context.Context, pdu gomatrixserverlib.PDU) error {
	_, err := a.Rooms.InputEventFrom(ctx, origin.From(ctx), pdu)
	return refusal(err)
}

// refusal is a membership event's input error as the asking server sees
// it: one that fails against the room's current state (soft-failed) is
// refused like one that fails the auth rules.
func refusal(err error) error {
	var sf *roomserver.SoftFailed
	if errors.As(err, &sf) {
		return merr.Forbidden("%s", sf.Reason)
	}
	return err
}

// sendJoin stores a join and answers the room's state before it with its
// auth chain (v1 answers in its old form, [200, body]).
func (a *API) sendJoin(v1 bool) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		pdu, err := a.memberEvent(r, spec.Join)
		if err != nil {
			return err
		}
		if err := a.input(ctx, pdu); err != nil {
			return err
		}
		roomID := pdu.RoomID().String()
		state, auth, err := a.Rooms.StateAtEvent(ctx, roomID, pdu.EventID())
		if err != nil {
			return err
		}
		body := map[string]any{"origin": a.ServerName, "state": rawPDUs(state), "auth_chain": rawPDUs(auth),
			"event": json.RawMessage(pdu.JSON()), "members_omitted": false}
		if v1 {
			return httpx.JSON(w, http.StatusOK, []any{200, body})
		}
		return httpx.JSON(w, http.StatusOK, body)
	}
}

func rawPDUs(l []roomserver.FederationPDU) []json.RawMessage {
	out := make([]json.RawMessage, len(l))
	for i, p := range l {
		out[i] = p.JSON
	}
	return out
}

func (a *API) sendLeave(v1 bool) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		pdu, err := a.memberEvent(r, spec.Leave)
		if err != nil {
			return err
		}
		if err := a.input(r.Context(), pdu); err != nil {
			return err
		}
		if v1 {
			return httpx.JSON(w, http.StatusOK, []any{200, map[string]any{}})
		}
		return httpx.OK(w)
	}
}

// sendKnock stores a knock and answers the room's stripped state.
func (a *API) sendKnock(w http.ResponseWriter, r *http.Request) error {
	pdu, err := a.memberEvent(r, spec.Knock)
	if err != nil {
		return err
	}
	if err := a.input(r.Context(), pdu); err != nil {
		return err
	}
	// The same stripped state as an invitee gets, under the current name
	// and the name of older servers.
	stripped, err := a.Rooms.StrippedState(r.Context(), pdu.RoomID().String())
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"knock_room_state": stripped, "knock_state_events": stripped})
}

type inviteBody struct {
	Event           json.RawMessage   `json:"event"`
	RoomVersion     string            `json:"room_version"`
	InviteRoomState []json.RawMessage `json:"invite_room_state"`
}

// invite signs an invite of a user of this server and stores it, so the
// user sees it in /sync.
func (a *API) invite(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ps, err := pathParams(r, "roomId", "eventId")
	if err != nil {
		return err
	}
	roomID, eventID := ps[0], ps[1]
	var b inviteBody
	if err := httpx.DecodeJSON(r, &b, maxMemberEventBytes+256<<10); err != nil {
		return err
	}
	if b.RoomVersion == "" {
		b.RoomVersion = "1"
	}
	pdu, err := a.parseUnverified(b.Event, b.RoomVersion)
	if err != nil {
		return err
	}
	m, _ := pdu.Membership()
	sk := pdu.StateKey()
	switch {
	case pdu.EventID() != eventID || pdu.RoomID().String() != roomID:
		return merr.BadJSON("The event does not match the path")
	case pdu.Type() != spec.MRoomMember || m != spec.Invite || sk == nil:
		return merr.BadJSON("Not an invite")
	case ids.ServerOf(string(pdu.SenderID()), '@') != origin.From(ctx):
		return merr.Forbidden("The inviter is not of the asking server")
	case ids.ServerOf(*sk, '@') != a.ServerName:
		return merr.BadJSON("The invitee is not of this server")
	case !ids.ValidUserID(*sk):
		return merr.BadJSON("The invitee is not a valid user ID")
	}
	ok, err := a.Users.AccountExists(ctx, *sk)
	if err != nil {
		return err
	}
	if !ok {
		return merr.NotFound("Unknown user %s", *sk)
	}
	// Signed here first: the inviter's signature is then checked with ours
	// beside it, as the spec's rules for invites want both.
	signed := pdu.Sign(a.ServerName, a.Key.ID, a.Key.Private)
	if err := a.verifyPDU(ctx, signed); err != nil {
		return err
	}
	if len(b.InviteRoomState) > 50 {
		b.InviteRoomState = b.InviteRoomState[:50]
	}
	if err := a.Rooms.ReceiveInvite(ctx, signed, b.InviteRoomState); err != nil {
		return refusal(err)
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed.JSON())})
}

// authorisedVia is the user a restricted join names as letting it in.
func authorisedVia(pdu gomatrixserverlib.PDU) string {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	_ = json.Unmarshal(pdu.Content(), &c)
	return c.Via
}
