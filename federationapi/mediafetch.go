package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/federationapi/client"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/mediaapi"
)

// MediaFetcher fetches other servers' media for the media repository
// (mediaapi.RemoteFetcher): the signed GET /_matrix/federation/v1/media/
// download/{mediaId}, whose multipart/mixed answer it takes apart, and for
// servers without it (older than Matrix 1.11) the unauthenticated
// /_matrix/media/v3/download/{server}/{mediaId}?allow_remote=false on
// their federation port, as servers did before. Both go through the
// federation transport: the allowlist, discovery, the private-address
// guard and the configured TLS.
type MediaFetcher struct {
	http       *http.Client
	serverName spec.ServerName
	key        serverkey.Key
}

// NewMediaFetcher makes the media fetcher over rt, the federation
// transport (client.Client.RoundTripper).
func NewMediaFetcher(rt http.RoundTripper, serverName string, key serverkey.Key) *MediaFetcher {
	return &MediaFetcher{
		// Redirects are not followed here: a Location is handed to the
		// media repository, which fetches it with its guarded client.
		http: &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		serverName: spec.ServerName(serverName),
		key:        key,
	}
}

var _ mediaapi.RemoteFetcher = (*MediaFetcher)(nil)

// answerSlack is how long past the wait for a pending upload another
// server may take to start answering (connection, TLS, its own work).
const answerSlack = 30 * time.Second

// maxMetadataBytes bounds the JSON metadata part of a media answer.
const maxMetadataBytes = 64 << 10

// FetchMedia asks server for its media mediaID, waiting up to wait for an
// upload still pending there. The answer's body must be closed.
func (f *MediaFetcher) FetchMedia(ctx context.Context, server, mediaID string, wait time.Duration) (*mediaapi.RemoteMedia, error) {
	if !mediaapi.ValidMediaID(mediaID) {
		return nil, merr.NotFound("Media not found")
	}
	q := "?timeout_ms=" + strconv.FormatInt(wait.Milliseconds(), 10)
	rm, err := f.get(ctx, server, wait, true, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID)+q)
	if errors.Is(err, errNoEndpoint) {
		rm, err = f.get(ctx, server, wait, false,
			"/_matrix/media/v3/download/"+url.PathEscape(server)+"/"+url.PathEscape(mediaID)+q+"&allow_remote=false")
		if errors.Is(err, errNoEndpoint) {
			return nil, merr.BadGateway("%s does not serve media to other servers", server)
		}
	}
	return rm, err
}

// errNoEndpoint is an answer that says the endpoint is unknown there.
var errNoEndpoint = errors.New("endpoint not known to the other server")

// get makes one request and reads its answer: multipart (the federation
// endpoint) or the content itself (the legacy one).
func (f *MediaFetcher) get(ctx context.Context, server string, wait time.Duration, signed bool, uri string) (*mediaapi.RemoteMedia, error) {
	var req *http.Request
	if signed {
		fr := fclient.NewFederationRequest(http.MethodGet, f.serverName, spec.ServerName(server), uri)
		if err := fr.Sign(f.serverName, f.key.ID, f.key.Private); err != nil {
			return nil, fmt.Errorf("sign media request: %w", err)
		}
		var err error
		if req, err = fr.HTTPRequest(); err != nil {
			return nil, merr.NotFound("Media not found").Wrap(err)
		}
	} else {
		var err error
		if req, err = http.NewRequest(http.MethodGet, "matrix://"+server+uri, nil); err != nil {
			return nil, merr.NotFound("Media not found").Wrap(err)
		}
	}
	req.Header.Set("User-Agent", "Haven")
	// The other server must start answering within the wait it was given
	// (plus some slack); the transfer itself is bounded by ctx.
	actx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(max(wait, 0)+answerSlack, cancel)
	resp, err := f.http.Do(req.WithContext(actx))
	late := !timer.Stop()
	if err != nil {
		cancel()
		if late {
			return nil, merr.UpstreamTimeout("%s did not answer in time", server)
		}
		return nil, fetchError(ctx, server, err)
	}
	body := &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	switch {
	case resp.StatusCode == http.StatusOK && signed:
		rm, err := readMultipartMedia(resp, body)
		if err != nil {
			body.Close()
			return nil, merr.BadGateway("%s answered an unusable media answer: %v", server, err)
		}
		return rm, nil
	case resp.StatusCode == http.StatusOK:
		return &mediaapi.RemoteMedia{ContentType: resp.Header.Get("Content-Type"),
			Filename: dispositionName(resp.Header.Get("Content-Disposition")), Size: resp.ContentLength, Body: body}, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "":
		body.Close()
		return &mediaapi.RemoteMedia{Location: resp.Header.Get("Location")}, nil
	}
	defer body.Close()
	raw, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var e struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	return nil, statusError(server, resp.StatusCode, e.Errcode, e.Error)
}

