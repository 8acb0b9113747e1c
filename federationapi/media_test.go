package federationapi

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func newMedia(t *testing.T, db *storage.DB) *mediaapi.Service {
	t.Helper()
	svc, err := mediaapi.New(context.Background(), db, mediaapi.Options{ServerName: localName, Dir: filepath.Join(t.TempDir(), "media")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func pngImage(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func uploadTo(t *testing.T, svc *mediaapi.Service, data []byte, contentType, name string) string {
	t.Helper()
	mxc, err := svc.UploadNew(context.Background(), alice, mediaapi.Upload{Body: bytes.NewReader(data),
		ContentLength: int64(len(data)), ContentType: contentType, Filename: name})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(mxc, "mxc://"+localName+"/")
}

// parts splits a multipart/mixed answer into its parts' headers and bodies.
func parts(t *testing.T, contentType string, body []byte) ([]map[string]string, [][]byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q", contentType)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var hs []map[string]string
	var bs [][]byte
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		h := map[string]string{}
		for k := range p.Header {
			h[k] = p.Header.Get(k)
		}
		hs, bs = append(hs, h), append(bs, b)
	}
	return hs, bs
}

// TestFederationMediaServe: other servers download our media and its
// thumbnails as the spec's multipart answer; bad input and unknown media
// are Matrix errors.
func TestFederationMediaServe(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		// Before a media repository is there, the endpoints are unknown.
		wantErr(t, e.do("GET", "/_matrix/federation/v1/media/download/abc", remoteName, nil), 404, "M_UNRECOGNIZED")
		svc := newMedia(t, db)
		e.api.Media = svc
		doc := uploadTo(t, svc, []byte("Quarterly figures\n"), "text/plain", "figures.txt")
		img := uploadTo(t, svc, pngImage(t, 300, 200), "image/png", "chart.png")

		req, _ := http.NewRequest("GET", e.url+"/_matrix/federation/v1/media/download/"+doc, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("download: %d %s", resp.StatusCode, body)
		}
		_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		got := strings.ReplaceAll(string(body), params["boundary"], "BOUNDARY")
		got = "Content-Type: " + strings.ReplaceAll(resp.Header.Get("Content-Type"), params["boundary"], "BOUNDARY") + "\n\n" + got
		golden := filepath.Join("testdata", "media_download.golden")
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Fatalf("download answer:\n%q\nwant:\n%q", got, want)
		}

		req, _ = http.NewRequest("GET", e.url+"/_matrix/federation/v1/media/thumbnail/"+img+"?width=32&height=32&method=crop&animated=false&timeout_ms=1000", nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("thumbnail: %d %s", resp.StatusCode, body)
		}
		hs, bs := parts(t, resp.Header.Get("Content-Type"), body)
		if len(hs) != 2 || hs[0]["Content-Type"] != "application/json" || string(bs[0]) != "{}" || hs[1]["Content-Type"] != "image/jpeg" {
			t.Fatalf("thumbnail parts %v", hs)
		}
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(bs[1])); err != nil || cfg.Width != 32 || cfg.Height != 32 {
			t.Fatalf("thumbnail %+v %v", cfg, err)
		}

		for _, tc := range []struct {
			path   string
			status int
			code   string
		}{
			{"/download/unknownMedia", 404, "M_NOT_FOUND"},
			{"/download/bad%20id", 404, "M_NOT_FOUND"},
			{"/download/" + doc + "?timeout_ms=-5", 400, "M_INVALID_PARAM"},
			{"/thumbnail/unknownMedia?width=32&height=32", 404, "M_NOT_FOUND"},
			{"/thumbnail/" + img, 400, "M_MISSING_PARAM"},
			{"/thumbnail/" + img + "?width=32", 400, "M_MISSING_PARAM"},
			{"/thumbnail/" + img + "?width=abc&height=32", 400, "M_INVALID_PARAM"},
			{"/thumbnail/" + img + "?width=32&height=32&method=zoom", 400, "M_INVALID_PARAM"},
			{"/thumbnail/" + img + "?width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"},
			// Not an image: the spec's "cannot generate a thumbnail".
			{"/thumbnail/" + doc + "?width=32&height=32", 400, "M_UNKNOWN"},
		} {
			r := e.do("GET", "/_matrix/federation/v1/media"+tc.path, remoteName, nil)
			wantErr(t, r, tc.status, tc.code)
		}
		// Signed requests only: unsigned is refused, a signed one passes.
		wantErr(t, e.roundTrip(mustReq(t, e.authURL+"/_matrix/federation/v1/media/download/"+doc)), 401, "M_UNAUTHORIZED")
		r := e.doSigned("GET", "/_matrix/federation/v1/media/download/"+doc, remoteName, e.remote, nil)
		wantOK(t, r)
	})
}

