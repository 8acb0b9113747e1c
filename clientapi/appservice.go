package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// appServices is the application services as the client API sees them
// (appservice.Service): their tokens, who they may act as, their limits
// and the ping.
type appServices interface {
	// AuthenticateAppService resolves a service's as_token, acting as
	// userID and deviceID when given; ok is false for other tokens.
	AuthenticateAppService(ctx context.Context, token, userID, deviceID string) (dev userapi.Device, ok bool, err error)
	RateLimited(dev userapi.Device) bool
	ControlsUser(serviceID, userID string) bool
	Ping(ctx context.Context, callerID, serviceID, txnID string) (time.Duration, error)
}

// thirdParty forwards the third-party lookups to the services
// (appservice.Queries).
type thirdParty interface {
	Protocols(ctx context.Context) (map[string]json.RawMessage, error)
	Protocol(ctx context.Context, protocol string) (json.RawMessage, error)
	Lookup(ctx context.Context, kind, protocol string, query url.Values) ([]json.RawMessage, error)
}

// loginTypeAppService is the login and registration type of application
// services.
const loginTypeAppService = "m.login.application_service"

// authenticate resolves the token of a request: an application service's
// (acting as its sender, or as the user_id and device_id the request names)
// or a device's. On authAppService routes only a service's token counts,
// as the service itself: the users it registers or logs in as may not
// exist yet.
func (a *API) authenticate(r *http.Request, token string, rt Route) (userapi.Device, bool, error) {
	level := rt.Auth
	ctx := userapi.WithClientAddr(r.Context(), clientAddr(r))
	if rt.ExpiredOK {
		ctx = userapi.AllowExpired(ctx)
	}
	if a.AppServices != nil {
		userID, deviceID := "", ""
		if level != authAppService {
			q := r.URL.Query()
			userID, deviceID = q.Get("user_id"), q.Get("device_id")
			if deviceID == "" {
				deviceID = q.Get("org.matrix.msc3202.device_id")
			}
		}
		if dev, ok, err := a.AppServices.AuthenticateAppService(ctx, token, userID, deviceID); ok {
			return dev, true, err
		}
	}
	if level == authAppService {
		return userapi.Device{}, false, nil
	}
	dev, err := a.Auth.Authenticate(ctx, token)
	return dev, err == nil, err
}

// rateLimited tells whether the limits apply to a request: always, but for
// an application service's sender and for services registered with
// rate_limited: false.
func (a *API) rateLimited(r *http.Request) bool {
	d := DeviceFrom(r)
	return d.AppService == "" || a.AppServices == nil || a.AppServices.RateLimited(d)
}

// notAppService is the answer to an application service request made
// without a service's token.
func notAppService(r *http.Request) error {
	if httpx.BearerToken(r) == "" {
		return merr.MissingToken("This needs an application service's token")
	}
	return merr.UnknownToken(false, "This token is not an application service's")
}

