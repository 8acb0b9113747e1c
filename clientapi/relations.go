package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi"
)

// relationService lists relations and threads (the sync engine).
type relationService interface {
	Relations(ctx context.Context, req syncapi.RelationsRequest) (*syncapi.RelationsResponse, error)
	Threads(ctx context.Context, req syncapi.ThreadsRequest) (*syncapi.ThreadsResponse, error)
}

const relationsV1 = "/_matrix/client/v1"

// RelationsArea is the route area of /relations and /threads.
func (a *API) RelationsArea(svc relationService) func() []Route {
	h := &relationHandlers{svc: svc}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: relationsV1 + "/rooms/{roomId}/relations/{eventId}", H: h.relations, Auth: authUser},
			{Method: "GET", Path: relationsV1 + "/rooms/{roomId}/relations/{eventId}/{relType}", H: h.relations, Auth: authUser},
			{Method: "GET", Path: relationsV1 + "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", H: h.relations, Auth: authUser},
			{Method: "GET", Path: relationsV1 + "/rooms/{roomId}/threads", H: h.threads, Auth: authUser},
		}
	}
}

type relationHandlers struct {
	svc relationService
}

func (h *relationHandlers) relations(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intValue(q, "limit", 0)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	req := syncapi.RelationsRequest{UserID: d.UserID, DeviceID: d.DeviceID, RoomID: PathParam(r, "roomId"), EventID: PathParam(r, "eventId"),
		RelType: PathParam(r, "relType"), EventType: PathParam(r, "eventType"), From: q.Get("from"), To: q.Get("to"), Limit: limit}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		req.Forwards = true
	default:
		return merr.InvalidParam("dir must be b or f")
	}
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		req.Recurse = true
	default:
		return merr.InvalidParam("recurse must be true or false")
	}
	resp, err := h.svc.Relations(r.Context(), req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (h *relationHandlers) threads(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intValue(q, "limit", 0)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	req := syncapi.ThreadsRequest{UserID: d.UserID, DeviceID: d.DeviceID, RoomID: PathParam(r, "roomId"), From: q.Get("from"), Limit: limit}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		req.Participated = true
	default:
		return merr.InvalidParam("include must be all or participated")
	}
	resp, err := h.svc.Threads(r.Context(), req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}
