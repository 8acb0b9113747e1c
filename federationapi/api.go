package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
)

// Rooms is what the inbound endpoints need from the roomserver.
type Rooms interface {
	RoomVersion(ctx context.Context, roomID string) (string, error)
	InputEventFrom(ctx context.Context, origin string, pdu gomatrixserverlib.PDU) (roomserver.Event, error)
	MakeMembership(ctx context.Context, roomID, userID, membership string, versions []string) (roomserver.MembershipTemplate, error)
	ReceiveInvite(ctx context.Context, invite gomatrixserverlib.PDU, strippedState []json.RawMessage) error
	StrippedState(ctx context.Context, roomID string) ([]roomserver.StrippedEvent, error)
	StateAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []roomserver.FederationPDU, err error)
	ResolveAlias(ctx context.Context, alias string) (string, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	CheckServerACL(ctx context.Context, roomID, server string) error
}

// Users is what the inbound endpoints need from the user API.
type Users interface {
	AccountExists(ctx context.Context, userID string) (bool, error)
	Profile(ctx context.Context, userID string) (displayname, avatarURL string, err error)
	OpenIDUser(ctx context.Context, token string) (userID string, err error)
}

// Ephemeral takes the EDUs of inbound transactions (typing, receipts,
// presence; ephemeral.go).
type Ephemeral interface {
	SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error
	SetRemoteReceipt(ctx context.Context, userID, roomID string, eventIDs []string, threadID string, ts int64) error
	SetRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) error
}

// API serves the Server-Server API's inbound endpoints.
type API struct {
	ServerName string
	Key        serverkey.Key
	Rooms      Rooms
	Users      Users
	Ephemeral  Ephemeral
	// Keys and DeviceLists serve and take device lists and keys (nil: the
	// endpoints answer M_UNRECOGNIZED and the EDUs are dropped).
	Keys        LocalKeys
	DeviceLists DeviceListUpdates
	// ToDevice and KeyClaims are the key service (todevice.go, keyclaim.go).
	ToDevice  ToDeviceInbox
	KeyClaims KeyClaims
	// Verifier checks other servers' signatures on events.
	Verifier gomatrixserverlib.JSONVerifier
	Log      *logrus.Logger

	// Directory, when set, serves the public room directory and the space
	// hierarchy to other servers (directory.go).
	Directory Directory
	// Media, when set, serves our media to other servers (media.go).
	Media LocalMedia

	txns    *lru.Cache[string, []byte]
	flights txnFlights
}

// Routes mounts the endpoints of this package under /_matrix/federation
// on r, which the caller has given request authentication.
func (a *API) Routes(r chi.Router) {
	if a.txns == nil {
		a.txns = lru.New[string, []byte]("federation_txns", 4096)
	}
	h := httpx.Handle
	r.Put("/v1/send/{txnId}", h(a.send))
	r.Get("/v1/make_join/{roomId}/{userId}", h(a.makeMembership("join")))
	r.Get("/v1/make_leave/{roomId}/{userId}", h(a.makeMembership("leave")))
	r.Get("/v1/make_knock/{roomId}/{userId}", h(a.makeMembership("knock")))
	r.Put("/v1/send_join/{roomId}/{eventId}", h(a.sendJoin(true)))
	r.Put("/v2/send_join/{roomId}/{eventId}", h(a.sendJoin(false)))
	r.Put("/v1/send_leave/{roomId}/{eventId}", h(a.sendLeave(true)))
	r.Put("/v2/send_leave/{roomId}/{eventId}", h(a.sendLeave(false)))
	r.Put("/v1/send_knock/{roomId}/{eventId}", h(a.sendKnock))
	r.Put("/v2/invite/{roomId}/{eventId}", h(a.invite))
	r.Get("/v1/query/profile", h(a.queryProfile))
	r.Get("/v1/query/directory", h(a.queryDirectory))
	a.directoryRoutes(r)
	a.deviceListRoutes(r)
	a.keyClaimRoutes(r)
	a.mediaRoutes(r)
}

// PublicRoutes mounts the endpoints that need no request signature.
func (a *API) PublicRoutes(r chi.Router) {
	r.Get("/v1/version", httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
		return httpx.JSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Haven", "version": "0"}})
	}))
	r.Get("/v1/openid/userinfo", httpx.Handle(a.openIDUserInfo))
}

// pathParam reads a path parameter as text (httpx.PathText).
func pathParam(r *http.Request, name string) (string, error) { return httpx.PathText(r, name) }

// pathParams reads several path parameters (see pathParam).
func pathParams(r *http.Request, names ...string) ([]string, error) {
	out := make([]string, len(names))
	for i, n := range names {
		v, err := pathParam(r, n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// parsePDU parses an event of a known room from another server: its
// room's version, the content hash (an event whose hash does not match is
// redacted, as the spec says) and its signatures.
func (a *API) parsePDU(ctx context.Context, raw json.RawMessage, roomID string) (gomatrixserverlib.PDU, error) {
	ver, err := a.Rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	pdu, err := a.parseUnverified(raw, ver)
	if err != nil {
		return nil, err
	}
	return pdu, a.verifyPDU(ctx, pdu)
}

// parseUnverified parses an event of a room version (the content hash is
// checked; the signatures are not yet).
func (a *API) parseUnverified(raw json.RawMessage, ver string) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	if err != nil {
		return nil, merr.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Room version %s is not supported", ver)
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, merr.BadJSON("Invalid event: %v", err)
	}
	return pdu, nil
}

// verifyPDU checks an event's signatures: its sender's server's (and for
// an invite, the invitee's server's too).
func (a *API) verifyPDU(ctx context.Context, pdu gomatrixserverlib.PDU) error {
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, a.Verifier, userIDForSender); err != nil {
		return merr.Forbidden("Bad signature on event %s: %v", pdu.EventID(), err)
	}
	return nil
}
