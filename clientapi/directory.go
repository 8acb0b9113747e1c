package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// directory lists published rooms.
type directory interface {
	PublicRooms(ctx context.Context, search string) ([]roomserver.PublicRoom, error)
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
	Server string `json:"-"`
	Filter struct {
		GenericSearchTerm string `json:"generic_search_term"`
		// RoomTypes keeps rooms of these types; null stands for rooms
		// without a type. Absent or empty: every type.
		RoomTypes []*string `json:"room_types"`
	} `json:"filter"`
}

// roomTypeAllowed tells whether a room of type typ ("" for none) passes the room_types filter.
func roomTypeAllowed(types []*string, typ string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == nil && typ == "" || t != nil && *t == typ {
			return true
		}
	}
	return false
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
	}
	if server := q.Get("server"); server != "" && server != a.Cfg.ServerName {
		return merr.Forbidden("Federation is not enabled: only this server's directory can be listed")
	}
	if req.Limit <= 0 || req.Limit > 500 {
		req.Limit = 100
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "p"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "p") {
			return merr.InvalidParam("Invalid since token")
		}
		offset = n
	}
	all, err := a.Directory.PublicRooms(r.Context(), req.Filter.GenericSearchTerm)
	if err != nil {
		return err
	}
	rooms := all[:0:0]
	for _, pr := range all {
		if roomTypeAllowed(req.Filter.RoomTypes, pr.RoomType) {
			rooms = append(rooms, pr)
		}
	}
	resp := map[string]any{"total_room_count_estimate": len(rooms)}
	offset = min(offset, len(rooms))
	end := min(offset+req.Limit, len(rooms))
	resp["chunk"] = rooms[offset:end]
	if end < len(rooms) {
		resp["next_batch"] = "p" + strconv.Itoa(end)
	}
	if offset > 0 {
		resp["prev_batch"] = "p" + strconv.Itoa(max(0, offset-req.Limit))
	}
	return httpx.JSON(w, http.StatusOK, resp)
}
