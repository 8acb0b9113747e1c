package clientapi

import (
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// openIDRoutes: a user asks for an OpenID token and hands it to a third
// party (a widget, an integration manager), which learns the user's ID from
// userinfo. That one endpoint of the federation API is served here, on the
// client listener, whether federation is on or off: widgets need it either
// way.
func (a *API) openIDRoutes() []Route {
	return []Route{
		{Method: "POST", Path: v3 + "/user/{userId}/openid/request_token", H: a.requestOpenIDToken, Auth: authUser},
		{Method: "GET", Path: "/_matrix/federation/v1/openid/userinfo", H: a.openIDUserInfo, Auth: authNone},
	}
}

// requestOpenIDToken ignores the body, which the spec has empty.
func (a *API) requestOpenIDToken(w http.ResponseWriter, r *http.Request) error {
	userID := DeviceFrom(r).UserID
	if PathParam(r, "userId") != userID {
		return merr.Forbidden("You can only request OpenID tokens for yourself")
	}
	token, lifetime, err := a.Users.NewOpenIDToken(r.Context(), userID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"access_token": token, "token_type": "Bearer",
		"matrix_server_name": a.Cfg.ServerName, "expires_in": int64(lifetime.Seconds())})
}

func (a *API) openIDUserInfo(w http.ResponseWriter, r *http.Request) error {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return merr.MissingToken("Missing access_token")
	}
	userID, err := a.Users.OpenIDUser(r.Context(), token)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"sub": userID})
}
