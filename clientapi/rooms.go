package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// roomService is what the room handlers need from the roomserver.
type roomService interface {
	CreateRoom(ctx context.Context, sender string, req roomserver.CreateRoomRequest) (roomserver.CreateRoomResult, error)
	Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error
	JoinVia(ctx context.Context, userID, roomIDOrAlias string, via []string, content map[string]json.RawMessage) (string, error)
	KnockVia(ctx context.Context, userID, roomIDOrAlias string, via []string, reason string) (string, error)
	Leave(ctx context.Context, userID, roomID, reason string) error
	Kick(ctx context.Context, sender, roomID, target, reason string) error
	Ban(ctx context.Context, sender, roomID, target, reason string) error
	Unban(ctx context.Context, sender, roomID, target, reason string) error
	Forget(ctx context.Context, userID, roomID string) error
	Send(ctx context.Context, from roomserver.Sender, req roomserver.SendRequest) (string, error)
	Redact(ctx context.Context, from roomserver.Sender, roomID, targetID, reason, txnID string) (string, error)
	ResolveAlias(ctx context.Context, alias string) (string, error)
	SetAlias(ctx context.Context, userID, alias, roomID string) error
	DeleteAlias(ctx context.Context, userID string, isAdmin bool, alias string) error
	AliasesOf(ctx context.Context, roomID string) ([]string, error)
	Membership(ctx context.Context, roomID, userID string) (string, int64, error)
	Published(ctx context.Context, roomID string) (bool, error)
	SetPublished(ctx context.Context, userID string, isAdmin bool, roomID string, published bool) error
	ServerName() string
}

// maxEventBody is the largest event content a client may send; the whole
// event (with its signatures and hashes) must stay within 65536 bytes.
const maxEventBody = 65536

const v3 = "/_matrix/client/v3"

func (a *API) roomRoutes() []Route {
	return []Route{
		{Method: "POST", Path: v3 + "/createRoom", H: a.createRoom, Auth: authUser, Limit: limitMessage},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/invite", H: a.invite, Auth: authUser, Limit: limitMessage},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/join", H: a.joinRoom, Auth: authUser},
		{Method: "POST", Path: v3 + "/join/{roomIdOrAlias}", H: a.joinRoom, Auth: authUser},
		{Method: "POST", Path: v3 + "/knock/{roomIdOrAlias}", H: a.knock, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/leave", H: a.leave, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/forget", H: a.forget, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/kick", H: a.kick, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/ban", H: a.ban, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/unban", H: a.unban, Auth: authUser},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/send/{eventType}/{txnId}", H: a.send, Auth: authUser, Limit: limitMessage},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/state/{eventType}", H: a.putState, Auth: authUser, Limit: limitMessage},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/state/{eventType}/", H: a.putState, Auth: authUser, Limit: limitMessage},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", H: a.putState, Auth: authUser, Limit: limitMessage},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/redact/{eventId}/{txnId}", H: a.redact, Auth: authUser, Limit: limitMessage},
		{Method: "GET", Path: v3 + "/directory/room/{roomAlias}", H: a.getAlias, Auth: authOptional},
		{Method: "PUT", Path: v3 + "/directory/room/{roomAlias}", H: a.putAlias, Auth: authUser},
		{Method: "DELETE", Path: v3 + "/directory/room/{roomAlias}", H: a.deleteAlias, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/aliases", H: a.roomAliases, Auth: authUser},
		{Method: "GET", Path: v3 + "/directory/list/room/{roomId}", H: a.getVisibility, Auth: authNone},
		{Method: "PUT", Path: v3 + "/directory/list/room/{roomId}", H: a.putVisibility, Auth: authUser},
	}
}

type reasonBody struct {
	Reason string `json:"reason"`
}

type targetBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (b targetBody) check() error {
	if b.UserID == "" {
		return merr.MissingParam("user_id is required")
	}
	return nil
}

func (a *API) createRoom(w http.ResponseWriter, r *http.Request) error {
	var req roomserver.CreateRoomRequest
	if err := httpx.DecodeJSON(r, &req, 256<<10); err != nil {
		return err
	}
	res, err := a.Rooms.CreateRoom(r.Context(), DeviceFrom(r).UserID, req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, res)
}

func (a *API) invite(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		targetBody
		IsDirect bool `json:"is_direct"`
	}
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	if err := a.Rooms.Invite(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), b.UserID, b.Reason, b.IsDirect); err != nil {
		return err
	}
	return httpx.OK(w)
}

// joinRoom joins; the body's keys (reason, keys of the client's own) go
// into the join event, as on Synapse (third_party_signed is not kept: there
// are no third-party invites).
func (a *API) joinRoom(w http.ResponseWriter, r *http.Request) error {
	var b map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	delete(b, "third_party_signed")
	target := PathParam(r, "roomId")
	if target == "" {
		target = PathParam(r, "roomIdOrAlias")
	}
	// Servers to join through when the room lives elsewhere: via (v1.12),
	// and server_name, which older clients send.
	q := r.URL.Query()
	via := append(q["via"], q["server_name"]...)
	id, err := a.Rooms.JoinVia(r.Context(), DeviceFrom(r).UserID, target, via, b)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"room_id": id})
}

