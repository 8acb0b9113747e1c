package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// directory lists published rooms.
type directory interface {
	PublicRoomsPage(ctx context.Context, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error)
}

// RemoteDirectory asks another server for a page of its public room
// directory (federation on). Its errors are Matrix errors: the server is
// not allowed (403), could not be reached (502), or answered one.
type RemoteDirectory interface {
	RemotePublicRooms(ctx context.Context, server string, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error)
}

func (a *API) directoryRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/publicRooms", H: a.publicRooms, Auth: authOptional},
		{Method: "POST", Path: v3 + "/publicRooms", H: a.publicRooms, Auth: authUser},
	}
}

func (a *API) publicRooms(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	query, err := roomserver.ParsePublicRoomsQuery(r.Method == http.MethodPost, q, func(v any) error { return httpx.DecodeJSON(r, v, 16<<10) })
	if err != nil {
		return err
	}
	server := q.Get("server")
	if server == "" || strings.EqualFold(server, a.Cfg.ServerName) {
		page, err := a.Directory.PublicRoomsPage(r.Context(), query)
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, page)
	}
	if !ids.ValidServerName(server) {
		return merr.InvalidParam("Invalid server name %q", server)
	}
	if a.RemoteDirectory == nil {
		return merr.Forbidden("Federation is not enabled: only this server's directory can be listed")
	}
	// Another server's directory costs a request to it: only for users.
	if !HasDevice(r) {
		return merr.MissingToken("Listing another server's directory needs an access token")
	}
	page, err := a.RemoteDirectory.RemotePublicRooms(r.Context(), server, query)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, page)
}
