package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// roomLeaver makes a deactivated user leave every room (the roomserver).
type roomLeaver interface {
	LeaveAllRooms(ctx context.Context, userID string) error
}

// Body limits of the account endpoints.
const (
	maxAuthBody  = 16 << 10
	maxSmallBody = 8 << 10
)

// UserAreas are the routes of the user API: accounts, login, devices,
// profiles, account data, filters, push rules, capabilities, OpenID and
// third-party identifiers.
func (a *API) UserAreas() []func() []Route {
	return []func() []Route{a.accountRoutes, a.deviceRoutes, a.profileRoutes, a.accountDataRoutes,
		a.filterRoutes, a.pushRuleRoutes, a.capabilityRoutes, a.openIDRoutes, a.threePIDRoutes}
}

func (a *API) accountRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/login", H: a.loginFlows, Auth: authNone},
		{Method: "POST", Path: v3 + "/login", H: a.login, Auth: authAppService, Limit: limitLogin},
		{Method: "POST", Path: v3 + "/refresh", H: a.refresh, Auth: authNone, Limit: limitLogin},
		{Method: "POST", Path: v3 + "/logout", H: a.logout, Auth: authUser, ExpiredOK: true},
		{Method: "POST", Path: v3 + "/logout/all", H: a.logoutAll, Auth: authUser, ExpiredOK: true},
		{Method: "GET", Path: v3 + "/account/whoami", H: a.whoami, Auth: authUser},
		{Method: "POST", Path: v3 + "/register", H: uia(a.register), Auth: authAppService, Limit: limitRegister},
		{Method: "GET", Path: v3 + "/register/available", H: a.registerAvailable, Auth: authNone, Limit: limitLogin},
		{Method: "GET", Path: "/_matrix/client/v1/register/m.login.registration_token/validity", H: a.registrationTokenValidity, Auth: authNone, Limit: limitRegister},
		// Without a token: a password reset by email (m.login.email.identity).
		{Method: "POST", Path: v3 + "/account/password", H: uia(a.changePassword), Auth: authOptional, Limit: limitLogin},
		{Method: "POST", Path: v3 + "/account/deactivate", H: uia(a.deactivate), Auth: authUser},
		{Method: "GET", Path: "/_synapse/admin/v1/register", H: a.sharedSecretNonce, Auth: authNone},
		{Method: "POST", Path: "/_synapse/admin/v1/register", H: a.sharedSecretRegister, Auth: authNone},
	}
}

// uiaChallengeCode is the errcode the access log records for a plain UIA
// challenge (the body itself has none).
const uiaChallengeCode = "M_UNAUTHORIZED"

// uia writes the plain 401 of user-interactive auth as the spec shows it:
// flows, params, session and completed, without errcode and error (clients
// show an errcode as a failed attempt). A failed attempt keeps its errcode.
func uia(h httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := h(w, r)
		if err != nil && userapi.IsUIAChallenge(err) {
			if ri := httpx.Info(r.Context()); ri != nil {
				ri.ErrCode = uiaChallengeCode
			}
			return httpx.JSON(w, http.StatusUnauthorized, userapi.UIABody(err))
		}
		return err
	}
}

// withAddr is the request's context carrying the client address, for the
// audit log of the user API.
func withAddr(r *http.Request) context.Context {
	return userapi.WithClientAddr(r.Context(), clientAddr(r))
}

// hasAuth tells whether a request carried a UIA "auth" object.
func hasAuth(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

func (a *API) sessionBody(sess userapi.Session, withToken bool) map[string]any {
	body := map[string]any{"user_id": sess.UserID, "home_server": a.Cfg.ServerName}
	if withToken {
		body["access_token"] = sess.AccessToken
		body["device_id"] = sess.DeviceID
		if sess.RefreshToken != "" {
			body["refresh_token"] = sess.RefreshToken
			body["expires_in_ms"] = sess.ExpiresInMS
		}
		if a.Cfg.PublicBaseURL != "" {
			body["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": a.Cfg.PublicBaseURL}}
		}
	}
	return body
}

// Login.

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) error {
	var flows []map[string]any
	if a.passwordLoginOffered() {
		flows = append(flows, map[string]any{"type": "m.login.password"})
	}
	flows = append(flows, a.ssoLoginFlows()...)
	if a.AppServices != nil {
		flows = append(flows, map[string]any{"type": loginTypeAppService})
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"flows": flows})
}

