package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/adminapi/reports"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// reportStore keeps content reports for the server's admins (adminapi/reports).
type reportStore interface {
	Add(ctx context.Context, reporter, roomID, eventID, reason string, score *int64) (int64, error)
	List(ctx context.Context, roomID string, from, limit int) ([]reports.Report, int64, error)
}

// eventViewer loads an event the way the user may see it; M_NOT_FOUND when
// it does not exist or the user may not see it (syncapi).
type eventViewer interface {
	Event(ctx context.Context, userID, deviceID, roomID, eventID string) (json.RawMessage, error)
}

// roomChecker tells whether a room exists (M_NOT_FOUND when it does not).
type roomChecker interface {
	Membership(ctx context.Context, roomID, userID string) (string, int64, error)
}

// ReportsArea is content reporting: /rooms/{roomId}/report/{eventId} for an
// event and /rooms/{roomId}/report for a whole room; server admins list the
// reports at /_synapse/admin/v1/event_reports (the path admin tools know).
func (a *API) ReportsArea(store reportStore, events eventViewer, rooms roomChecker) func() []Route {
	h := &reportHandlers{store: store, events: events, rooms: rooms}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: v3 + "/rooms/{roomId}/report/{eventId}", H: h.reportEvent, Auth: authUser, Limit: limitMessage},
			{Method: "POST", Path: v3 + "/rooms/{roomId}/report", H: h.reportRoom, Auth: authUser, Limit: limitMessage},
			{Method: "GET", Path: "/_synapse/admin/v1/event_reports", H: h.list, Auth: authAdmin},
		}
	}
}

type reportHandlers struct {
	store  reportStore
	events eventViewer
	rooms  roomChecker
}

// reportBody is a report's body; score is only for events.
type reportBody struct {
	Reason string `json:"reason"`
	Score  *int64 `json:"score"`
}

func (h *reportHandlers) reportEvent(w http.ResponseWriter, r *http.Request) error {
	var b reportBody
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	d := DeviceFrom(r)
	roomID, eventID := PathParam(r, "roomId"), PathParam(r, "eventId")
	if !validReportRoom(roomID) || eventID == "" || len(eventID) > 255 || eventID[0] != '$' || strings.ContainsRune(eventID, 0) {
		return merr.NotFound("Event not found")
	}
	// Only what the reporter can see may be reported: anything else is
	// answered as if it did not exist.
	if _, err := h.events.Event(r.Context(), d.UserID, d.DeviceID, roomID, eventID); err != nil {
		if merr.Is(err, "M_FORBIDDEN") || merr.Is(err, "M_INVALID_PARAM") {
			return merr.NotFound("Event not found")
		}
		return err
	}
	if _, err := h.store.Add(r.Context(), d.UserID, roomID, eventID, b.Reason, b.Score); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (h *reportHandlers) reportRoom(w http.ResponseWriter, r *http.Request) error {
	var b reportBody
	if err := httpx.DecodeJSON(r, &b, 16<<10); err != nil {
		return err
	}
	d := DeviceFrom(r)
	roomID := PathParam(r, "roomId")
	if !validReportRoom(roomID) {
		return merr.NotFound("Room not found")
	}
	if _, _, err := h.rooms.Membership(r.Context(), roomID, d.UserID); err != nil {
		return err
	}
	if _, err := h.store.Add(r.Context(), d.UserID, roomID, "", b.Reason, nil); err != nil {
		return err
	}
	return httpx.OK(w)
}

func validReportRoom(id string) bool {
	return len(id) > 1 && len(id) <= 255 && id[0] == '!' && !strings.ContainsRune(id, 0)
}

// list answers the admin listing: ?from (an offset), ?limit, ?room_id.
func (h *reportHandlers) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, limit := 0, 100
	if v := q.Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return merr.InvalidParam("from must be a whole number, 0 or more")
		}
		from = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return merr.InvalidParam("limit must be between 1 and 1000")
		}
		limit = n
	}
	list, total, err := h.store.List(r.Context(), q.Get("room_id"), from, limit)
	if err != nil {
		return err
	}
	body := map[string]any{"event_reports": list, "total": total}
	if int64(from+len(list)) < total {
		body["next_token"] = from + len(list)
	}
	return httpx.JSON(w, http.StatusOK, body)
}
