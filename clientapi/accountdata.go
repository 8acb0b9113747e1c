package clientapi

import (
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// defaultAccountDataLimit bounds account data content when max_request_bytes is unset.
const defaultAccountDataLimit = 1 << 20

func (a *API) accountDataRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/user/{userId}/account_data/{type}", H: a.getAccountData(false), Auth: authUser},
		{Method: "PUT", Path: v3 + "/user/{userId}/account_data/{type}", H: a.putAccountData(false), Auth: authUser},
		{Method: "GET", Path: v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", H: a.getAccountData(true), Auth: authUser},
		{Method: "PUT", Path: v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", H: a.putAccountData(true), Auth: authUser},
	}
}

// accountDataTarget reads the path: the user must be the requester; a room
// ID, when present, must look like one.
func accountDataTarget(r *http.Request, inRoom bool, verb string) (userID, roomID, typ string, err error) {
	userID = PathParam(r, "userId")
	if userID != DeviceFrom(r).UserID {
		return "", "", "", merr.Forbidden("You cannot %s another user's account data", verb)
	}
	if inRoom {
		roomID = PathParam(r, "roomId")
		if !strings.HasPrefix(roomID, "!") || len(roomID) < 2 {
			return "", "", "", merr.InvalidParam("%q is not a room ID", roomID)
		}
	}
	return userID, roomID, PathParam(r, "type"), nil
}

func (a *API) getAccountData(inRoom bool) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		userID, roomID, typ, err := accountDataTarget(r, inRoom, "read")
		if err != nil {
			return err
		}
		content, err := a.Users.GetAccountData(r.Context(), userID, roomID, typ)
		if err != nil {
			return err
		}
		return httpx.RawJSON(w, http.StatusOK, content)
	}
}

func (a *API) putAccountData(inRoom bool) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		return a.setAccountData(w, r, inRoom)
	}
}

func (a *API) setAccountData(w http.ResponseWriter, r *http.Request, inRoom bool) error {
	userID, roomID, typ, err := accountDataTarget(r, inRoom, "change")
	if err != nil {
		return err
	}
	if userapi.ServerManagedAccountData(typ) {
		return merr.Custom(http.StatusMethodNotAllowed, "M_BAD_JSON", "Account data of type %s is managed by the server and cannot be set by clients", typ)
	}
	limit := a.Cfg.MaxRequestBytes
	if limit <= 0 {
		limit = defaultAccountDataLimit
	}
	body, err := httpx.ReadBody(r, limit)
	if err != nil {
		return err
	}
	if err := a.Users.SetAccountData(r.Context(), userID, roomID, typ, body); err != nil {
		return err
	}
	return httpx.OK(w)
}
