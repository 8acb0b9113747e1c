package clientapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
)

// adminMediaStore is what the admin media API asks of the media repository.
type adminMediaStore interface {
	UserMedia(ctx context.Context, userID string, from, limit int, order mediaapi.MediaOrder) ([]mediaapi.AdminMedia, int64, error)
	DeleteMedia(ctx context.Context, mediaID string) error
	SetQuarantined(ctx context.Context, mediaID, by string) error
	QuarantineMany(ctx context.Context, mediaIDs []string, by string) (int64, error)
	QuarantineUser(ctx context.Context, userID, by string) (int64, error)
}

// roomMedia lists the local media a room's events refer to (roomserver).
type roomMedia interface {
	MediaInRoom(ctx context.Context, roomID string) ([]string, error)
}

// accountLookup tells whether a local account exists (userapi).
type accountLookup interface {
	AccountExists(ctx context.Context, userID string) (bool, error)
}

// AdminMediaArea is the media half of the Synapse-compatible admin API:
// a user's media (list, delete), quarantine of one media ID, of a room's
// and of a user's media, deletion of one media ID, and the remote media
// cache purge (Haven keeps no remote media: nothing to delete).
// Quarantined media is kept but never served (404 M_NOT_FOUND).
func (a *API) AdminMediaArea(media adminMediaStore, rooms roomMedia, accounts accountLookup) func() []Route {
	h := &adminMedia{media: media, rooms: rooms, accounts: accounts, serverName: a.Cfg.ServerName}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: synapseAdmin + "/v1/users/{userId}/media", H: h.userMedia, Auth: authAdmin},
			{Method: "DELETE", Path: synapseAdmin + "/v1/users/{userId}/media", H: h.deleteUserMedia, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/user/{userId}/media/quarantine", H: h.quarantineUser, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/media/quarantine/{serverName}/{mediaId}", H: h.quarantine, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/media/unquarantine/{serverName}/{mediaId}", H: h.unquarantine, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/room/{roomId}/media/quarantine", H: h.quarantineRoom, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/quarantine_media/{roomId}", H: h.quarantineRoom, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/room/{roomId}/media", H: h.listRoomMedia, Auth: authAdmin},
			{Method: "DELETE", Path: synapseAdmin + "/v1/media/{serverName}/{mediaId}", H: h.deleteMedia, Auth: authAdmin},
		}
	}
}

type adminMedia struct {
	media      adminMediaStore
	rooms      roomMedia
	accounts   accountLookup
	serverName string
}

// localUser reads {userId}: a local account that exists.
func (h *adminMedia) localUser(r *http.Request) (string, error) {
	userID := PathParam(r, "userId")
	if !ids.ValidUserID(userID) {
		return "", merr.InvalidParam("%q is not a user ID", userID)
	}
	if !strings.HasSuffix(userID, ":"+h.serverName) {
		return "", merr.InvalidParam("Can only look up local users")
	}
	ok, err := h.accounts.AccountExists(r.Context(), userID)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", merr.NotFound("Unknown user %s", userID)
	}
	return userID, nil
}

// mediaPage reads the paging and ordering of a user's media.
func (h *adminMedia) mediaPage(r *http.Request) (string, int, int, mediaapi.MediaOrder, error) {
	userID, err := h.localUser(r)
	if err != nil {
		return "", 0, 0, mediaapi.MediaOrder{}, err
	}
	from, limit, err := pageParams(r)
	if err != nil {
		return "", 0, 0, mediaapi.MediaOrder{}, err
	}
	back, err := dirParam(r)
	if err != nil {
		return "", 0, 0, mediaapi.MediaOrder{}, err
	}
	by := r.URL.Query().Get("order_by")
	if !mediaapi.ValidMediaOrder(by) {
		return "", 0, 0, mediaapi.MediaOrder{}, merr.InvalidParam("Unknown order_by %q", by)
	}
	return userID, from, limit, mediaapi.MediaOrder{By: by, Backwards: back}, nil
}

func (h *adminMedia) userMedia(w http.ResponseWriter, r *http.Request) error {
	userID, from, limit, order, err := h.mediaPage(r)
	if err != nil {
		return err
	}
	list, total, err := h.media.UserMedia(r.Context(), userID, from, limit, order)
	if err != nil {
		return err
	}
	body := map[string]any{"media": list, "total": total}
	if int64(from+len(list)) < total {
		body["next_token"] = from + len(list)
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// deleteUserMedia deletes the page of the user's media the same
// parameters would list.
func (h *adminMedia) deleteUserMedia(w http.ResponseWriter, r *http.Request) error {
	userID, from, limit, order, err := h.mediaPage(r)
	if err != nil {
		return err
	}
	list, _, err := h.media.UserMedia(r.Context(), userID, from, limit, order)
	if err != nil {
		return err
	}
	deleted := []string{}
	for _, m := range list {
		if err := h.media.DeleteMedia(r.Context(), m.MediaID); err != nil {
			if merr.Is(err, "M_NOT_FOUND") {
				continue
			}
			return err
		}
		deleted = append(deleted, m.MediaID)
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

func (h *adminMedia) quarantineUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := h.localUser(r)
	if err != nil {
		return err
	}
	n, err := h.media.QuarantineUser(r.Context(), userID, DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]int64{"num_quarantined": n})
}

// mediaRef reads {serverName}/{mediaId}; local is false for other servers'
// media, which Haven does not keep.
func (h *adminMedia) mediaRef(r *http.Request) (mediaID string, local bool, err error) {
	server, mediaID := PathParam(r, "serverName"), PathParam(r, "mediaId")
	if !mediaapi.ValidMediaID(mediaID) || server == "" || len(server) > 255 || !ids.ValidServerName(server) {
		return "", false, merr.InvalidParam("Not a media ID: %s/%s", server, mediaID)
	}
	return mediaID, server == h.serverName, nil
}

func (h *adminMedia) setQuarantine(w http.ResponseWriter, r *http.Request, on bool) error {
	mediaID, local, err := h.mediaRef(r)
	if err != nil {
		return err
	}
	if !local {
		return httpx.OK(w) // no copy of other servers' media is kept
	}
	by := ""
	if on {
		by = DeviceFrom(r).UserID
	}
	if err := h.media.SetQuarantined(r.Context(), mediaID, by); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (h *adminMedia) quarantine(w http.ResponseWriter, r *http.Request) error {
	return h.setQuarantine(w, r, true)
}

func (h *adminMedia) unquarantine(w http.ResponseWriter, r *http.Request) error {
	return h.setQuarantine(w, r, false)
}

func (h *adminMedia) quarantineRoom(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	list, err := h.rooms.MediaInRoom(r.Context(), roomID)
	if err != nil {
		return err
	}
	n, err := h.media.QuarantineMany(r.Context(), list, DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]int64{"num_quarantined": n})
}

func (h *adminMedia) listRoomMedia(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	list, err := h.rooms.MediaInRoom(r.Context(), roomID)
	if err != nil {
		return err
	}
	local := make([]string, len(list))
	for i, id := range list {
		local[i] = "mxc://" + h.serverName + "/" + id
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"local": local, "remote": []string{}})
}

func (h *adminMedia) deleteMedia(w http.ResponseWriter, r *http.Request) error {
	mediaID, local, err := h.mediaRef(r)
	if err != nil {
		return err
	}
	if !local {
		return merr.InvalidParam("Can only delete local media")
	}
	if err := h.media.DeleteMedia(r.Context(), mediaID); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"deleted_media": []string{mediaID}, "total": 1})
}