// statusError maps another server's error answer to ours.
func statusError(server string, status int, errcode, msg string) error {
	switch {
	case errcode == "M_UNRECOGNIZED" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusBadRequest),
		errcode == "" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented):
		return errNoEndpoint
	case status == http.StatusNotFound:
		return merr.NotFound("Media not found on %s", server)
	case errcode == "M_NOT_YET_UPLOADED":
		return merr.NotYetUploaded("The content has not yet been uploaded to %s", server)
	case errcode == "M_TOO_LARGE":
		return merr.Custom(http.StatusBadGateway, "M_TOO_LARGE", "%s: the content is too large", server).FromUpstream()
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return merr.BadGateway("%s answered %d %s %s", server, status, errcode, msg)
}

// fetchError maps a request that got no answer.
func fetchError(ctx context.Context, server string, err error) error {
	switch {
	case errors.Is(err, client.ErrNotAllowed) || errors.Is(err, client.ErrPrivateAddress):
		return merr.Forbidden("Federation with %s is not allowed on this server", server)
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return merr.UpstreamTimeout("%s did not answer in time", server)
	}
	return merr.BadGateway("Could not reach %s", server).Wrap(err)
}

// readMultipartMedia takes apart the answer of the federation media
// endpoints: a JSON object, then the content (or a Location header).
func readMultipartMedia(resp *http.Response, body io.ReadCloser) (*mediaapi.RemoteMedia, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("content type %q is not multipart/mixed", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(body, params["boundary"])
	meta, err := mr.NextRawPart()
	if err != nil {
		return nil, fmt.Errorf("metadata part: %w", err)
	}
	if ct, _, _ := mime.ParseMediaType(meta.Header.Get("Content-Type")); ct != "application/json" {
		return nil, fmt.Errorf("metadata part of type %q", meta.Header.Get("Content-Type"))
	}
	js, err := io.ReadAll(io.LimitReader(meta, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("metadata part: %w", err)
	}
	var obj map[string]json.RawMessage
	if len(js) > maxMetadataBytes || json.Unmarshal(js, &obj) != nil || obj == nil {
		return nil, errors.New("metadata part is not a JSON object")
	}
	content, err := mr.NextRawPart()
	if err != nil {
		return nil, fmt.Errorf("content part: %w", err)
	}
	if loc := content.Header.Get("Location"); loc != "" {
		body.Close()
		return &mediaapi.RemoteMedia{Location: loc}, nil
	}
	size := int64(-1)
	if v := content.Header.Get("Content-Length"); v != "" {
		if size, err = strconv.ParseInt(v, 10, 64); err != nil || size < 0 {
			return nil, fmt.Errorf("content part length %q", v)
		}
	}
	return &mediaapi.RemoteMedia{
		ContentType: content.Header.Get("Content-Type"),
		Filename:    dispositionName(content.Header.Get("Content-Disposition")),
		Size:        size,
		Body:        partBody{Reader: content, closer: body},
	}, nil
}

// dispositionName is the file name of a Content-Disposition header
// (filename*= decoded), "" when it has none.
func dispositionName(cd string) string {
	if cd == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(params["filename"])
}

// partBody reads the content part and closes the whole answer.
type partBody struct {
	io.Reader
	closer io.Closer
}

func (p partBody) Close() error { return p.closer.Close() }

// cancelBody ends the request's context when the answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
