package clientapi

import (
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// Guest access (registration.guests). A guest's device may use only the
// routes below, the ones the spec opens to guests (reading rooms, joining
// and leaving those that allow guests, sending messages, keys, presence,
// profile, account data, filters); every other authenticated route answers
// 403 M_GUEST_ACCESS_FORBIDDEN. A rule may look at the request: a guest
// sends only m.room.message events.
var guestRoutes = map[string]func(r *http.Request) bool{}

func init() {
	always := func(*http.Request) bool { return true }
	for _, rt := range []string{
		"GET " + v3 + "/sync", "GET " + v3 + "/events", "GET " + v3 + "/events/{eventId}", "GET " + v3 + "/initialSync",
		"GET " + v3 + "/rooms/{roomId}/state", "GET " + v3 + "/rooms/{roomId}/state/{eventType}", "GET " + v3 + "/rooms/{roomId}/state/{eventType}/",
		"GET " + v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", "GET " + v3 + "/rooms/{roomId}/context/{eventId}",
		"GET " + v3 + "/rooms/{roomId}/event/{eventId}", "GET " + v3 + "/rooms/{roomId}/members", "GET " + v3 + "/rooms/{roomId}/joined_members",
		"GET " + v3 + "/rooms/{roomId}/messages", "GET " + v3 + "/rooms/{roomId}/initialSync", "GET " + v3 + "/joined_rooms",
		"POST " + v3 + "/rooms/{roomId}/join", "POST " + v3 + "/join/{roomIdOrAlias}", "POST " + v3 + "/rooms/{roomId}/leave",
		"PUT " + v3 + "/rooms/{roomId}/typing/{userId}", "POST " + v3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}",
		"POST " + v3 + "/rooms/{roomId}/read_markers", "PUT " + v3 + "/sendToDevice/{eventType}/{txnId}",
		"PUT " + v3 + "/user/{userId}/account_data/{type}", "GET " + v3 + "/user/{userId}/account_data/{type}",
		"PUT " + v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", "GET " + v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}",
		"POST " + v3 + "/user/{userId}/filter", "GET " + v3 + "/user/{userId}/filter/{filterId}",
		"GET " + v3 + "/presence/{userId}/status", "PUT " + v3 + "/presence/{userId}/status",
		"GET " + v3 + "/profile/{userId}", "GET " + v3 + "/profile/{userId}/displayname", "GET " + v3 + "/profile/{userId}/avatar_url",
		"PUT " + v3 + "/profile/{userId}/displayname", "PUT " + v3 + "/profile/{userId}/avatar_url",
		"GET " + v3 + "/account/whoami", "GET " + v3 + "/devices", "GET " + v3 + "/devices/{deviceId}", "PUT " + v3 + "/devices/{deviceId}",
		"POST " + v3 + "/keys/upload", "POST " + v3 + "/keys/upload/{deviceId}", "POST " + v3 + "/keys/query", "POST " + v3 + "/keys/claim",
		"GET " + v3 + "/keys/changes", "GET " + v3 + "/directory/room/{roomAlias}", "GET " + v3 + "/publicRooms", "POST " + v3 + "/publicRooms",
		"GET " + v3 + "/capabilities", "GET " + v3 + "/voip/turnServer", "POST " + v3 + "/logout", "POST " + v3 + "/logout/all",
		"GET " + v3 + "/pushrules/*", "POST " + v3 + "/peek/{roomIdOrAlias}", "POST " + v3 + "/unpeek/{roomId}",
		"POST " + v3 + "/register",
	} {
		guestRoutes[rt] = always
	}
	onlyMessages := func(r *http.Request) bool { return PathParam(r, "eventType") == "m.room.message" }
	guestRoutes["PUT "+v3+"/rooms/{roomId}/send/{eventType}/{txnId}"] = onlyMessages
	guestRoutes["POST "+v3+"/rooms/{roomId}/send/{eventType}"] = onlyMessages
}

// guestAllowed tells whether a guest's device may make this request.
func guestAllowed(rt Route, r *http.Request) bool {
	rule := guestRoutes[rt.Method+" "+rt.Path]
	return rule != nil && rule(r)
}

// registerGuest answers POST /register?kind=guest: a guest account and its
// first device, without user-interactive authentication.
func (a *API) registerGuest(w http.ResponseWriter, r *http.Request) error {
	if !a.Cfg.Registration.Guests {
		return merr.GuestAccessForbidden("Guest access is not enabled on this server")
	}
	var req registerRequest
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	sess, err := a.Users.Register(r.Context(), userapi.RegisterRequest{Guest: true, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, ClientAddr: clientAddr(r), Via: "guest"})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, true))
}

// guestToUpgrade resolves the guest_access_token of a registration: the
// guest whose account the registration upgrades, which must be the
// username it asks for.
func (a *API) guestToUpgrade(r *http.Request, token, username string) (userapi.Device, error) {
	dev, err := a.Users.Authenticate(r.Context(), token)
	if err != nil {
		return userapi.Device{}, err
	}
	if !dev.IsGuest {
		return userapi.Device{}, merr.Forbidden("guest_access_token is not a guest's access token")
	}
	lp, _, _ := strings.Cut(strings.TrimPrefix(dev.UserID, "@"), ":")
	if username != "" && strings.ToLower(username) != lp {
		return userapi.Device{}, merr.Forbidden("A guest can only upgrade its own account (%s)", lp)
	}
	return dev, nil
}
