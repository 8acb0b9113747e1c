package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// spaceService is the roomserver's room upgrades and space hierarchy.
type spaceService interface {
	UpgradeRoom(ctx context.Context, sender, roomID string, req roomserver.UpgradeRequest) (string, error)
	Hierarchy(ctx context.Context, req roomserver.HierarchyRequest) (*roomserver.HierarchyResponse, error)
}

// SpacesArea is room upgrades (/upgrade) and the space hierarchy (/hierarchy).
func (a *API) SpacesArea(svc spaceService) func() []Route {
	h := &spaceHandlers{svc: svc}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: v3 + "/rooms/{roomId}/upgrade", H: h.upgrade, Auth: authUser, Limit: limitMessage},
			{Method: "GET", Path: "/_matrix/client/v1/rooms/{roomId}/hierarchy", H: h.hierarchy, Auth: authUser},
			{Method: "GET", Path: "/_matrix/client/unstable/org.matrix.msc2946/rooms/{roomId}/hierarchy", H: h.hierarchy, Auth: authUser},
		}
	}
}

type spaceHandlers struct{ svc spaceService }

func (h *spaceHandlers) upgrade(w http.ResponseWriter, r *http.Request) error {
	var req roomserver.UpgradeRequest
	if err := httpx.DecodeJSON(r, &req, 64<<10); err != nil {
		return err
	}
	id, err := h.svc.UpgradeRoom(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"replacement_room": id})
}

func (h *spaceHandlers) hierarchy(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := roomserver.HierarchyRequest{RoomID: PathParam(r, "roomId"), UserID: DeviceFrom(r).UserID, MaxDepth: -1, From: q.Get("from")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return merr.InvalidParam("limit must be a positive whole number")
		}
		req.Limit = n
	}
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return merr.InvalidParam("max_depth must be a whole number, 0 or more")
		}
		req.MaxDepth = n
	}
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		req.SuggestedOnly = true
	default:
		return merr.InvalidParam("suggested_only must be true or false")
	}
	resp, err := h.svc.Hierarchy(r.Context(), req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}
