package federationapi

import (
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
)

// queryProfile answers another server's question about a user of this
// server's profile (all of it, or one field).
func (a *API) queryProfile(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	if !ids.ValidUserID(userID) {
		return merr.InvalidParam("Invalid user_id")
	}
	if ids.ServerOf(userID, '@') != a.ServerName {
		return merr.InvalidParam("The user is not of this server")
	}
	switch field {
	case "", "displayname", "avatar_url":
	default:
		return merr.InvalidParam("Unknown profile field %q", field)
	}
	ok, err := a.Users.AccountExists(r.Context(), userID)
	if err != nil {
		return err
	}
	if !ok {
		return merr.NotFound("Unknown user")
	}
	name, avatar, err := a.Users.Profile(r.Context(), userID)
	if err != nil {
		return err
	}
	out := map[string]string{}
	if name != "" && field != "avatar_url" {
		out["displayname"] = name
	}
	if avatar != "" && field != "displayname" {
		out["avatar_url"] = avatar
	}
	return httpx.JSON(w, http.StatusOK, out)
}

// queryDirectory answers which room an alias of this server names, and
// the servers in it that can help joining.
func (a *API) queryDirectory(w http.ResponseWriter, r *http.Request) error {
	alias := r.URL.Query().Get("room_alias")
	if !ids.ValidRoomAlias(alias) {
		return merr.InvalidParam("Invalid room_alias")
	}
	if ids.ServerOf(alias, '#') != a.ServerName {
		return merr.NotFound("The alias is not of this server")
	}
	roomID, err := a.Rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		return err
	}
	servers, err := a.Rooms.JoinedServers(r.Context(), roomID)
	if err != nil {
		return err
	}
	// This server first: it has the alias, so it is in the room.
	out := []string{a.ServerName}
	for _, s := range servers {
		if s != a.ServerName {
			out = append(out, s)
		}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": out})
}

// openIDUserInfo tells another server whose OpenID token it holds.
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
