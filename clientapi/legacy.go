package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/syncapi"
)

// The endpoints that left the spec (or never were in a v3 release) but
// that older clients and bots still call, answered as Synapse answers
// them. The work is done by the sync engine (syncapi/legacy.go).

// legacySync is what the legacy handlers need from the sync engine.
type legacySync interface {
	Events(ctx context.Context, req syncapi.EventsRequest) (*syncapi.EventsResponse, error)
	InitialSync(ctx context.Context, userID, deviceID string, limit int, archived bool) (*syncapi.InitialSyncResponse, error)
	RoomInitialSync(ctx context.Context, userID, deviceID, roomID string, limit int) (*syncapi.RoomInitialSync, error)
	EventByID(ctx context.Context, userID, deviceID, eventID string) (json.RawMessage, error)
}

// eventsTimeout is how long GET /events waits without a timeout parameter (Synapse's default).
const eventsTimeout = 30 * time.Second

func (a *API) legacyRoutes() []Route {
	return []Route{
		{Method: "POST", Path: v3 + "/rooms/{roomId}/send/{eventType}", H: a.sendWithoutTxn, Auth: authUser, Limit: limitMessage},
		{Method: "GET", Path: v3 + "/events", H: a.eventStream, Auth: authUser},
		{Method: "GET", Path: v3 + "/events/{eventId}", H: a.eventByID, Auth: authUser},
		{Method: "GET", Path: v3 + "/initialSync", H: a.initialSync, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/initialSync", H: a.roomInitialSync, Auth: authUser},
		// MSC2432's path, from before it was in v1.1.
		{Method: "GET", Path: "/_matrix/client/unstable/org.matrix.msc2432/rooms/{roomId}/aliases", H: a.roomAliases, Auth: authUser},
	}
}

// sendWithoutTxn is POST /rooms/{roomId}/send/{eventType}: a new event each time.
func (a *API) sendWithoutTxn(w http.ResponseWriter, r *http.Request) error {
	return a.sendEvent(w, r, "")
}

func (a *API) eventStream(w http.ResponseWriter, r *http.Request) error {
	timeout := eventsTimeout
	if r.URL.Query().Has("timeout") {
		ms, err := intParam(r, "timeout", 0)
		if err != nil {
			return err
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	d := DeviceFrom(r)
	if timeout > 0 {
		// Waiting is not work: let another connection have this one's slot.
		httpx.ReleaseSlot(r.Context())
	}
	resp, err := a.Sync.Events(r.Context(), syncapi.EventsRequest{UserID: d.UserID, DeviceID: d.DeviceID, From: r.URL.Query().Get("from"), Timeout: timeout})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (a *API) eventByID(w http.ResponseWriter, r *http.Request) error {
	d := DeviceFrom(r)
	ev, err := a.Sync.EventByID(r.Context(), d.UserID, d.DeviceID, PathParam(r, "eventId"))
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, ev)
}

func (a *API) initialSync(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	resp, err := a.Sync.InitialSync(r.Context(), d.UserID, d.DeviceID, min(limit, 1000), r.URL.Query().Get("archived") == "true")
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (a *API) roomInitialSync(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	resp, err := a.Sync.RoomInitialSync(r.Context(), d.UserID, d.DeviceID, PathParam(r, "roomId"), min(limit, 1000))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}
