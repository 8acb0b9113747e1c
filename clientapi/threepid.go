package clientapi

import (
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// threePIDRoutes: Haven sends no email or text messages and talks to no
// identity server, so accounts have no third-party identifiers (the
// m.3pid_changes capability says so). The endpoints answer as Synapse does
// with 3PID changes disabled and nothing configured, rather than 404.
func (a *API) threePIDRoutes() []Route {
	const acc = v3 + "/account/3pid"
	var out []Route
	for _, path := range []string{acc, acc + "/add", acc + "/delete"} {
		out = append(out, Route{Method: "POST", Path: path, H: threePIDChangesDisabled, Auth: authUser})
	}
	for _, path := range []string{acc + "/email/requestToken", acc + "/msisdn/requestToken",
		v3 + "/register/email/requestToken", v3 + "/register/msisdn/requestToken",
		v3 + "/account/password/email/requestToken", v3 + "/account/password/msisdn/requestToken"} {
		out = append(out, Route{Method: "POST", Path: path, H: threePIDMediumNotSupported, Auth: authNone, Limit: limitLogin})
	}
	return append(out,
		Route{Method: "GET", Path: acc, H: listThreePIDs, Auth: authUser},
		Route{Method: "POST", Path: acc + "/bind", H: bindThreePID, Auth: authUser},
		Route{Method: "POST", Path: acc + "/unbind", H: unbindThreePID, Auth: authUser})
}

func listThreePIDs(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string][]any{"threepids": {}})
}

func threePIDChangesDisabled(w http.ResponseWriter, r *http.Request) error {
	return merr.Custom(http.StatusBadRequest, "M_FORBIDDEN", "3PID changes are disabled on this server")
}

func threePIDMediumNotSupported(w http.ResponseWriter, r *http.Request) error {
	return merr.Custom(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server sends no email or text messages, so it cannot validate an address")
}

func bindThreePID(w http.ResponseWriter, r *http.Request) error {
	return merr.ServerNotTrusted("This server trusts no identity server")
}

// unbindThreePID: nothing is bound through this server, so there is nothing
// it could unbind.
func unbindThreePID(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