// knock asks to be let into a room (join_rule knock or knock_restricted);
// guests may not (the route is not open to them). The servers to knock
// through are given as for /join.
func (a *API) knock(w http.ResponseWriter, r *http.Request) error {
	var b reasonBody
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	q := r.URL.Query()
	via := append(q["via"], q["server_name"]...)
	id, err := a.Rooms.KnockVia(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomIdOrAlias"), via, b.Reason)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"room_id": id})
}

func (a *API) leave(w http.ResponseWriter, r *http.Request) error {
	var b reasonBody
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	if err := a.Rooms.Leave(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), b.Reason); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) forget(w http.ResponseWriter, r *http.Request) error {
	if err := a.Rooms.Forget(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId")); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) memberAction(fn func(ctx context.Context, sender, roomID, target, reason string) error) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var b targetBody
		if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
			return err
		}
		if err := b.check(); err != nil {
			return err
		}
		if err := fn(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), b.UserID, b.Reason); err != nil {
			return err
		}
		return httpx.OK(w)
	}
}

func (a *API) kick(w http.ResponseWriter, r *http.Request) error {
	return a.memberAction(a.Rooms.Kick)(w, r)
}
func (a *API) ban(w http.ResponseWriter, r *http.Request) error {
	return a.memberAction(a.Rooms.Ban)(w, r)
}
func (a *API) unban(w http.ResponseWriter, r *http.Request) error {
	return a.memberAction(a.Rooms.Unban)(w, r)
}

func sender(r *http.Request) roomserver.Sender {
	d := DeviceFrom(r)
	dev := d.DeviceID
	if dev == "" && d.AppService != "" {
		// An application service acting without a device: its transaction
		// IDs are scoped to the service, so that a retried send is still
		// recognised.
		dev = "appservice:" + d.AppService
	}
	return roomserver.Sender{UserID: d.UserID, DeviceID: dev}
}

// eventContent reads an event content body: a JSON object of at most 64 KiB.
func eventContent(r *http.Request) (json.RawMessage, error) {
	body, err := httpx.ReadBody(r, maxEventBody)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return json.RawMessage("{}"), nil
	}
	return body, nil
}

func validTxnID(s string) error {
	if s == "" || len(s) > 255 {
		return merr.InvalidParam("Invalid transaction ID")
	}
	return nil
}

func validEventType(s string) error {
	if s == "" || len(s) > 255 {
		return merr.InvalidParam("Invalid event type")
	}
	return nil
}

func (a *API) send(w http.ResponseWriter, r *http.Request) error {
	txn := PathParam(r, "txnId")
	if err := validTxnID(txn); err != nil {
		return err
	}
	return a.sendEvent(w, r, txn)
}

// sendEvent sends the message event of the request; txn is empty for the
// legacy POST /send, where every request is a new event.
func (a *API) sendEvent(w http.ResponseWriter, r *http.Request, txn string) error {
	typ := PathParam(r, "eventType")
	if err := validEventType(typ); err != nil {
		return err
	}
	content, err := eventContent(r)
	if err != nil {
		return err
	}
	id, err := a.Rooms.Send(r.Context(), sender(r), roomserver.SendRequest{RoomID: PathParam(r, "roomId"), Type: typ, Content: content, TxnID: txn})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (a *API) putState(w http.ResponseWriter, r *http.Request) error {
	typ, key := PathParam(r, "eventType"), PathParam(r, "stateKey")
	if err := validEventType(typ); err != nil {
		return err
	}
	if len(key) > 255 {
		return merr.InvalidParam("State key too long")
	}
	content, err := eventContent(r)
	if err != nil {
		return err
	}
	id, err := a.Rooms.Send(r.Context(), sender(r), roomserver.SendRequest{RoomID: PathParam(r, "roomId"), Type: typ, StateKey: &key, Content: content})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (a *API) redact(w http.ResponseWriter, r *http.Request) error {
	txn := PathParam(r, "txnId")
	if err := validTxnID(txn); err != nil {
		return err
	}
	var b reasonBody
	if err := httpx.DecodeJSON(r, &b, maxEventBody); err != nil {
		return err
	}
	id, err := a.Rooms.Redact(r.Context(), sender(r), PathParam(r, "roomId"), PathParam(r, "eventId"), b.Reason, txn)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request) error {
	id, err := a.Rooms.ResolveAlias(r.Context(), PathParam(r, "roomAlias"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"room_id": id, "servers": []string{a.Rooms.ServerName()}})
}

func (a *API) putAlias(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		RoomID string `json:"room_id"`
	}
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	if b.RoomID == "" {
		return merr.MissingParam("room_id is required")
	}
	if err := a.Rooms.SetAlias(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomAlias"), b.RoomID); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) error {
	d := DeviceFrom(r)
	if err := a.Rooms.DeleteAlias(r.Context(), d.UserID, d.IsAdmin, PathParam(r, "roomAlias")); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) roomAliases(w http.ResponseWriter, r *http.Request) error {
	roomID := PathParam(r, "roomId")
	m, _, err := a.Rooms.Membership(r.Context(), roomID, DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	if m != "join" {
		return merr.Forbidden("You are not in this room")
	}
	aliases, err := a.Rooms.AliasesOf(r.Context(), roomID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"aliases": aliases})
}

func (a *API) getVisibility(w http.ResponseWriter, r *http.Request) error {
	pub, err := a.Rooms.Published(r.Context(), PathParam(r, "roomId"))
	if err != nil {
		return err
	}
	v := "private"
	if pub {
		v = "public"
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"visibility": v})
}

func (a *API) putVisibility(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Visibility string `json:"visibility"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	if b.Visibility != "public" && b.Visibility != "private" {
		return merr.InvalidParam("visibility must be public or private")
	}
	d := DeviceFrom(r)
	if err := a.Rooms.SetPublished(r.Context(), d.UserID, d.IsAdmin, PathParam(r, "roomId"), b.Visibility == "public"); err != nil {
		return err
	}
	return httpx.OK(w)
}
