package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
)

// mediaService is the media repository (mediaapi.Service).
type mediaService interface {
	UploadNew(ctx context.Context, userID string, up mediaapi.Upload) (string, error)
	Create(ctx context.Context, userID string) (string, int64, error)
	UploadTo(ctx context.Context, userID, serverName, mediaID string, up mediaapi.Upload) error
	Download(ctx context.Context, serverName, mediaID, fileName string, wait time.Duration) (*mediaapi.Content, error)
	Thumbnail(ctx context.Context, serverName, mediaID string, req mediaapi.ThumbnailRequest, wait time.Duration) (*mediaapi.Content, error)
	MaxUploadBytes() int64
	Preview(ctx context.Context, userID, rawURL string) (map[string]any, error)
	PurgeRemoteCache(ctx context.Context, before time.Time) (int, error)
}

// uploadReadTimeout is how long an upload body may take to arrive (the
// server's read timeout, one minute, is too short for large files).
const uploadReadTimeout = 15 * time.Minute

// MediaArea is the route area of the media repository: uploads, the
// authenticated downloads and thumbnails of /_matrix/client/v1/media, and
// the legacy /_matrix/media/v3 ones (unauthenticated unless
// media.legacy_unauthenticated is false, when they answer 404 M_NOT_FOUND
// as a server that froze them would).
func (a *API) MediaArea(svc mediaService) func() []Route {
	h := &mediaHandlers{svc: svc, legacy: a.Cfg.Media.LegacyUnauthenticated}
	return func() []Route {
		const (
			media  = "/_matrix/media"
			client = "/_matrix/client/v1/media"
		)
		return []Route{
			{Method: "POST", Path: media + "/v3/upload", H: h.upload, Auth: authUser, OwnBody: true},
			// Creating IDs counts against the user's message rate (the spec
			// asks for a rate limit as well as the pending-upload cap).
			{Method: "POST", Path: media + "/v1/create", H: h.create, Auth: authUser, Limit: limitMessage},
			{Method: "PUT", Path: media + "/v3/upload/{serverName}/{mediaId}", H: h.uploadTo, Auth: authUser, OwnBody: true},

			{Method: "GET", Path: client + "/config", H: h.config, Auth: authUser},
			{Method: "GET", Path: client + "/download/{serverName}/{mediaId}", H: h.download, Auth: authUser},
			{Method: "GET", Path: client + "/download/{serverName}/{mediaId}/{fileName}", H: h.download, Auth: authUser},
			{Method: "GET", Path: client + "/thumbnail/{serverName}/{mediaId}", H: h.thumbnail, Auth: authUser},
			{Method: "GET", Path: client + "/preview_url", H: h.preview, Auth: authUser},

			{Method: "GET", Path: media + "/v3/config", H: h.config, Auth: authUser},
			{Method: "GET", Path: media + "/v3/download/{serverName}/{mediaId}", H: h.legacyOnly(h.download), Auth: authNone},
			{Method: "GET", Path: media + "/v3/download/{serverName}/{mediaId}/{fileName}", H: h.legacyOnly(h.download), Auth: authNone},
			{Method: "GET", Path: media + "/v3/thumbnail/{serverName}/{mediaId}", H: h.legacyOnly(h.thumbnail), Auth: authNone},
			{Method: "GET", Path: media + "/v3/preview_url", H: h.preview, Auth: authUser},

			{Method: "POST", Path: "/_synapse/admin/v1/purge_media_cache", H: h.purgeCache, Auth: authAdmin},
		}
	}
}

type mediaHandlers struct {
	svc    mediaService
	legacy bool
}

func (h *mediaHandlers) legacyOnly(next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !h.legacy {
			return merr.NotFound("Unauthenticated media is not served; use /_matrix/client/v1/media")
		}
		return next(w, r)
	}
}

// readUpload takes what an upload carries from the request.
func readUpload(w http.ResponseWriter, r *http.Request) mediaapi.Upload {
	// The body may take longer than the server's read timeout allows.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	return mediaapi.Upload{
		Body:          body,
		ContentLength: r.ContentLength,
		ContentType:   r.Header.Get("Content-Type"),
		Filename:      r.URL.Query().Get("filename"),
	}
}

func (h *mediaHandlers) upload(w http.ResponseWriter, r *http.Request) error {
	uri, err := h.svc.UploadNew(r.Context(), DeviceFrom(r).UserID, readUpload(w, r))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"content_uri": uri})
}

func (h *mediaHandlers) create(w http.ResponseWriter, r *http.Request) error {
	uri, expires, err := h.svc.Create(r.Context(), DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"content_uri": uri, "unused_expires_at": expires})
}