type loginRequest struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string `json:"user"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
	// Token is the login token of m.login.token (sso.go).
	Token string `json:"token"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	switch req.Type {
	case "":
		return merr.MissingParam("Missing login type")
	case userapi.StagePassword:
	case loginTypeAppService:
		return a.loginAppService(w, r, req)
	case userapi.StageToken:
		return a.loginWithToken(w, r, req)
	default:
		return merr.Unknown("Unknown login type %s", req.Type)
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return merr.Unknown("Unsupported login identifier type %q: use m.id.user", req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	if user == "" {
		return merr.MissingParam("Missing identifier.user")
	}
	if req.Password == "" {
		return merr.MissingParam("Missing password")
	}
	sess, err := a.Users.Login(r.Context(), userapi.LoginRequest{
		User: user, Password: req.Password, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, ClientAddr: clientAddr(r), Refresh: req.RefreshToken,
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, true))
}

// refresh exchanges a refresh token for new tokens (spec v1.3); it needs
// no access token.
func (a *API) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	sess, err := a.Users.Refresh(withAddr(r), req.RefreshToken)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"access_token": sess.AccessToken, "refresh_token": sess.RefreshToken, "expires_in_ms": sess.ExpiresInMS})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	if err := a.Users.Logout(withAddr(r), DeviceFrom(r)); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) logoutAll(w http.ResponseWriter, r *http.Request) error {
	if err := a.Users.LogoutAll(withAddr(r), DeviceFrom(r).UserID); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) error {
	d := DeviceFrom(r)
	body := map[string]any{"user_id": d.UserID, "is_guest": false}
	if d.DeviceID != "" { // an application service acting without a device has none
		body["device_id"] = d.DeviceID
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// Registration.

type registerRequest struct {
	Auth json.RawMessage `json:"auth"`
	// Type is m.login.application_service for a service's registration.
	Type                     string `json:"type"`
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	InhibitLogin             bool   `json:"inhibit_login"`
	RefreshToken             bool   `json:"refresh_token"`
	// GuestAccessToken upgrades the guest it belongs to (guests.go).
	GuestAccessToken string `json:"guest_access_token"`
}

func checkKindParam(r *http.Request) error {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
		return nil
	default:
		return merr.InvalidParam("Unknown account kind %q: use user or guest", kind)
	}
}

// registerParams are the parameters of a registration that its UIA session
// keeps from the first request that gives them: the password as its hash,
// made by the check from the request's password in clear.
type registerParams struct {
	Username          string `json:"username,omitempty"`
	Password          string `json:"-"`
	PasswordHash      string `json:"password_hash,omitempty"`
	DeviceID          string `json:"device_id,omitempty"`
	DeviceDisplayName string `json:"initial_device_display_name,omitempty"`
	InhibitLogin      bool   `json:"inhibit_login,omitempty"`
	RefreshToken      bool   `json:"refresh_token,omitempty"`
}

func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Query().Get("kind") == "guest" {
		return a.registerGuest(w, r)
	}
	if err := checkKindParam(r); err != nil {
		return err
	}
	// Application services register their users whether registration is
	// open or not.
	asToken := DeviceFrom(r).AppService != ""
	if !a.Cfg.Registration.Open && !asToken {
		return merr.Forbidden("Registration is disabled")
	}
	var req registerRequest
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	if asToken || req.Type == loginTypeAppService {
		return a.registerAppService(w, r, req)
	}
	ctx := r.Context()
	p := registerParams{Username: req.Username, Password: req.Password, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken}
	var guest userapi.Device
	if req.GuestAccessToken != "" {
		g, err := a.guestToUpgrade(r, req.GuestAccessToken, req.Username)
		if err != nil {
			return err
		}
		guest = g
		p.Username = "" // the guest's own, which it holds already
	}
	check := func() error {
		if p.Username != "" {
			lp, err := a.Users.CheckUsernameAvailable(ctx, p.Username)
			if err != nil {
				return err
			}
			p.Username = lp
		}
		if len(p.DeviceID) > userapi.MaxDeviceIDBytes {
			return merr.InvalidParam("device_id is longer than %d bytes", userapi.MaxDeviceIDBytes)
		}
		if p.PasswordHash == "" && p.Password != "" {
			hash, err := a.Users.HashNewPassword(p.Password)
			if err != nil {
				return err
			}
			p.PasswordHash = hash
		}
		// The password is needed by the time the client authenticates.
		if p.PasswordHash == "" && hasAuth(req.Auth) {
			return merr.MissingParam("Missing password")
		}
		return nil
	}
	err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "register", Flows: a.Users.RegistrationFlows(), Auth: req.Auth, Params: &p, Check: check})
	if err != nil {
		return err
	}
	var sess userapi.Session
	if guest.IsGuest {
		sess, err = a.Users.UpgradeGuest(ctx, guest, p.PasswordHash, p.DeviceID, p.DeviceDisplayName, clientAddr(r), p.InhibitLogin)
	} else {
		sess, err = a.Users.Register(ctx, userapi.RegisterRequest{
			Localpart: p.Username, PasswordHash: p.PasswordHash, DeviceID: p.DeviceID,
			DeviceDisplayName: p.DeviceDisplayName, InhibitLogin: p.InhibitLogin,
			Refresh:    p.RefreshToken || req.RefreshToken,
			ClientAddr: clientAddr(r), Via: "client",
		})
	}
	// A registration token's use, taken by the completed auth, is
	// completed or given back.
	if ferr := a.Users.FinishRegistrationToken(context.WithoutCancel(ctx), req.Auth, err == nil); ferr != nil {
		logging.From(ctx).WithError(ferr).Error("registration token use not recorded")
	}
	if err != nil {
		return err
	}
	// An account that must sign in with a second factor gets no session
	// here (SecondFactorFirst): the client is told to sign in.
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, !p.InhibitLogin && !sess.SecondFactorFirst))
}

