package sytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestFederationMedia: a file and an image uploaded on site A are
// downloaded by a user of site B through B, byte for byte, with a
// thumbnail made on B; B serves them from its cache once A is down; media
// of a server outside the allowlist is refused.
func TestFederationMedia(t *testing.T) {
	// The legacy endpoints (off by default) are turned on: their
	// allow_remote=false is part of what is checked.
	t.Setenv("HAVEN_MEDIA_LEGACY_UNAUTHENTICATED", "true")
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")

	file := make([]byte, 300<<10)
	_, _ = rand.Read(file)
	upFile, err := alice.UploadBytesWithName(ctx, file, "application/pdf", "Quarterly report.pdf")
	if err != nil {
		t.Fatal(err)
	}
	img := testJPEG(t, 640, 480)
	upImg, err := alice.UploadBytesWithName(ctx, img, "image/jpeg", "photo.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if upFile.ContentURI.Homeserver != a.name {
		t.Fatalf("uploaded as %s", upFile.ContentURI)
	}

	// Several first downloads at once: one fetch, the same bytes for all.
	var wg sync.WaitGroup
	got := make([][]byte, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := bob.Download(ctx, upFile.ContentURI)
			if err != nil {
				t.Errorf("download %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			got[i] = buf.Bytes()
		}()
	}
	wg.Wait()
	for i, g := range got {
		if !bytes.Equal(g, file) {
			t.Fatalf("download %d through B: %d bytes, not the %d uploaded", i, len(g), len(file))
		}
	}
	resp, body := download(t, bob, upFile.ContentURI)
	if ct := resp.Header.Get("Content-Type"); ct != "application/pdf" || !bytes.Equal(body, file) {
		t.Fatalf("file: %s, %d bytes", ct, len(body))
	}
	if d := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(d, "attachment") || !strings.Contains(d, "Quarterly") {
		t.Fatalf("file Content-Disposition %q", d)
	}
	resp, body = download(t, bob, upImg.ContentURI)
	if ct := resp.Header.Get("Content-Type"); ct != "image/jpeg" || !bytes.Equal(body, img) {
		t.Fatalf("image: %s, %d bytes", ct, len(body))
	}
	if ct, cfg := thumbnail(t, bob, upImg.ContentURI, 96, 96, "crop"); ct != "image/jpeg" || cfg.Width != 96 || cfg.Height != 96 {
		t.Fatalf("thumbnail %s %dx%d", ct, cfg.Width, cfg.Height)
	}
	// Media A does not have: 404 from A, passed on.
	b.do(t, "GET", "/_matrix/client/v1/media/download/"+a.name+"/NoSuchMedia", bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
	// The legacy endpoint with allow_remote=false answers from the cache
	// only: the cached file, and 404 for what B never fetched.
	legacy := "/_matrix/media/v3/download/" + url.PathEscape(a.name) + "/"
	if r := b.do(t, "GET", legacy+upFile.ContentURI.FileID+"?allow_remote=false", "", nil).expect(t, 200); !bytes.Equal(r.Raw, file) {
		t.Fatalf("legacy cached download: %d bytes", len(r.Raw))
	}
	upLater, err := alice.UploadBytesWithName(ctx, []byte("later"), "text/plain", "later.txt")
	if err != nil {
		t.Fatal(err)
	}
	b.do(t, "GET", legacy+upLater.ContentURI.FileID+"?allow_remote=false", "", nil).expectErr(t, 404, "M_NOT_FOUND")

	// A down: B still serves what it fetched, and makes new thumbnail
	// sizes from its copy of the original.
	a.stop()
	if _, body := download(t, bob, upFile.ContentURI); !bytes.Equal(body, file) {
		t.Fatal("cached file differs")
	}
	if _, body := download(t, bob, upImg.ContentURI); !bytes.Equal(body, img) {
		t.Fatal("cached image differs")
	}
	if ct, cfg := thumbnail(t, bob, upImg.ContentURI, 320, 240, "scale"); ct != "image/jpeg" || cfg.Width != 320 || cfg.Height != 240 {
		t.Fatalf("thumbnail with A down: %s %dx%d", ct, cfg.Width, cfg.Height)
	}
	// What B never fetched cannot be had while A is down: 502, not 500.
	if _, err := bob.Download(ctx, upLater.ContentURI); !isHTTPError(err, 502, "M_UNKNOWN") {
		t.Fatalf("media of a site that is down: %v", err)
	}

	// A server outside B's allowlist is never asked.
	other := id.ContentURI{Homeserver: "elsewhere.example.com", FileID: "abcdef"}
	if _, err := bob.Download(ctx, other); !isHTTPError(err, 403, "M_FORBIDDEN") {
		t.Fatalf("media of a server outside the allowlist: %v", err)
	}
}

func isHTTPError(err error, status int, errcode string) bool {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return false
	}
	return he.Response != nil && he.Response.StatusCode == status && he.RespError != nil && he.RespError.ErrCode == errcode
}
