package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/syncapi"
)

// adminMessageReader pages through any room's history for an admin (the
// sync engine).
type adminMessageReader interface {
	AdminMessages(ctx context.Context, req syncapi.MessagesRequest) (*syncapi.MessagesResponse, error)
}

// AdminRoomMessagesArea is GET /_synapse/admin/v1/rooms/{roomId}/messages:
// a room's events as /messages gives them (from, to, dir, limit, filter),
// all of them whatever the admin's membership, dir "f" by default.
func (a *API) AdminRoomMessagesArea(msgs adminMessageReader) func() []Route {
	return func() []Route {
		return []Route{{Method: "GET", Path: synapseAdmin + "/v1/rooms/{roomId}/messages", Auth: authAdmin, AuditOp: "room.messages",
			H: func(w http.ResponseWriter, r *http.Request) error {
				q := r.URL.Query()
				limit, err := queryInt(r, "limit", 10, 0, 1000)
				if err != nil {
					return err
				}
				opts, err := roomEventOpts(r)
				if err != nil {
					return err
				}
				resp, err := msgs.AdminMessages(r.Context(), syncapi.MessagesRequest{RoomID: PathParam(r, "roomId"),
					From: q.Get("from"), To: q.Get("to"), Dir: q.Get("dir"), Limit: limit, Opts: opts})
				if err != nil {
					return err
				}
				return httpx.JSON(w, http.StatusOK, resp)
			}}}
	}
}