// AppServiceArea are the routes of application services: the ping, the
// third-party lookups they answer, and their rooms in the directory.
func (a *API) AppServiceArea(tp thirdParty) func() []Route {
	return func() []Route {
		h := &thirdPartyHandlers{tp: tp}
		return []Route{
			{Method: "POST", Path: "/_matrix/client/v1/appservice/{appserviceId}/ping", H: a.appServicePing, Auth: authUser},
			{Method: "PUT", Path: v3 + "/directory/list/appservice/{networkId}/{roomId}", H: a.appServiceDirectory, Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/protocols", H: h.protocols, Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/protocol/{protocol}", H: h.protocol, Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/location/{protocol}", H: h.lookup("location"), Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/user/{protocol}", H: h.lookup("user"), Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/location", H: h.reverse("location", "alias"), Auth: authUser},
			{Method: "GET", Path: v3 + "/thirdparty/user", H: h.reverse("user", "userid"), Auth: authUser},
		}
	}
}

func (a *API) appServicePing(w http.ResponseWriter, r *http.Request) error {
	dev := DeviceFrom(r)
	if dev.AppService == "" {
		return merr.Forbidden("Only an application service may ping itself")
	}
	var b struct {
		TxnID string `json:"transaction_id"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	took, err := a.AppServices.Ping(r.Context(), dev.AppService, PathParam(r, "appserviceId"), b.TxnID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]int64{"duration_ms": took.Milliseconds()})
}

// appServiceDirectory puts one of the service's rooms in the public
// directory or takes it out. The network ID is not kept: the room is
// listed in (or taken out of) the one directory.
func (a *API) appServiceDirectory(w http.ResponseWriter, r *http.Request) error {
	dev := DeviceFrom(r)
	if dev.AppService == "" {
		return merr.Forbidden("Only an application service may list rooms for a network")
	}
	var b struct {
		Visibility string `json:"visibility"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	if b.Visibility != "public" && b.Visibility != "private" {
		return merr.InvalidParam("visibility must be public or private")
	}
	roomID := PathParam(r, "roomId")
	if _, err := a.Rooms.Published(r.Context(), roomID); err != nil {
		return err
	}
	if err := a.Rooms.SetPublished(r.Context(), dev.UserID, true, roomID, b.Visibility == "public"); err != nil {
		return err
	}
	return httpx.OK(w)
}

type thirdPartyHandlers struct{ tp thirdParty }

func (h *thirdPartyHandlers) protocols(w http.ResponseWriter, r *http.Request) error {
	ps, err := h.tp.Protocols(r.Context())
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, ps)
}

func (h *thirdPartyHandlers) protocol(w http.ResponseWriter, r *http.Request) error {
	p, err := h.tp.Protocol(r.Context(), PathParam(r, "protocol"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, p)
}

// fields are the query parameters a lookup forwards: all but the token
// and the identity assertion.
func fields(r *http.Request) url.Values {
	q := url.Values{}
	for k, v := range r.URL.Query() {
		if k != "access_token" && k != "user_id" && !strings.HasSuffix(k, "device_id") {
			q[k] = v
		}
	}
	return q
}

func (h *thirdPartyHandlers) lookup(kind string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		out, err := h.tp.Lookup(r.Context(), kind, PathParam(r, "protocol"), fields(r))
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, out)
	}
}

// reverse is /thirdparty/location?alias= and /thirdparty/user?userid=.
func (h *thirdPartyHandlers) reverse(kind, param string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		v := r.URL.Query().Get(param)
		if v == "" {
			return merr.MissingParam("Missing %s", param)
		}
		out, err := h.tp.Lookup(r.Context(), kind, "", url.Values{param: {v}})
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, out)
	}
}

// registerAppService is POST /register with m.login.application_service:
// a service registers a user of its namespace (M_EXCLUSIVE for others),
// whether registration is open or not, with no password.
func (a *API) registerAppService(w http.ResponseWriter, r *http.Request, req registerRequest) error {
	dev := DeviceFrom(r)
	if dev.AppService == "" {
		return notAppService(r)
	}
	if req.Type != loginTypeAppService {
		return merr.Unknown("An application service registers users with type %s", loginTypeAppService)
	}
	if req.Username == "" {
		return merr.MissingParam("Missing username")
	}
	lp := strings.ToLower(req.Username)
	if !a.AppServices.ControlsUser(dev.AppService, "@"+lp+":"+a.Cfg.ServerName) {
		return merr.Exclusive("@%s:%s is not in the application service's namespace", lp, a.Cfg.ServerName)
	}
	sess, err := a.Users.Register(withAddr(r), userapi.RegisterRequest{
		Localpart: lp, AppService: dev.AppService, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, ClientAddr: clientAddr(r), Via: "appservice",
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, !req.InhibitLogin))
}

// loginAppService is POST /login with m.login.application_service: a
// service gets a device and token for a user of its namespace.
func (a *API) loginAppService(w http.ResponseWriter, r *http.Request, req loginRequest) error {
	dev := DeviceFrom(r)
	if dev.AppService == "" {
		return notAppService(r)
	}
	if req.Identifier == nil || req.Identifier.Type != "m.id.user" || req.Identifier.User == "" {
		return merr.MissingParam("An application service names the user in identifier (type m.id.user)")
	}
	userID := req.Identifier.User
	if !strings.HasPrefix(userID, "@") {
		userID = "@" + strings.ToLower(userID) + ":" + a.Cfg.ServerName
	}
	if !a.AppServices.ControlsUser(dev.AppService, userID) {
		return merr.Custom(http.StatusForbidden, "M_EXCLUSIVE", "%s is not in the application service's namespace", userID)
	}
	sess, err := a.Users.Login(withAddr(r), userapi.LoginRequest{
		User: userID, AppService: dev.AppService, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, ClientAddr: clientAddr(r),
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, true))
}
