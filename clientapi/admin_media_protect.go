package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
)

// mediaProtector protects media and deletes old media (mediaapi).
type mediaProtector interface {
	SetProtected(ctx context.Context, mediaID string, on bool) error
	DeleteOldMedia(ctx context.Context, o mediaapi.OldMedia) ([]string, error)
}

// avatarSource lists this server's media IDs in use as avatars (userapi
// for users, the roomserver for rooms).
type avatarSource interface {
	AvatarMedia(ctx context.Context) ([]string, error)
}

// AdminMediaCareArea adds media protection and the date-based clean-up to
// the admin API: POST /v1/media/protect/{mediaId} and unprotect (protected
// media is never quarantined nor cleaned up), and POST /v1/media/delete
// (also /v1/media/{serverName}/delete) with before_ts, size_gt and
// keep_profiles, as Synapse.
func (a *API) AdminMediaCareArea(media mediaProtector, avatars ...avatarSource) func() []Route {
	h := &adminMediaCare{media: media, avatars: avatars, serverName: a.Cfg.ServerName}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: synapseAdmin + "/v1/media/protect/{mediaId}", H: h.protect(true), Auth: authAdmin, AuditOp: "media.protect"},
			{Method: "POST", Path: synapseAdmin + "/v1/media/unprotect/{mediaId}", H: h.protect(false), Auth: authAdmin, AuditOp: "media.unprotect"},
			{Method: "POST", Path: synapseAdmin + "/v1/media/delete", H: h.deleteOld, Auth: authAdmin, AuditOp: "media.delete_old"},
			{Method: "POST", Path: synapseAdmin + "/v1/media/{serverName}/delete", H: h.deleteOld, Auth: authAdmin, AuditOp: "media.delete_old"},
		}
	}
}

type adminMediaCare struct {
	media      mediaProtector
	avatars    []avatarSource
	serverName string
}

func (h *adminMediaCare) protect(on bool) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := PathParam(r, "mediaId")
		if !mediaapi.ValidMediaID(id) {
			return merr.InvalidParam("Not a media ID: %s", id)
		}
		if err := h.media.SetProtected(r.Context(), id, on); err != nil {
			return err
		}
		return httpx.OK(w)
	}
}

// minBeforeTS is the smallest before_ts taken: anything smaller is a time
// in seconds given by mistake (it would be in January 1970 in ms).
const minBeforeTS = 30_000_000_000

func (h *adminMediaCare) deleteOld(w http.ResponseWriter, r *http.Request) error {
	if server := PathParam(r, "serverName"); server != "" && server != h.serverName {
		return merr.InvalidParam("Can only delete local media")
	}
	q := r.URL.Query()
	if q.Get("before_ts") == "" {
		return merr.MissingParam("Missing integer query parameter before_ts")
	}
	before, err := strconv.ParseInt(q.Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return merr.InvalidParam("before_ts must be a time in Unix milliseconds")
	}
	if before < minBeforeTS {
		return merr.InvalidParam("before_ts %d is in 1970: give the time in milliseconds", before)
	}
	var sizeGT int64
	if v := q.Get("size_gt"); v != "" {
		if sizeGT, err = strconv.ParseInt(v, 10, 64); err != nil || sizeGT < 0 {
			return merr.InvalidParam("size_gt must be a number of bytes, 0 or more")
		}
	}
	keepProfiles, err := queryBool(r, "keep_profiles")
	if err != nil {
		return err
	}
	o := mediaapi.OldMedia{BeforeTS: before, SizeGT: sizeGT, Keep: map[string]bool{}}
	if keepProfiles == nil || *keepProfiles {
		for _, src := range h.avatars {
			ids, err := src.AvatarMedia(r.Context())
			if err != nil {
				return err
			}
			for _, id := range ids {
				o.Keep[id] = true
			}
		}
	}
	deleted, err := h.media.DeleteOldMedia(r.Context(), o)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}