func (h *mediaHandlers) uploadTo(w http.ResponseWriter, r *http.Request) error {
	err := h.svc.UploadTo(r.Context(), DeviceFrom(r).UserID, PathParam(r, "serverName"), PathParam(r, "mediaId"), readUpload(w, r))
	if err != nil {
		return err
	}
	return httpx.OK(w)
}

func (h *mediaHandlers) config(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]int64{"m.upload.size": h.svc.MaxUploadBytes()})
}

// preview answers /preview_url (404 M_UNRECOGNIZED when media.url_previews
// is off). ts, the point in time asked for, is not used: the newest preview
// is answered, which the spec allows.
func (h *mediaHandlers) preview(w http.ResponseWriter, r *http.Request) error {
	og, err := h.svc.Preview(r.Context(), DeviceFrom(r).UserID, r.URL.Query().Get("url"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, og)
}

// purgeCache is the admin API's POST /_synapse/admin/v1/purge_media_cache
// ?before_ts=<ms>: other servers' media not downloaded since then is
// dropped from the cache (and fetched again when asked for).
func (h *mediaHandlers) purgeCache(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query().Get("before_ts")
	if v == "" {
		return merr.MissingParam("Missing before_ts")
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ts < 0 {
		return merr.InvalidParam("before_ts must be a timestamp in milliseconds")
	}
	// A timestamp in seconds would purge everything older than 1971.
	if ts < 30_000_000_000 {
		return merr.InvalidParam("before_ts is from 1970: it must be in milliseconds, not seconds")
	}
	n, err := h.svc.PurgeRemoteCache(r.Context(), time.UnixMilli(ts))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]int{"deleted": n})
}

// timeoutMS reads timeout_ms (default 20 s, as the spec says).
func timeoutMS(r *http.Request) (time.Duration, error) { return mediaapi.ParseTimeout(r.URL.Query()) }

// allowRemote applies allow_remote=false of the legacy endpoints: media of
// other servers only from the cache, never fetched.
func allowRemote(r *http.Request) (context.Context, error) {
	switch strings.ToLower(r.URL.Query().Get("allow_remote")) {
	case "", "true":
		return r.Context(), nil
	case "false":
		return mediaapi.LocalOnly(r.Context()), nil
	}
	return nil, merr.InvalidParam("allow_remote must be true or false")
}

func (h *mediaHandlers) download(w http.ResponseWriter, r *http.Request) error {
	wait, err := timeoutMS(r)
	if err != nil {
		return err
	}
	ctx, err := allowRemote(r)
	if err != nil {
		return err
	}
	c, err := h.svc.Download(ctx, PathParam(r, "serverName"), PathParam(r, "mediaId"), PathParam(r, "fileName"), wait)
	if err != nil {
		return err
	}
	defer c.Close()
	serveContent(w, r, c)
	return nil
}

// thumbnailParams parses width, height, method and animated.
func thumbnailParams(r *http.Request) (mediaapi.ThumbnailRequest, error) {
	return mediaapi.ParseThumbnailQuery(r.URL.Query())
}

func (h *mediaHandlers) thumbnail(w http.ResponseWriter, r *http.Request) error {
	req, err := thumbnailParams(r)
	if err != nil {
		return err
	}
	wait, err := timeoutMS(r)
	if err != nil {
		return err
	}
	ctx, err := allowRemote(r)
	if err != nil {
		return err
	}
	c, err := h.svc.Thumbnail(ctx, PathParam(r, "serverName"), PathParam(r, "mediaId"), req, wait)
	if err != nil {
		return err
	}
	defer c.Close()
	serveContent(w, r, c)
	return nil
}

// serveContent sends a file with the media repository's safety headers;
// Range and conditional requests are answered by http.ServeContent.
func serveContent(w http.ResponseWriter, r *http.Request, c *mediaapi.Content) {
	hd := w.Header()
	hd.Set("Content-Type", c.ContentType)
	hd.Set("Content-Disposition", c.Disposition)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", mediaapi.ContentSecurityPolicy)
	hd.Set("Cross-Origin-Resource-Policy", "cross-origin")
	// Content never changes under its ID; only the user's own cache may keep it.
	hd.Set("Cache-Control", "private, max-age=31536000, immutable")
	if c.SHA256 != "" {
		hd.Set("ETag", `"`+c.SHA256+`"`)
	}
	// A large file to a slow client takes longer than the server's write
	// timeout (5 minutes): allow for 32 KiB/s on top of it.
	if c.Size > 8<<20 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(5*time.Minute + time.Duration(c.Size>>15)*time.Second))
	}
	http.ServeContent(w, r, "", c.Modified, c.Body)
}