func mustReq(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// toServer sends matrix:// requests to a test server over plain HTTP.
type toServer struct{ base *url.URL }

func (s toServer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host = s.base.Scheme, s.base.Host
	return http.DefaultTransport.RoundTrip(r)
}

func fetcherTo(t *testing.T, base string, e *env) *MediaFetcher {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return NewMediaFetcher(toServer{u}, remoteName, e.remote)
}

func readRemote(t *testing.T, rm *mediaapi.RemoteMedia) []byte {
	t.Helper()
	defer rm.Body.Close()
	b, err := io.ReadAll(rm.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantMerr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	me, ok := merr.As(err)
	if !ok || me.Status != status || me.Code != code {
		t.Fatalf("%s: %v, want %d %s", what, err, status, code)
	}
}

// TestMediaFetcher: the fetcher's signed request passes our own
// authentication and its multipart answer is taken apart; older servers
// are asked on the legacy endpoint; broken answers are errors.
func TestMediaFetcher(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		svc := newMedia(t, db)
		e.api.Media = svc
		data := []byte("résumé contents")
		id := uploadTo(t, svc, data, "application/pdf", "résumé.pdf")

		// Against our own endpoint, signed by the remote server.
		f := fetcherTo(t, e.authURL, e)
		rm, err := f.FetchMedia(ctx, localName, id, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := readRemote(t, rm); !bytes.Equal(got, data) || rm.ContentType != "application/pdf" || rm.Filename != "résumé.pdf" {
			t.Fatalf("fetched %q %s %q", got, rm.ContentType, rm.Filename)
		}
		_, err = f.FetchMedia(ctx, localName, "unknownMedia", 0)
		wantMerr(t, "unknown", err, 404, "M_NOT_FOUND")

		// A fake server for the other answers.
		var legacyQuery url.Values
		mux := http.NewServeMux()
		mux.HandleFunc("/_matrix/federation/v1/media/download/", func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
				http.Error(w, "unsigned", 401)
				return
			}
			id := strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/media/download/")
			switch id {
			case "old":
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(404)
				_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
			case "pending":
				w.WriteHeader(504)
				_, _ = w.Write([]byte(`{"errcode":"M_NOT_YET_UPLOADED","error":"not yet"}`))
			case "refused":
				w.WriteHeader(403)
				_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
			case "location":
				w.Header().Set("Content-Type", "multipart/mixed; boundary=XyZ")
				_, _ = io.WriteString(w, "--XyZ\r\nContent-Type: application/json\r\n\r\n{}\r\n--XyZ\r\nLocation: https://cdn.example.org/ab/c\r\n\r\n\r\n--XyZ--\r\n")
			case "notjson":
				w.Header().Set("Content-Type", "multipart/mixed; boundary=XyZ")
				_, _ = io.WriteString(w, "--XyZ\r\nContent-Type: application/json\r\n\r\n[1]\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XyZ--\r\n")
			case "plain":
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "not multipart")
			case "cut":
				w.Header().Set("Content-Type", "multipart/mixed; boundary=XyZ")
				_, _ = io.WriteString(w, "--XyZ\r\nContent-Type: application/json\r\n\r\n{}\r\n--XyZ\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename*=utf-8''na%C3%AFve.txt\r\n\r\nthe first half of")
			default:
				w.WriteHeader(404)
				_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"not here"}`))
			case "onepart":
				w.Header().Set("Content-Type", "multipart/mixed; boundary=XyZ")
				_, _ = io.WriteString(w, "--XyZ\r\nContent-Type: application/json\r\n\r\n{}\r\n--XyZ--\r\n")
			}
		})
		mux.HandleFunc("/_matrix/media/v3/download/", func(w http.ResponseWriter, r *http.Request) {
			legacyQuery = r.URL.Query()
			if r.URL.Path != "/_matrix/media/v3/download/"+localName+"/old" {
				w.WriteHeader(404)
				_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"not here"}`))
				return
			}
			w.Header().Set("Content-Type", "image/gif")
			w.Header().Set("Content-Disposition", `inline; filename="old.gif"`)
			_, _ = w.Write([]byte("GIF89a..."))
		})
		fake := httptest.NewServer(mux)
		t.Cleanup(fake.Close)
		f = fetcherTo(t, fake.URL, e)

		rm, err = f.FetchMedia(ctx, localName, "old", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := readRemote(t, rm); string(got) != "GIF89a..." || rm.ContentType != "image/gif" || rm.Filename != "old.gif" {
			t.Fatalf("legacy: %q %s %q", got, rm.ContentType, rm.Filename)
		}
		if legacyQuery.Get("allow_remote") != "false" || legacyQuery.Get("timeout_ms") != "2000" {
			t.Fatalf("legacy query %v", legacyQuery)
		}
		rm, err = f.FetchMedia(ctx, localName, "location", 0)
		if err != nil || rm.Body != nil || rm.Location != "https://cdn.example.org/ab/c" {
			t.Fatalf("location: %+v %v", rm, err)
		}
		rm, err = f.FetchMedia(ctx, localName, "cut", 0)
		if err != nil {
			t.Fatal(err)
		}
		if rm.Filename != "naïve.txt" {
			t.Fatalf("file name %q", rm.Filename)
		}
		if _, err := io.ReadAll(rm.Body); err == nil {
			t.Fatal("a cut-off answer read as complete")
		}
		rm.Body.Close()

		_, err = f.FetchMedia(ctx, localName, "pending", 0)
		wantMerr(t, "pending", err, 504, "M_NOT_YET_UPLOADED")
		_, err = f.FetchMedia(ctx, localName, "missing", 0)
		wantMerr(t, "missing", err, 404, "M_NOT_FOUND")
		for _, id := range []string{"refused", "notjson", "plain", "onepart"} {
			_, err = f.FetchMedia(ctx, localName, id, 0)
			wantMerr(t, id, err, 502, "M_UNKNOWN")
		}
		_, err = f.FetchMedia(ctx, localName, "bad/id", 0)
		wantMerr(t, "bad id", err, 404, "M_NOT_FOUND")

		// A server that cannot be reached.
		fake.Close()
		_, err = f.FetchMedia(ctx, localName, "old", 0)
		wantMerr(t, "unreachable", err, 502, "M_UNKNOWN")
	})
}
