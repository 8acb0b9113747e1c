package sytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// testPNG is a w×h PNG with a transparent half.
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			a := uint8(255)
			if x < w/2 {
				a = 60
			}
			img.SetNRGBA(x, y, color.NRGBA{uint8(x), uint8(y), 200, a})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testJPEG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, color.RGBA{uint8(x * 3), uint8(y * 5), uint8(x + y), 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// download fetches media with a mautrix client (authenticated endpoint).
func download(t *testing.T, cli *mautrix.Client, uri id.ContentURI) (*http.Response, []byte) {
	t.Helper()
	resp, err := cli.Download(context.Background(), uri)
	if err != nil {
		t.Fatalf("download %s: %v", uri, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// thumbnail fetches and decodes a thumbnail.
func thumbnail(t *testing.T, cli *mautrix.Client, uri id.ContentURI, w, h int, method string) (string, image.Config) {
	t.Helper()
	resp, err := cli.DownloadThumbnail(context.Background(), uri, h, w, mautrix.DownloadThumbnailExtra{Method: method})
	if err != nil {
		t.Fatalf("thumbnail %dx%d %s of %s: %v", w, h, method, uri, err)
	}
	defer resp.Body.Close()
	if d := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(d, "inline") {
		t.Errorf("thumbnail Content-Disposition %q", d)
	}
	cfg, format, err := image.DecodeConfig(resp.Body)
	if err != nil {
		t.Fatalf("decode thumbnail: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "image/"+format {
		t.Errorf("thumbnail Content-Type %q for a %s", ct, format)
	}
	return resp.Header.Get("Content-Type"), cfg
}

func checkSafeHeaders(t *testing.T, h http.Header) {
	t.Helper()
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", h.Get("X-Content-Type-Options"))
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if h.Get("Cross-Origin-Resource-Policy") != "cross-origin" {
		t.Errorf("Cross-Origin-Resource-Policy %q", h.Get("Cross-Origin-Resource-Policy"))
	}
	if h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("Access-Control-Allow-Origin %q", h.Get("Access-Control-Allow-Origin"))
	}
}

// TestMedia: upload, download, thumbnails, limits and async uploads as a
// client sees them.
func TestMedia(t *testing.T) {
	// The legacy unauthenticated endpoints are turned on to test them too.
	eachDBEnv(t, []string{"HAVEN_MEDIA_MAX_UPLOAD_BYTES=2097152", "HAVEN_MEDIA_LEGACY_UNAUTHENTICATED=true"}, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")

		cfg, err := alice.GetMediaConfig(ctx)
		if err != nil || cfg.UploadSize != 2097152 {
			t.Fatalf("media config: %+v %v", cfg, err)
		}
		s.do(t, "GET", "/_matrix/media/v3/config", alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", "/_matrix/client/v1/media/config", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")

		// Upload and download: the same bytes, safe headers.
		pic := testPNG(t, 1000, 800)
		up, err := alice.UploadBytesWithName(ctx, pic, "image/png", "holiday photo.png")
		if err != nil {
			t.Fatal(err)
		}
		uri := up.ContentURI
		if uri.Homeserver != "localhost" || uri.FileID == "" {
			t.Fatalf("content URI %s", uri)
		}
		resp, got := download(t, bob, uri)
		if !bytes.Equal(got, pic) {
			t.Fatalf("downloaded %d bytes, uploaded %d", len(got), len(pic))
		}
		if resp.Header.Get("Content-Type") != "image/png" || resp.Header.Get("Content-Disposition") != `inline; filename="holiday photo.png"` {
			t.Errorf("headers: %v", resp.Header)
		}
		checkSafeHeaders(t, resp.Header)
		// Legacy unauthenticated download, and the file name in the path.
		r := s.do(t, "GET", "/_matrix/media/v3/download/localhost/"+uri.FileID+"/other.png", "", nil).expect(t, 200)
		if !bytes.Equal(r.Raw, pic) || r.Header.Get("Content-Disposition") != `inline; filename="other.png"` {
			t.Errorf("legacy download: %d bytes, %q", len(r.Raw), r.Header.Get("Content-Disposition"))
		}
		s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/"+uri.FileID, "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		// A range.
		r = s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/"+uri.FileID, alice.AccessToken, nil, withHeader("Range", "bytes=0-9")).expect(t, 206)
		if !bytes.Equal(r.Raw, pic[:10]) {
			t.Errorf("range: %x", r.Raw)
		}

		// Script content is served as an attachment.
		html, err := alice.UploadBytesWithName(ctx, []byte("<script>alert(document.cookie)</script>"), "text/html", "page.html")
		if err != nil {
			t.Fatal(err)
		}
		resp, _ = download(t, alice, html.ContentURI)
		if d := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(d, "attachment") {
			t.Errorf("HTML served with Content-Disposition %q", d)
		}
		checkSafeHeaders(t, resp.Header)
		svg, err := alice.UploadBytesWithName(ctx, []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`), "image/svg+xml", "Ünïcödé.svg")
		if err != nil {
			t.Fatal(err)
		}
		resp, _ = download(t, alice, svg.ContentURI)
		if d := resp.Header.Get("Content-Disposition"); d != "attachment; filename*=utf-8''%C3%9Cn%C3%AFc%C3%B6d%C3%A9.svg" {
			t.Errorf("SVG served with Content-Disposition %q", d)
		}

		// Thumbnails, right after the upload: a PNG with transparency and a JPEG.
		ct, c := thumbnail(t, alice, uri, 96, 96, "crop")
		if ct != "image/png" || c.Width != 96 || c.Height != 96 {
			t.Errorf("PNG crop thumbnail: %s %dx%d", ct, c.Width, c.Height)
		}
		photo := testJPEG(t, 1200, 900)
		jup, err := alice.UploadBytes(ctx, photo, "image/jpeg")
		if err != nil {
			t.Fatal(err)
		}
		ct, c = thumbnail(t, bob, jup.ContentURI, 320, 240, "scale")
		if ct != "image/jpeg" || c.Width != 320 || c.Height != 240 {
			t.Errorf("JPEG scale thumbnail: %s %dx%d", ct, c.Width, c.Height)
		}
		ct, c = thumbnail(t, bob, jup.ContentURI, 800, 600, "scale")
		if ct != "image/jpeg" || c.Width != 800 || c.Height != 600 {
			t.Errorf("JPEG 800x600 thumbnail: %s %dx%d", ct, c.Width, c.Height)
		}
		// An identical re-upload gets its own ID and still has thumbnails.
		again, err := bob.UploadBytes(ctx, photo, "image/jpeg")
		if err != nil {
			t.Fatal(err)
		}
		if again.ContentURI == jup.ContentURI {
			t.Fatal("identical uploads share a media ID")
		}
		if _, c = thumbnail(t, bob, again.ContentURI, 32, 32, "crop"); c.Width != 32 || c.Height != 32 {
			t.Errorf("re-upload thumbnail %dx%d", c.Width, c.Height)
		}
		// Legacy thumbnail endpoint.
		r = s.do(t, "GET", "/_matrix/media/v3/thumbnail/localhost/"+jup.ContentURI.FileID+"?width=96&height=96&method=crop", "", nil).expect(t, 200)
		if c, _, err := image.DecodeConfig(bytes.NewReader(r.Raw)); err != nil || c.Width != 96 {
			t.Errorf("legacy thumbnail: %v %+v", err, c)
		}
		checkSafeHeaders(t, r.Header)
		// Bad thumbnail requests.
		thumbPath := "/_matrix/client/v1/media/thumbnail/localhost/" + jup.ContentURI.FileID
		s.do(t, "GET", thumbPath+"?height=32", alice.AccessToken, nil).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "GET", thumbPath+"?width=-1&height=32", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", thumbPath+"?width=32&height=32&method=zoom", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", "/_matrix/client/v1/media/thumbnail/localhost/"+html.ContentURI.FileID+"?width=32&height=32", alice.AccessToken, nil).expectErr(t, 400, "M_UNKNOWN")

		// Unknown and remote media.
		s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/doesNotExist", alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", "/_matrix/client/v1/media/download/matrix.org/"+uri.FileID, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/bad.id", alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		// URL previews are off by default: the endpoints answer as on a server without them.
		s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url=https://example.com", alice.AccessToken, nil).expectErr(t, 404, "M_UNRECOGNIZED")
		s.do(t, "GET", "/_matrix/media/v3/preview_url?url=https://example.com", alice.AccessToken, nil).expectErr(t, 404, "M_UNRECOGNIZED")

		// Over the upload limit, which is above max_request_bytes (1 MiB):
		// 1.5 MiB goes through, 3 MiB does not, with or without a length.
		mid := make([]byte, 3<<19)
		_, _ = rand.Read(mid)
		if _, err := alice.UploadBytes(ctx, mid, "application/octet-stream"); err != nil {
			t.Fatalf("1.5 MiB upload: %v", err)
		}
		big := make([]byte, 3<<20)
		_, err = alice.UploadBytes(ctx, big, "application/octet-stream")
		mustErr(t, "3 MiB upload", err, 413, "M_TOO_LARGE")
		s.do(t, "POST", "/_matrix/media/v3/upload", alice.AccessToken, big, chunked(), withHeader("Content-Type", "application/octet-stream")).expectErr(t, 413, "M_TOO_LARGE")
		s.do(t, "POST", "/_matrix/media/v3/upload?filename=a%00b", alice.AccessToken, "x").expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", "/_matrix/media/v3/upload", "", "x").expectErr(t, 401, "M_MISSING_TOKEN")

		// Async upload: create, wait, upload once, download.
		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if created.ContentURI.FileID == "" || created.UnusedExpiresAt.IsZero() {
			t.Fatalf("create: %+v", created)
		}
		dl := "/_matrix/client/v1/media/download/localhost/" + created.ContentURI.FileID
		// 504 is the spec's answer here; s.do takes any 5xx for a server error.
		req, _ := http.NewRequest("GET", s.URL+dl+"?timeout_ms=0", nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if res, err := http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		} else {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 504 || !strings.Contains(string(body), `"M_NOT_YET_UPLOADED"`) {
				t.Fatalf("download before the upload: %d %s", res.StatusCode, body)
			}
		}
		put := "/_matrix/media/v3/upload/localhost/" + created.ContentURI.FileID
		s.do(t, "PUT", put, bob.AccessToken, "not yours", withHeader("Content-Type", "text/plain")).expectErr(t, 403, "M_FORBIDDEN")
		later := []byte("uploaded later")
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: later, ContentType: "text/plain", FileName: "later.txt", MXC: created.ContentURI}); err != nil {
			t.Fatalf("async upload: %v", err)
		}
		if _, got := download(t, bob, created.ContentURI); !bytes.Equal(got, later) {
			t.Fatalf("async download %q", got)
		}
		s.do(t, "PUT", put, alice.AccessToken, "again", withHeader("Content-Type", "text/plain")).expectErr(t, 409, "M_CANNOT_OVERWRITE_MEDIA")
		s.do(t, "PUT", "/_matrix/media/v3/upload/localhost/neverCreated", alice.AccessToken, "x").expectErr(t, 404, "M_NOT_FOUND")
	})
}

// TestMediaLegacyFrozen: by default (legacy_unauthenticated off) only the
// authenticated endpoints serve media; the legacy ones answer 404
// M_NOT_FOUND, as the spec has servers that froze them answer, with or
// without a token.
func TestMediaLegacyFrozen(t *testing.T) {
	s := startServer(t, "sqlite")
	alice := s.register(t, "alice")
	up, err := alice.UploadBytes(context.Background(), []byte("frozen"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/_matrix/media/v3/download/localhost/" + up.ContentURI.FileID, "/_matrix/media/v3/download/localhost/" + up.ContentURI.FileID + "/f.txt",
		"/_matrix/media/r0/download/localhost/" + up.ContentURI.FileID, "/_matrix/media/v3/thumbnail/localhost/" + up.ContentURI.FileID + "?width=32&height=32"} {
		s.do(t, "GET", path, "", nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", path, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
	}
	if _, got := download(t, alice, up.ContentURI); string(got) != "frozen" {
		t.Fatalf("authenticated download %q", got)
	}
}

// TestMediaQuota: a user over media.quota_bytes_per_user gets 413
// M_TOO_LARGE; other users are not affected.
func TestMediaQuota(t *testing.T) {
	s := startServer(t, "sqlite", "HAVEN_MEDIA_MAX_UPLOAD_BYTES=1048576", "HAVEN_MEDIA_QUOTA_BYTES_PER_USER=1572864")
	ctx := context.Background()
	alice := s.register(t, "alice")
	bob := s.register(t, "bob")
	mib := make([]byte, 1<<20)
	if _, err := alice.UploadBytes(ctx, mib, "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	_, err := alice.UploadBytes(ctx, mib[:1<<19+1], "application/octet-stream")
	mustErr(t, "upload over the quota", err, 413, "M_TOO_LARGE")
	if _, err := alice.UploadBytes(ctx, mib[:1<<19], "application/octet-stream"); err != nil {
		t.Fatalf("upload up to the quota: %v", err)
	}
	if _, err := bob.UploadBytes(ctx, mib, "application/octet-stream"); err != nil {
		t.Fatalf("another user: %v", err)
	}
}
