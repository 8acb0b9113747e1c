package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
)

// peeker starts and ends peeks (MSC2753).
type peeker interface {
	Peek(ctx context.Context, userID, deviceID, roomID string) error
	Unpeek(ctx context.Context, userID, deviceID, roomID string) error
}

func (a *API) peekRoutes() []Route {
	var out []Route
	for _, base := range []string{v3, "/_matrix/client/unstable/org.matrix.msc2753"} {
		out = append(out,
			Route{Method: "POST", Path: base + "/peek/{roomIdOrAlias}", H: a.peek, Auth: authUser},
			Route{Method: "POST", Path: base + "/unpeek/{roomId}", H: a.unpeek, Auth: authUser})
	}
	return out
}

func (a *API) peek(w http.ResponseWriter, r *http.Request) error {
	if err := httpx.DecodeJSON(r, &struct{}{}, 4<<10); err != nil {
		return err
	}
	roomID := PathParam(r, "roomIdOrAlias")
	if strings.HasPrefix(roomID, "#") {
		id, err := a.Rooms.ResolveAlias(r.Context(), roomID)
		if err != nil {
			return err
		}
		roomID = id
	}
	d := DeviceFrom(r)
	if err := a.Peeks.Peek(r.Context(), d.UserID, d.DeviceID, roomID); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

func (a *API) unpeek(w http.ResponseWriter, r *http.Request) error {
	d := DeviceFrom(r)
	if err := a.Peeks.Unpeek(r.Context(), d.UserID, d.DeviceID, PathParam(r, "roomId")); err != nil {
		return err
	}
	return httpx.OK(w)
}
