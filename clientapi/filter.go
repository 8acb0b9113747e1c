package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"unicode/utf8"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/filter"
)

// maxFilterBody bounds an uploaded filter.
const maxFilterBody = 256 << 10

func (a *API) filterRoutes() []Route {
	return []Route{
		{Method: "POST", Path: v3 + "/user/{userId}/filter", H: a.postFilter, Auth: authUser},
		{Method: "GET", Path: v3 + "/user/{userId}/filter/{filterId}", H: a.getFilter, Auth: authUser},
	}
}

func (a *API) postFilter(w http.ResponseWriter, r *http.Request) error {
	userID := PathParam(r, "userId")
	if userID != DeviceFrom(r).UserID {
		return merr.Forbidden("You cannot create filters for another user")
	}
	body, err := httpx.ReadBody(r, maxFilterBody)
	if err != nil {
		return err
	}
	if err := validateFilter(body); err != nil {
		return err
	}
	id, err := a.Users.PutFilter(r.Context(), userID, body)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"filter_id": id})
}

func (a *API) getFilter(w http.ResponseWriter, r *http.Request) error {
	userID := PathParam(r, "userId")
	if userID != DeviceFrom(r).UserID {
		// Another user's filters are as invisible as missing ones.
		return merr.NotFound("No such filter")
	}
	f, err := a.Users.GetFilter(r.Context(), userID, PathParam(r, "filterId"))
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, f)
}

// validateFilter checks an uploaded filter with the sync engine's parser,
// so that only filters /sync can use are stored.
func validateFilter(body []byte) error {
	t := bytes.TrimSpace(body)
	if !json.Valid(t) || !utf8.Valid(t) {
		return merr.NotJSON("Filter is not valid JSON")
	}
	if t[0] != '{' {
		return merr.BadJSON("A filter must be a JSON object")
	}
	if _, err := filter.Parse(t); err != nil {
		if _, ok := merr.As(err); ok {
			return err
		}
		return merr.BadJSON("Invalid filter: %v", err)
	}
	return nil
}
