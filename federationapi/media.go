package federationapi

import (
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
)

// LocalMedia is the media repository as other servers see it
// (mediaapi.Service): our own media only.
type LocalMedia interface {
	Download(ctx context.Context, serverName, mediaID, fileName string, wait time.Duration) (*mediaapi.Content, error)
	Thumbnail(ctx context.Context, serverName, mediaID string, req mediaapi.ThumbnailRequest, wait time.Duration) (*mediaapi.Content, error)
}

// mediaRoutes serves our media to other servers (authenticated media,
// Matrix 1.11): GET /v1/media/download/{mediaId} and
// /v1/media/thumbnail/{mediaId}, answered as multipart/mixed: a JSON
// metadata part ({}), then the content. Without a media repository they
// answer 404 M_UNRECOGNIZED, as a server without them would.
func (a *API) mediaRoutes(r chi.Router) {
	r.Get("/v1/media/download/{mediaId}", httpx.Handle(a.mediaDownload))
	r.Get("/v1/media/thumbnail/{mediaId}", httpx.Handle(a.mediaThumbnail))
}

func (a *API) mediaDownload(w http.ResponseWriter, r *http.Request) error {
	if a.Media == nil {
		return merr.Unrecognized("Unrecognized request")
	}
	mediaID, err := pathParam(r, "mediaId")
	if err != nil {
		return err
	}
	wait, err := mediaapi.ParseTimeout(r.URL.Query())
	if err != nil {
		return err
	}
	// Only our own media, and never fetched from a third server on the
	// asking server's behalf.
	c, err := a.Media.Download(mediaapi.LocalOnly(r.Context()), a.ServerName, mediaID, "", wait)
	if err != nil {
		return err
	}
	defer c.Close()
	writeMultipartMedia(w, r, c)
	return nil
}

func (a *API) mediaThumbnail(w http.ResponseWriter, r *http.Request) error {
	if a.Media == nil {
		return merr.Unrecognized("Unrecognized request")
	}
	mediaID, err := pathParam(r, "mediaId")
	if err != nil {
		return err
	}
	req, err := mediaapi.ParseThumbnailQuery(r.URL.Query())
	if err != nil {
		return err
	}
	wait, err := mediaapi.ParseTimeout(r.URL.Query())
	if err != nil {
		return err
	}
	c, err := a.Media.Thumbnail(mediaapi.LocalOnly(r.Context()), a.ServerName, mediaID, req, wait)
	if err != nil {
		return err
	}
	defer c.Close()
	writeMultipartMedia(w, r, c)
	return nil
}

// writeMultipartMedia sends content as the spec's multipart/mixed answer:
// the metadata part (an empty JSON object: the spec defines no fields yet),
// then the bytes with their Content-Type and Content-Disposition. A copy
// that fails half-way leaves the closing boundary out, so the other server
// sees a broken answer rather than a short file.
func writeMultipartMedia(w http.ResponseWriter, r *http.Request, c *mediaapi.Content) {
	mw := multipart.NewWriter(w)
	h := w.Header()
	h.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	h.Set("X-Content-Type-Options", "nosniff")
	// A large file to a slow server takes longer than the listener's write
	// timeout: allow for 32 KiB/s on top of it.
	if c.Size > 4<<20 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(2*time.Minute + time.Duration(c.Size>>15)*time.Second))
	}
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, err = meta.Write([]byte("{}"))
	}
	if err != nil {
		return // the connection is gone
	}
	ph := textproto.MIMEHeader{}
	ph.Set("Content-Type", c.ContentType)
	ph.Set("Content-Disposition", c.Disposition)
	part, err := mw.CreatePart(ph)
	if err == nil {
		_, err = io.Copy(part, c.Body)
	}
	if err != nil {
		logging.From(r.Context()).WithError(err).Debug("federation media: answer broken off")
		return
	}
	_ = mw.Close()
}
