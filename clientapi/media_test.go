package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

// tokenAuth accepts any token "name" as @name:test.local.
type tokenAuth struct{}

func (tokenAuth) Authenticate(ctx context.Context, token string) (userapi.Device, error) {
	if token == "" || strings.ContainsAny(token, ":@") {
		return userapi.Device{}, merr.UnknownToken(false, "Unknown token")
	}
	return userapi.Device{UserID: "@" + token + ":test.local", DeviceID: "DEV", IsAdmin: token == "admin"}, nil
}

func mediaServer(t *testing.T) string {
	t.Helper()
	db := storagetest.Open(t, storage.SQLite)
	cfg := config.Default()
	cfg.ServerName = "test.local"
	cfg.MaxRequestBytes = 64 << 10
	cfg.Media.MaxUploadBytes = 200 << 10
	svc, err := mediaapi.New(context.Background(), db, mediaapi.Options{
		ServerName: cfg.ServerName, Dir: filepath.Join(t.TempDir(), "media"), MaxUploadBytes: cfg.Media.MaxUploadBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	api := &API{Cfg: cfg, Log: log, Auth: tokenAuth{}}
	echo := func() []Route {
		return []Route{{Method: "POST", Path: "/test/echo", Auth: authUser, H: func(w http.ResponseWriter, r *http.Request) error {
			b, err := httpx.ReadBody(r, 1<<20)
			if err != nil {
				return err
			}
			return httpx.JSON(w, http.StatusOK, map[string]int{"len": len(b)})
		}}}
	}
	api.Areas = []func() []Route{api.MediaArea(svc), echo}
	srv := httptest.NewServer(api.Router())
	t.Cleanup(srv.Close)
	return srv.URL
}

func mediaDo(t *testing.T, method, u, token string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func errcode(b []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Errcode
}

// TestMediaBodyLimit: uploads may pass max_request_bytes up to the media
// limit; every other route keeps max_request_bytes.
func TestMediaBodyLimit(t *testing.T) {
	base := mediaServer(t)
	body := bytes.Repeat([]byte("m"), 100<<10) // over 64 KiB, under 200 KiB
	res, b := mediaDo(t, "POST", base+"/_matrix/media/v3/upload?filename=m.txt", "alice", body, "Content-Type", "text/plain")
	if res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, b)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(b, &up); err != nil || !strings.HasPrefix(up.ContentURI, "mxc://test.local/") {
		t.Fatalf("upload answer %s", b)
	}
	res, b = mediaDo(t, "POST", base+"/test/echo", "alice", body)
	if res.StatusCode != 413 || errcode(b) != "M_TOO_LARGE" {
		t.Fatalf("other route with a large body: %d %s", res.StatusCode, b)
	}
	res, b = mediaDo(t, "POST", base+"/_matrix/media/v3/upload", "alice", bytes.Repeat([]byte("m"), 201<<10))
	if res.StatusCode != 413 || errcode(b) != "M_TOO_LARGE" {
		t.Fatalf("upload over the media limit: %d %s", res.StatusCode, b)
	}

	id := strings.TrimPrefix(up.ContentURI, "mxc://test.local/")
	res, b = mediaDo(t, "GET", base+"/_matrix/client/v1/media/download/test.local/"+id, "bob", nil)
	if res.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Fatalf("download: %d, %d bytes", res.StatusCode, len(b))
	}
	for k, want := range map[string]string{
		"Content-Type":                 "text/plain",
		"Content-Disposition":          `inline; filename="m.txt"`,
		"X-Content-Type-Options":       "nosniff",
		"Content-Security-Policy":      mediaapi.ContentSecurityPolicy,
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Access-Control-Allow-Origin":  "*",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Conditional request: the ETag is the content hash.
	res, _ = mediaDo(t, "GET", base+"/_matrix/client/v1/media/download/test.local/"+id, "bob", nil, "If-None-Match", res.Header.Get("ETag"))
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", res.StatusCode)
	}
	res, b = mediaDo(t, "GET", base+"/_matrix/client/v1/media/download/test.local/"+id+"?timeout_ms=soon", "bob", nil)
	if res.StatusCode != 400 || errcode(b) != "M_INVALID_PARAM" {
		t.Errorf("bad timeout_ms: %d %s", res.StatusCode, b)
	}
	res, b = mediaDo(t, "POST", base+"/_matrix/media/v1/create", "", nil)
	if res.StatusCode != 401 || errcode(b) != "M_MISSING_TOKEN" {
		t.Errorf("create without a token: %d %s", res.StatusCode, b)
	}
}

func TestThumbnailParams(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  mediaapi.ThumbnailRequest
		code  string
	}{
		{"width=32&height=32&method=crop", mediaapi.ThumbnailRequest{Width: 32, Height: 32, Method: mediaapi.Crop}, ""},
		{"width=800&height=600", mediaapi.ThumbnailRequest{Width: 800, Height: 600, Method: mediaapi.Scale}, ""},
		{"width=96&height=96&method=scale&animated=true", mediaapi.ThumbnailRequest{Width: 96, Height: 96, Method: mediaapi.Scale, Animated: true}, ""},
		{"width=96&height=96&animated=false", mediaapi.ThumbnailRequest{Width: 96, Height: 96, Method: mediaapi.Scale}, ""},
		{"height=32", mediaapi.ThumbnailRequest{}, "M_MISSING_PARAM"},
		{"width=32", mediaapi.ThumbnailRequest{}, "M_MISSING_PARAM"},
		{"width=0&height=32", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=-5&height=32", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=3.5&height=32", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=99999999999&height=32", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=32&height=32&method=zoom", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=32&height=32&animated=maybe", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
	} {
		r := httptest.NewRequest("GET", "/x?"+tc.query, nil)
		got, err := thumbnailParams(r)
		if tc.code != "" {
			if !merr.Is(err, tc.code) {
				t.Errorf("%s: %v, want %s", tc.query, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.query, got, err, tc.want)
		}
	}
}

// TestPurgeMediaCache: the admin API's purge_media_cache, for admins only,
// with before_ts in milliseconds.
func TestPurgeMediaCache(t *testing.T) {
	base := mediaServer(t)
	const path = "/_synapse/admin/v1/purge_media_cache"
	for _, tc := range []struct {
		token, query string
		status       int
		want         string
	}{
		{"alice", "?before_ts=1700000000000", 403, "M_FORBIDDEN"},
		{"admin", "", 400, "M_MISSING_PARAM"},
		{"admin", "?before_ts=soon", 400, "M_INVALID_PARAM"},
		{"admin", "?before_ts=1700000000", 400, "M_INVALID_PARAM"},
		{"admin", "?before_ts=1700000000000", 200, `{"deleted":0}`},
	} {
		resp, body := mediaDo(t, "POST", base+path+tc.query, tc.token, nil)
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Fatalf("%s %s: %d %s", tc.token, tc.query, resp.StatusCode, body)
		}
	}
}
