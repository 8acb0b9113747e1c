package sytest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestURLPreview: with media.url_previews on, /preview_url (both paths)
// fetches the page, answers its og: tags (title and description from the
// head when og: gives none) and og:image as an mxc:// URI stored in the
// media store with its size and dimensions (Complement's TestUrlPreview);
// answers are cached; private addresses are refused, also behind a
// redirect; bad URLs are 400.
func TestURLPreview(t *testing.T) {
	png := testPNG(t, 279, 129)
	var pageFetches atomic.Int64
	mux := http.NewServeMux()
	var site *httptest.Server
	mux.HandleFunc("/test.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(png)
	})
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		pageFetches.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html prefix="og: http://ogp.me/ns#"><head><title>The Rock (1996)</title>
<meta property="og:title" content="The Rock" /><meta property="og:type" content="video.movie" />
<meta property="og:url" content="http://www.imdb.com/title/tt0117500/" /><meta property="og:image" content="test.png" />
</head><body><meta property="og:title" content="not in the head"></body></html>`)
	})
	mux.HandleFunc("/plain.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><title>  Plain
 page </title><meta name="description" content="A page without OpenGraph"></head></html>`)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		// A redirect to another loopback address, not in the allowed range.
		_, port, _ := net.SplitHostPort(site.Listener.Addr().String())
		http.Redirect(w, r, "http://127.0.0.2:"+port+"/test.html", http.StatusFound)
	})
	site = httptest.NewServer(mux)
	defer site.Close()
	_, port, _ := net.SplitHostPort(site.Listener.Addr().String())

	eachDBEnv(t, []string{"HAVEN_MEDIA_URL_PREVIEWS=true", "HAVEN_MEDIA_URL_PREVIEW_ALLOWED_RANGES=127.0.0.1/32"}, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		fetchesBefore := pageFetches.Load()
		preview := func(path, u string) apiResp {
			return s.do(t, "GET", path+"?url="+url.QueryEscape(u), alice.AccessToken, nil)
		}
		r := preview("/_matrix/media/v3/preview_url", site.URL+"/test.html").expect(t, 200)
		for k, v := range map[string]any{"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.imdb.com/title/tt0117500/",
			"matrix:image:size": float64(len(png)), "og:image:width": float64(279), "og:image:height": float64(129), "og:image:type": "image/png"} {
			if r.JSON[k] != v {
				t.Errorf("%s: %v, want %v (%s)", k, r.JSON[k], v, r)
			}
		}
		img := r.str("og:image")
		if !strings.HasPrefix(img, "mxc://localhost/") {
			t.Fatalf("og:image: %s", r)
		}
		dl := s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/"+strings.TrimPrefix(img, "mxc://localhost/"), alice.AccessToken, nil).expect(t, 200)
		if string(dl.Raw) != string(png) {
			t.Errorf("the stored image differs from the page's (%d bytes)", len(dl.Raw))
		}
		// The client path, and the cache: the page is not fetched again.
		preview("/_matrix/client/v1/media/preview_url", site.URL+"/test.html#frag").expect(t, 200)
		if n := pageFetches.Load() - fetchesBefore; n != 1 {
			t.Errorf("the page was fetched %d times", n)
		}
		plain := preview("/_matrix/client/v1/media/preview_url", site.URL+"/plain.html").expect(t, 200)
		if plain.str("og:title") != "Plain page" || plain.str("og:description") != "A page without OpenGraph" {
			t.Errorf("title and description fallback: %s", plain)
		}
		// An image URL is the image.
		if r := preview("/_matrix/client/v1/media/preview_url", site.URL+"/test.png").expect(t, 200); r.JSON["og:image:width"] != float64(279) {
			t.Errorf("image preview: %s", r)
		}
		// "localhost" resolves to the allowed address.
		preview("/_matrix/client/v1/media/preview_url", "http://localhost:"+port+"/plain.html").expect(t, 200)
		// Refused addresses: another loopback address, directly or by redirect; IPv6 loopback.
		preview("/_matrix/client/v1/media/preview_url", "http://127.0.0.2:"+port+"/test.html").expectErr(t, 403, "M_FORBIDDEN")
		preview("/_matrix/client/v1/media/preview_url", site.URL+"/elsewhere").expectErr(t, 403, "M_FORBIDDEN")
		preview("/_matrix/client/v1/media/preview_url", "http://[::1]:"+port+"/test.html").expectErr(t, 403, "M_FORBIDDEN")
		preview("/_matrix/client/v1/media/preview_url", "http://169.254.169.254/latest/meta-data/").expectErr(t, 403, "M_FORBIDDEN")
		// Bad requests.
		s.do(t, "GET", "/_matrix/client/v1/media/preview_url", alice.AccessToken, nil).expectErr(t, 400, "M_MISSING_PARAM")
		preview("/_matrix/client/v1/media/preview_url", "ftp://example.com/").expectErr(t, 400, "M_INVALID_PARAM")
		preview("/_matrix/client/v1/media/preview_url", "not a url").expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(site.URL), "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
	})
}