func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) error {
	if !a.Cfg.Registration.Open {
		return merr.Forbidden("Registration is disabled")
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return merr.MissingParam("Missing username")
	}
	if _, err := a.Users.CheckUsernameAvailable(r.Context(), username); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"available": true})
}

func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if !a.Cfg.Registration.Open {
		return merr.Forbidden("Registration is disabled")
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return merr.MissingParam("Missing token")
	}
	ok, err := a.Users.RegistrationTokenValid(r.Context(), token)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"valid": ok})
}

// Password change and deactivation.

type passwordRequest struct {
	Auth          json.RawMessage `json:"auth"`
	NewPassword   string          `json:"new_password"`
	LogoutDevices *bool           `json:"logout_devices"`
}

// passwordParams are the parameters of a password change that its UIA
// session keeps (the new password as its hash).
type passwordParams struct {
	NewPassword     string `json:"-"`
	NewPasswordHash string `json:"new_password_hash,omitempty"`
	LogoutDevices   *bool  `json:"logout_devices,omitempty"`
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) error {
	var req passwordRequest
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	dev := DeviceFrom(r)
	ctx := withAddr(r)
	flows := userapi.PasswordFlows()
	if !HasDevice(r) {
		// A forgotten password: proven by a validated email address.
		if !a.Users.EmailEnabled() {
			return merr.MissingToken("Missing access token")
		}
		flows = [][]string{{userapi.StageEmailIdentity}}
	}
	p := passwordParams{NewPassword: req.NewPassword, LogoutDevices: req.LogoutDevices}
	check := func() error {
		if p.NewPasswordHash != "" {
			return nil
		}
		if p.NewPassword == "" {
			return merr.MissingParam("Missing new_password")
		}
		hash, err := a.Users.HashNewPassword(p.NewPassword)
		p.NewPasswordHash = hash
		return err
	}
	err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "password", UserID: dev.UserID, Flows: flows, Auth: req.Auth, Params: &p, Check: check})
	if err != nil {
		return err
	}
	if !HasDevice(r) {
		if dev.UserID, err = a.Users.EmailIdentityUser(ctx, req.Auth); err != nil {
			return err
		}
	}
	logout := p.LogoutDevices == nil || *p.LogoutDevices
	if err := a.Users.ChangePassword(ctx, dev.UserID, dev.DeviceID, p.NewPasswordHash, logout); err != nil {
		return err
	}
	return httpx.OK(w)
}

type deactivateRequest struct {
	Auth     json.RawMessage `json:"auth"`
	Erase    bool            `json:"erase"`
	IDServer string          `json:"id_server"`
}

func (a *API) deactivate(w http.ResponseWriter, r *http.Request) error {
	var req deactivateRequest
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	dev := DeviceFrom(r)
	ctx := withAddr(r)
	if err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "deactivate", UserID: dev.UserID, Flows: userapi.PasswordFlows(), Auth: req.Auth}); err != nil {
		return err
	}
	if err := a.deactivateAccount(ctx, dev.UserID, req.Erase); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// Shared-secret registration (Synapse's admin API).

func (a *API) sharedSecretNonce(w http.ResponseWriter, r *http.Request) error {
	nonce, err := a.Users.NewRegistrationNonce(r.Context())
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

type sharedSecretBody struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	DisplayName string  `json:"displayname"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

func (a *API) sharedSecretRegister(w http.ResponseWriter, r *http.Request) error {
	if !a.Users.SharedSecretEnabled() {
		return merr.Unknown("Shared secret registration is not enabled")
	}
	var req sharedSecretBody
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	sess, err := a.Users.RegisterWithSharedSecret(r.Context(), userapi.SharedSecretRequest{
		Nonce: req.Nonce, Username: req.Username, DisplayName: req.DisplayName, Password: req.Password,
		Admin: req.Admin, UserType: req.UserType, MAC: req.MAC, ClientAddr: clientAddr(r),
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, true))
}
