package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/userapi/push"
)

// pushBackend is the push service as its handlers need it.
type pushBackend interface {
	SetPusher(ctx context.Context, userID, deviceID string, req push.SetPusherRequest) error
	Pushers(ctx context.Context, userID string) []push.Pusher
	Notifications(ctx context.Context, userID, from string, limit int, only string) ([]push.Notification, string, error)
}

// eventRenderer renders events in the client format.
type eventRenderer interface {
	ClientEvents(ctx context.Context, ids []string) (map[string]json.RawMessage, error)
}

// maxPusherBody bounds the body of POST /pushers/set.
const maxPusherBody = 32 << 10

type pushHandlers struct {
	svc    pushBackend
	events eventRenderer
}

// PushArea is the routes of pushers and /notifications.
func (a *API) PushArea(svc pushBackend, events eventRenderer) func() []Route {
	h := &pushHandlers{svc: svc, events: events}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: v3 + "/pushers", H: h.getPushers, Auth: authUser},
			{Method: "POST", Path: v3 + "/pushers/set", H: h.setPusher, Auth: authUser},
			{Method: "GET", Path: v3 + "/notifications", H: h.notifications, Auth: authUser},
		}
	}
}

func (h *pushHandlers) getPushers(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]any{"pushers": h.svc.Pushers(r.Context(), DeviceFrom(r).UserID)})
}

func (h *pushHandlers) setPusher(w http.ResponseWriter, r *http.Request) error {
	var req push.SetPusherRequest
	if err := httpx.DecodeJSON(r, &req, maxPusherBody); err != nil {
		return err
	}
	d := DeviceFrom(r)
	if err := h.svc.SetPusher(r.Context(), d.UserID, d.DeviceID, req); err != nil {
		return err
	}
	return httpx.OK(w)
}

type notificationJSON struct {
	Actions    json.RawMessage `json:"actions"`
	Event      json.RawMessage `json:"event"`
	ProfileTag string          `json:"profile_tag,omitempty"`
	Read       bool            `json:"read"`
	RoomID     string          `json:"room_id"`
	TS         int64           `json:"ts"`
}

func (h *pushHandlers) notifications(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intValue(q, "limit", 20)
	if err != nil {
		return err
	}
	list, next, err := h.svc.Notifications(r.Context(), DeviceFrom(r).UserID, q.Get("from"), limit, q.Get("only"))
	if err != nil {
		return err
	}
	ids := make([]string, len(list))
	for i, n := range list {
		ids[i] = n.EventID
	}
	events, err := h.events.ClientEvents(r.Context(), ids)
	if err != nil {
		return err
	}
	out := make([]notificationJSON, 0, len(list))
	for _, n := range list {
		ev, ok := events[n.EventID]
		if !ok {
			continue // purged
		}
		out = append(out, notificationJSON{Actions: json.RawMessage(n.Actions), Event: ev, Read: n.Read, RoomID: n.RoomID, TS: n.TS})
	}
	body := map[string]any{"notifications": out}
	if next != "" {
		body["next_token"] = next
	}
	return httpx.JSON(w, http.StatusOK, body)
}
