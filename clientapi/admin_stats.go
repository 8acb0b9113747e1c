package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/haven-chat/haven/adminapi/stats"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// statsSource answers the statistics (adminapi/stats).
type statsSource interface {
	UsersMedia(ctx context.Context, q stats.UserMediaQuery) ([]stats.UserMedia, int64, error)
	LargestRooms(ctx context.Context) ([]stats.RoomSize, error)
	ServerStats(ctx context.Context, days int) (stats.Server, error)
}

// AdminStatsArea is the admin API's statistics: media per user and the
// largest rooms (as Synapse answers them) and Haven's own server overview
// at /v1/statistics/server.
func (a *API) AdminStatsArea(src statsSource) func() []Route {
	h := &adminStats{src: src}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: synapseAdmin + "/v1/statistics/users/media", H: h.usersMedia, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/statistics/database/rooms", H: h.rooms, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/statistics/server", H: h.server, Auth: authAdmin},
		}
	}
}

type adminStats struct{ src statsSource }

// msParam reads an optional time in milliseconds.
func msParam(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, merr.InvalidParam("%s must be a time in milliseconds", name)
	}
	return n, nil
}

func (h *adminStats) usersMedia(w http.ResponseWriter, r *http.Request) error {
	from, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	back, err := dirParam(r)
	if err != nil {
		return err
	}
	q := stats.UserMediaQuery{From: from, Limit: limit, Backwards: back, OrderBy: r.URL.Query().Get("order_by"), Search: r.URL.Query().Get("search_term")}
	if !stats.ValidUserMediaOrder(q.OrderBy) {
		return merr.InvalidParam("Unknown order_by %q", q.OrderBy)
	}
	if len(q.Search) > 255 || !storage.StorableText(q.Search) {
		return merr.InvalidParam("search_term is too long or not text")
	}
	if q.FromTS, err = msParam(r, "from_ts"); err != nil {
		return err
	}
	if q.UntilTS, err = msParam(r, "until_ts"); err != nil {
		return err
	}
	if q.UntilTS > 0 && q.UntilTS < q.FromTS {
		return merr.InvalidParam("until_ts must not be before from_ts")
	}
	list, total, err := h.src.UsersMedia(r.Context(), q)
	if err != nil {
		return err
	}
	body := map[string]any{"users": list, "total": total}
	if int64(from+len(list)) < total {
		body["next_token"] = from + len(list)
	}
	return httpx.JSON(w, http.StatusOK, body)
}

func (h *adminStats) rooms(w http.ResponseWriter, r *http.Request) error {
	list, err := h.src.LargestRooms(r.Context())
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"rooms": list})
}

// server answers Haven's overview; ?days (1 to 90, default 30) is how
// many days messages_per_day covers.
func (h *adminStats) server(w http.ResponseWriter, r *http.Request) error {
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 90 {
			return merr.InvalidParam("days must be between 1 and 90")
		}
		days = n
	}
	s, err := h.src.ServerStats(r.Context(), days)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, s)
}
