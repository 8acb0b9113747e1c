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

type publicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string `json:"generic_search_term"`
		// RoomTypes keeps rooms of these types; null stands for rooms
		// without a type. Absent or empty: every type.
		RoomTypes []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

func (a *API) publicRooms(w http.ResponseWriter, r *http.Request) error {
	var req publicRoomsRequest
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		if err := httpx.DecodeJSON(r, &req, 16<<10); err != nil {
			return err
		}
	} else {
		limit, err := intParam(r, "limit", 0)
		if err != nil {
			return err
		}
		req.Limit, req.Since = limit, q.Get("since")
		switch v := q.Get("include_all_networks"); v {
		case "", "false":
		case "true":
			req.IncludeAllNetworks = true
		default:
			return merr.InvalidParam("include_all_networks must be true or false")
		}
		req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	}
	if req.Limit < 0 {
		return merr.InvalidParam("limit must not be negative")
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return merr.InvalidParam("third_party_instance_id cannot be used with include_all_networks")
	}
	query := roomserver.PublicRoomsQuery{Limit: req.Limit, Since: req.Since, ThirdPartyInstanceID: req.ThirdPartyInstanceID}
	if req.Filter != nil {
		query.Search, query.RoomTypes = req.Filter.GenericSearchTerm, req.Filter.RoomTypes
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
