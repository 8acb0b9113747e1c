package clientapi

import (
	"net/http"

	"github.com/haven-chat/haven/clientapi/signin"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// SignInArea serves Haven's sign-in page (clientapi/signin) and its Matrix
// entry points: the m.login.sso redirect (also straight to one company
// identity provider) and the m.login.sso UIA fallback. The server adds it
// when auth.totp is not off or oidc.providers are set.
func (a *API) SignInArea(p *signin.Page) func() []Route {
	html := func(f http.HandlerFunc) httpx.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error { f(w, r); return nil }
	}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: v3 + "/login/sso/redirect", H: html(p.SSORedirect), Auth: authNone},
			{Method: "GET", Path: v3 + "/login/sso/redirect/{idpId}", H: html(func(w http.ResponseWriter, r *http.Request) {
				p.SSORedirectIdP(w, r, PathParam(r, "idpId"))
			}), Auth: authNone},
			{Method: "GET", Path: signin.PathOIDCStart + "{idpId}", H: html(func(w http.ResponseWriter, r *http.Request) {
				p.OIDCStart(w, r, PathParam(r, "idpId"))
			}), Auth: authNone, Limit: limitLogin},
			{Method: "GET", Path: signin.PathOIDCCallback, H: html(p.OIDCCallback), Auth: authNone, Limit: limitLogin},
			{Method: "POST", Path: signin.PathCode, H: html(p.Code), Auth: authNone, Limit: limitLogin},
			{Method: "GET", Path: v3 + "/auth/{authType}/fallback/web", H: html(func(w http.ResponseWriter, r *http.Request) {
				p.UIAFallback(w, r, PathParam(r, "authType"))
			}), Auth: authNone},
			{Method: "GET", Path: signin.PathSignIn, H: html(p.SignIn), Auth: authNone},
			{Method: "POST", Path: signin.PathSignIn, H: html(p.SignIn), Auth: authNone, Limit: limitLogin},
			{Method: "POST", Path: signin.PathEnrol, H: html(p.Enrol), Auth: authNone, Limit: limitLogin},
			{Method: "POST", Path: signin.PathFinish, H: html(p.Finish), Auth: authNone},
			{Method: "GET", Path: signin.PathAccount, H: html(p.Account), Auth: authNone},
			{Method: "POST", Path: signin.PathTOTP, H: html(p.TOTP), Auth: authNone},
			{Method: "POST", Path: signin.PathAccountDevices, H: html(p.AccountDevices), Auth: authNone},
			{Method: "POST", Path: signin.PathAccountApprove, H: html(p.AccountApprove), Auth: authNone},
		}
	}
}

// signInPageOn tells whether Haven's sign-in page serves m.login.sso: with
// two-factor sign-in or company identity providers.
func (a *API) signInPageOn() bool {
	return a.Cfg.Auth.TOTPEnabled() || len(a.Cfg.OIDC.Providers) > 0
}

// ssoLoginFlows are the login flows of the sign-in page, offered when it
// is on: m.login.sso (the page, with the company identity providers, which
// clients show as buttons) and m.login.token (what the page hands back).
func (a *API) ssoLoginFlows() []map[string]any {
	if !a.signInPageOn() {
		return nil
	}
	sso := map[string]any{"type": userapi.StageSSO}
	if ps := a.Cfg.OIDC.Providers; len(ps) > 0 {
		idps := make([]map[string]string, 0, len(ps))
		for _, p := range ps {
			idps = append(idps, map[string]string{"id": p.ID, "name": p.DisplayName()})
		}
		sso["identity_providers"] = idps
	}
	return []map[string]any{sso, {"type": userapi.StageToken}}
}

// passwordLoginOffered tells whether m.login.password is in the login
// flows: not when every account must use a second factor.
func (a *API) passwordLoginOffered() bool { return a.Cfg.Auth.TOTP != config.TOTPRequired }

// loginWithToken is POST /login with m.login.token.
func (a *API) loginWithToken(w http.ResponseWriter, r *http.Request, req loginRequest) error {
	if !a.signInPageOn() {
		return merr.Unknown("Unknown login type %s", req.Type)
	}
	if req.Token == "" {
		return merr.MissingParam("Missing token")
	}
	sess, err := a.Users.LoginWithToken(withAddr(r), userapi.TokenLoginRequest{
		Token: req.Token, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		ClientAddr: clientAddr(r), Refresh: req.RefreshToken,
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, a.sessionBody(sess, true))
}

// ClientAddr is the client address of a request as the rate limits and the
// audit log see it (for pages served outside the route table's handlers).
func ClientAddr(r *http.Request) string { return clientAddr(r) }
