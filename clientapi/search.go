package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/syncapi/filter"
)

// searchService runs /search and /user_directory/search (the sync engine).
type searchService interface {
	Search(ctx context.Context, req syncapi.SearchRequest) (*syncapi.SearchResponse, error)
	UserDirectory(ctx context.Context, userID, term string, limit int) (*syncapi.UserDirectoryResponse, error)
}

// SearchArea is the route area of server-side search and the user directory.
func (a *API) SearchArea(svc searchService) func() []Route {
	h := &searchHandlers{svc: svc}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: v3 + "/search", H: h.search, Auth: authUser},
			{Method: "POST", Path: v3 + "/user_directory/search", H: h.userDirectory, Auth: authUser},
		}
	}
}

type searchHandlers struct {
	svc searchService
}

type searchBody struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm   *string         `json:"search_term"`
			Keys         []string        `json:"keys"`
			Filter       json.RawMessage `json:"filter"`
			OrderBy      string          `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
			IncludeState bool `json:"include_state"`
			Groupings    struct {
				GroupBy []struct {
					Key string `json:"key"`
				} `json:"group_by"`
			} `json:"groupings"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// defaultSearchContext is the spec's default of before_limit and after_limit.
const defaultSearchContext = 5

func (h *searchHandlers) search(w http.ResponseWriter, r *http.Request) error {
	var body searchBody
	if err := httpx.DecodeJSON(r, &body, 64<<10); err != nil {
		return err
	}
	re := body.SearchCategories.RoomEvents
	if re == nil {
		return httpx.JSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{}})
	}
	if re.SearchTerm == nil {
		return merr.MissingParam("search_categories.room_events.search_term is required")
	}
	d := DeviceFrom(r)
	req := syncapi.SearchRequest{UserID: d.UserID, DeviceID: d.DeviceID, Term: *re.SearchTerm, Keys: re.Keys,
		OrderBy: re.OrderBy, IncludeState: re.IncludeState, NextBatch: r.URL.Query().Get("next_batch")}
	if f := bytes.TrimSpace(re.Filter); len(f) > 0 && !bytes.Equal(f, []byte("null")) {
		rf, err := filter.ParseRoomEventFilter(f)
		if err != nil {
			return err
		}
		req.Rooms, req.NotRooms, req.Limit = rf.Rooms, rf.NotRooms, rf.Limit
		if m := rf.Compile(); !m.MatchesAll() {
			req.Match = m.Match
		}
	}
	if c := re.EventContext; c != nil {
		sc := &syncapi.SearchContext{Before: defaultSearchContext, After: defaultSearchContext, IncludeProfile: c.IncludeProfile}
		if c.BeforeLimit != nil {
			sc.Before = *c.BeforeLimit
		}
		if c.AfterLimit != nil {
			sc.After = *c.AfterLimit
		}
		if sc.Before < 0 || sc.After < 0 {
			return merr.InvalidParam("event_context limits must not be negative")
		}
		req.Context = sc
	}
	for _, g := range re.Groupings.GroupBy {
		req.GroupBy = append(req.GroupBy, g.Key)
	}
	resp, err := h.svc.Search(r.Context(), req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (h *searchHandlers) userDirectory(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httpx.DecodeJSON(r, &body, 4<<10); err != nil {
		return err
	}
	if body.SearchTerm == nil {
		return merr.MissingParam("search_term is required")
	}
	limit := 10
	if body.Limit != nil {
		if *body.Limit < 0 {
			return merr.InvalidParam("limit must not be negative")
		}
		limit = *body.Limit
	}
	resp, err := h.svc.UserDirectory(r.Context(), DeviceFrom(r).UserID, *body.SearchTerm, limit)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}
