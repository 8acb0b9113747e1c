package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/httpx"
)

func (a *API) capabilityRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/capabilities", H: a.capabilities, Auth: authUser},
	}
}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request) error {
	available := map[string]string{}
	for v := range gomatrixserverlib.StableRoomVersions() {
		available[string(v)] = "stable"
	}
	def := a.Cfg.DefaultRoomVersion
	if def == "" {
		def = "11"
	}
	enabled := func(b bool) map[string]bool { return map[string]bool{"enabled": b} }
	return httpx.JSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": def, "available": available},
		"m.change_password": enabled(true),
		"m.set_displayname": enabled(true),
		"m.set_avatar_url":  enabled(true),
		"m.3pid_changes":    enabled(a.Users != nil && a.Users.EmailEnabled()),
		"m.get_login_token": enabled(false),
	}})
}
