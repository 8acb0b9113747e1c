package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

const testServer = "media.test"

// fakeClock is a settable clock.
type fakeClock struct{ ms atomic.Int64 }

func (c *fakeClock) now() time.Time      { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func newTestService(t testing.TB, db *storage.DB, opts Options) (*Service, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	clock.ms.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	opts.ServerName = testServer
	opts.Dir = filepath.Join(t.TempDir(), "media")
	if opts.Now == nil {
		opts.Now = clock.now
	}
	s, err := New(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, clock
}

func up(data []byte, contentType, name string) Upload {
	return Upload{Body: bytes.NewReader(data), ContentLength: int64(len(data)), ContentType: contentType, Filename: name}
}

// mediaIDOf takes the media ID out of an mxc:// URI of the test server.
func mediaIDOf(t testing.TB, mxc string) string {
	t.Helper()
	id, ok := strings.CutPrefix(mxc, "mxc://"+testServer+"/")
	if !ok || !ValidMediaID(id) {
		t.Fatalf("bad mxc %q", mxc)
	}
	return id
}

func readAll(t testing.TB, c *Content) []byte {
	t.Helper()
	defer c.Close()
	b, err := io.ReadAll(c.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr asserts the Matrix error status and code of err.
func wantErr(t testing.TB, what string, err error, status int, code string) {
	t.Helper()
	me, ok := merr.As(err)
	if !ok || me.Status != status || me.Code != code {
		t.Fatalf("%s: %v, want %d %s", what, err, status, code)
	}
}

// contentFiles counts the files of the content store (not the temporary ones).
func contentFiles(t testing.TB, s *Service) (n int, tmp int) {
	t.Helper()
	_ = filepath.WalkDir(s.files.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if filepath.Base(filepath.Dir(p)) == "tmp" {
			tmp++
		} else {
			n++
		}
		return nil
	})
	return n, tmp
}

func TestUploadDownload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, Options{})
		data := []byte("hello, media")
		mxc, err := s.UploadNew(ctx, "@alice:test", up(data, "text/plain; charset=utf-8", "hello.txt"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Download(ctx, testServer, mediaIDOf(t, mxc), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if c.ContentType != "text/plain; charset=utf-8" || c.Disposition != `inline; filename="hello.txt"` || c.Size != int64(len(data)) {
			t.Fatalf("content: %+v", c)
		}
		if got := readAll(t, c); !bytes.Equal(got, data) {
			t.Fatalf("got %q", got)
		}
		// The file name in the path replaces the uploaded one.
		c, err = s.Download(ctx, testServer, mediaIDOf(t, mxc), "other name.txt", 0)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if c.Disposition != `inline; filename="other name.txt"` {
			t.Fatalf("disposition %q", c.Disposition)
		}

		// An identical upload shares the file but has its own ID and metadata.
		mxc2, err := s.UploadNew(ctx, "@bob:test", up(data, "application/x-evil", ""))
		if err != nil {
			t.Fatal(err)
		}
		if mxc2 == mxc {
			t.Fatal("same media ID twice")
		}
		c, err = s.Download(ctx, testServer, mediaIDOf(t, mxc2), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if c.Disposition != "attachment" || c.ContentType != "application/x-evil" {
			t.Fatalf("second upload: %+v", c)
		}
		if got := readAll(t, c); !bytes.Equal(got, data) {
			t.Fatalf("got %q", got)
		}
		if n, tmp := contentFiles(t, s); n != 1 || tmp != 0 {
			t.Fatalf("%d content files and %d temporary ones, want 1 and 0", n, tmp)
		}

		// HTML keeps its type but is never inline.
		mxc3, err := s.UploadNew(ctx, "@alice:test", up([]byte("<script>alert(1)</script>"), "text/html", "x.html"))
		if err != nil {
			t.Fatal(err)
		}
		c, err = s.Download(ctx, testServer, mediaIDOf(t, mxc3), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if c.ContentType != "text/html" || c.Disposition != `attachment; filename="x.html"` {
			t.Fatalf("html: %+v", c)
		}

		for _, tc := range []struct{ server, id string }{
			{"other.server", mediaIDOf(t, mxc)},
			{testServer, "nosuchmedia"},
			{testServer, "../../etc/passwd"},
			{testServer, ""},
		} {
			_, err := s.Download(ctx, tc.server, tc.id, "", 0)
			wantErr(t, tc.server+"/"+tc.id, err, http.StatusNotFound, "M_NOT_FOUND")
		}
		_, err = s.UploadNew(ctx, "@alice:test", up(data, "", "bad\x00name"))
		wantErr(t, "control character in file name", err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestUploadLimits(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, Options{MaxUploadBytes: 2000, QuotaBytesPerUser: 3000})
		big := bytes.Repeat([]byte("x"), 2001)

		// Declared too large: refused before reading.
		_, err := s.UploadNew(ctx, "@a:test", up(big, "", ""))
		wantErr(t, "declared too large", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// Undeclared: refused while streaming.
		_, err = s.UploadNew(ctx, "@a:test", Upload{Body: bytes.NewReader(big), ContentLength: -1})
		wantErr(t, "streamed too large", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// Exactly the limit is fine.
		if _, err := s.UploadNew(ctx, "@a:test", up(big[:2000], "", "")); err != nil {
			t.Fatal(err)
		}
		// The quota: 2000 used, 1500 more would be 3500.
		_, err = s.UploadNew(ctx, "@a:test", up(bytes.Repeat([]byte("y"), 1500), "", ""))
		wantErr(t, "over quota (declared)", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		_, err = s.UploadNew(ctx, "@a:test", Upload{Body: bytes.NewReader(bytes.Repeat([]byte("z"), 1500)), ContentLength: -1})
		wantErr(t, "over quota (streamed)", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// Another user has their own quota.
		if _, err := s.UploadNew(ctx, "@b:test", up(bytes.Repeat([]byte("y"), 1500), "", "")); err != nil {
			t.Fatal(err)
		}
		// Refused uploads leave no file behind, nor temporary ones.
		if n, tmp := contentFiles(t, s); n != 2 || tmp != 0 {
			t.Fatalf("%d content files and %d temporary ones, want 2 and 0", n, tmp)
		}
		// A body that breaks off is a client error, not a server one.
		_, err = s.UploadNew(ctx, "@b:test", Upload{Body: iotest.ErrReader(errors.New("connection reset")), ContentLength: -1})
		wantErr(t, "broken body", err, http.StatusBadRequest, "M_UNKNOWN")
	})
}

func TestAsyncUpload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clock := newTestService(t, db, Options{MaxPendingUploads: 3})
		mxc, expires, err := s.Create(ctx, "@alice:test")
		if err != nil {
			t.Fatal(err)
		}
		if want := clock.now().Add(24 * time.Hour).UnixMilli(); expires != want {
			t.Fatalf("unused_expires_at %d, want %d", expires, want)
		}
		id := mediaIDOf(t, mxc)
		_, err = s.Download(ctx, testServer, id, "", 0)
		wantErr(t, "download before upload", err, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		_, err = s.Thumbnail(ctx, testServer, id, ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
		wantErr(t, "thumbnail before upload", err, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

		err = s.UploadTo(ctx, "@mallory:test", testServer, id, up([]byte("evil"), "", ""))
		wantErr(t, "another user", err, http.StatusForbidden, "M_FORBIDDEN")
		err = s.UploadTo(ctx, "@alice:test", "other.server", id, up([]byte("x"), "", ""))
		wantErr(t, "other server", err, http.StatusNotFound, "M_NOT_FOUND")
		err = s.UploadTo(ctx, "@alice:test", testServer, "neverCreated", up([]byte("x"), "", ""))
		wantErr(t, "not created", err, http.StatusNotFound, "M_NOT_FOUND")

		// A download waiting for the upload gets it as soon as it is there.
		data := []byte("late content")
		var wg sync.WaitGroup
		var got []byte
		var gotErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.Download(ctx, testServer, id, "", 10*time.Second)
			if err != nil {
				gotErr = err
				return
			}
			got, gotErr = io.ReadAll(c.Body)
			c.Close()
		}()
		// Let the download subscribe first (it works either way).
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			s.waitMu.Lock()
			n := len(s.waiters)
			s.waitMu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		if err := s.UploadTo(ctx, "@alice:test", testServer, id, up(data, "text/plain", "late.txt")); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if gotErr != nil || !bytes.Equal(got, data) {
			t.Fatalf("waiting download: %q %v", got, gotErr)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("waiting download was not woken")
		}
		err = s.UploadTo(ctx, "@alice:test", testServer, id, up([]byte("again"), "", ""))
		wantErr(t, "second upload", err, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
		s.waitMu.Lock()
		if len(s.waiters) != 0 {
			t.Errorf("%d waiters left", len(s.waiters))
		}
		s.waitMu.Unlock()

		// Pending IDs are limited per user...
		var pending []string
		for i := 0; i < 3; i++ {
			mxc, _, err := s.Create(ctx, "@alice:test")
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, mediaIDOf(t, mxc))
		}
		_, _, err = s.Create(ctx, "@alice:test")
		wantErr(t, "too many pending", err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		if _, _, err := s.Create(ctx, "@bob:test"); err != nil {
			t.Fatalf("another user: %v", err)
		}
		// ...and lapse after a day.
		clock.add(24*time.Hour + time.Second)
		err = s.UploadTo(ctx, "@alice:test", testServer, pending[0], up([]byte("too late"), "", ""))
		wantErr(t, "lapsed ID", err, http.StatusNotFound, "M_NOT_FOUND")
		_, err = s.Download(ctx, testServer, pending[1], "", time.Second)
		wantErr(t, "download of lapsed ID", err, http.StatusNotFound, "M_NOT_FOUND")
		if _, _, err := s.Create(ctx, "@alice:test"); err != nil {
			t.Fatalf("create after the others lapsed: %v", err)
		}
		if err := s.SweepExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := selectMedia(ctx, db, pending[2]); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("lapsed ID still there: %v", err)
		}
		// The uploaded one stays.
		if _, err := s.Download(ctx, testServer, id, "", 0); err != nil {
			t.Fatal(err)
		}
	})
}

func TestServiceThumbnails(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, Options{MaxThumbnailPixels: 4_000_000})
		png := makePNG(t, 1000, 800, true)
		mxc, err := s.UploadNew(ctx, "@alice:test", up(png, "image/png", "a.png"))
		if err != nil {
			t.Fatal(err)
		}
		id := mediaIDOf(t, mxc)
		thumb := func(id string, w, h int, m Method, animated bool) (string, image.Config, []byte) {
			t.Helper()
			c, err := s.Thumbnail(ctx, testServer, id, ThumbnailRequest{Width: w, Height: h, Method: m, Animated: animated}, 0)
			if err != nil {
				t.Fatalf("thumbnail %dx%d %s: %v", w, h, m, err)
			}
			if !strings.HasPrefix(c.Disposition, "inline") {
				t.Fatalf("thumbnail disposition %q", c.Disposition)
			}
			b := readAll(t, c)
			cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			return c.ContentType, cfg, b
		}
		// Right after the upload.
		ct, cfg, _ := thumb(id, 96, 96, Crop, false)
		if ct != "image/png" || cfg.Width != 96 || cfg.Height != 96 {
			t.Fatalf("crop: %s %dx%d", ct, cfg.Width, cfg.Height)
		}
		// The other standard sizes were made at the same time.
		var rows int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM media_thumbnails`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != 2*len(StandardSizes) {
			t.Fatalf("%d thumbnail rows, want %d", rows, 2*len(StandardSizes))
		}
		ct, cfg, _ = thumb(id, 300, 200, Scale, false) // -> 320x240
		if cfg.Width != 300 || cfg.Height != 240 {
			t.Fatalf("scale: %s %dx%d", ct, cfg.Width, cfg.Height)
		}
		// A non-standard size.
		_, cfg, _ = thumb(id, 200, 100, Crop, false)
		if cfg.Width != 200 || cfg.Height != 100 {
			t.Fatalf("custom crop: %dx%d", cfg.Width, cfg.Height)
		}
		// An identical re-upload gets the same thumbnails.
		mxc2, err := s.UploadNew(ctx, "@bob:test", up(png, "application/octet-stream", ""))
		if err != nil {
			t.Fatal(err)
		}
		_, cfg, _ = thumb(mediaIDOf(t, mxc2), 32, 32, Crop, true)
		if cfg.Width != 32 || cfg.Height != 32 {
			t.Fatalf("re-upload: %dx%d", cfg.Width, cfg.Height)
		}
		// A small image: the original comes back.
		small := makeJPEG(t, 50, 40)
		mxc3, err := s.UploadNew(ctx, "@alice:test", up(small, "image/jpeg", ""))
		if err != nil {
			t.Fatal(err)
		}
		ct, _, b := thumb(mediaIDOf(t, mxc3), 96, 96, Crop, false)
		if ct != "image/jpeg" || !bytes.Equal(b, small) {
			t.Fatalf("small image: %s, %d bytes", ct, len(b))
		}
		// An animated GIF stays animated only when asked.
		anim := makeGIF(t, 400, 300, 3)
		mxc4, err := s.UploadNew(ctx, "@alice:test", up(anim, "image/gif", ""))
		if err != nil {
			t.Fatal(err)
		}
		ct, cfg, _ = thumb(mediaIDOf(t, mxc4), 320, 240, Scale, true)
		if ct != "image/gif" || cfg.Width != 320 || cfg.Height != 240 {
			t.Fatalf("animated: %s %dx%d", ct, cfg.Width, cfg.Height)
		}
		ct, _, _ = thumb(mediaIDOf(t, mxc4), 320, 240, Scale, false)
		if ct == "image/gif" {
			t.Fatal("animated thumbnail without animated=true")
		}
		// A small animated GIF with animated=false: a still, not the original.
		smallAnim := makeGIF(t, 60, 40, 3)
		mxc5, err := s.UploadNew(ctx, "@alice:test", up(smallAnim, "image/gif", ""))
		if err != nil {
			t.Fatal(err)
		}
		if ct, _, _ := thumb(mediaIDOf(t, mxc5), 96, 96, Crop, false); ct == "image/gif" {
			t.Fatal("small animated GIF served as the original")
		}
		if _, _, b := thumb(mediaIDOf(t, mxc5), 96, 96, Crop, true); !bytes.Equal(b, smallAnim) {
			t.Fatal("small animated GIF with animated=true: not the original")
		}

		// What cannot be thumbnailed.
		mxcText, _ := s.UploadNew(ctx, "@alice:test", up([]byte("just text"), "text/plain", ""))
		_, err = s.Thumbnail(ctx, testServer, mediaIDOf(t, mxcText), ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
		wantErr(t, "text", err, http.StatusBadRequest, "M_UNKNOWN")
		mxcBomb, _ := s.UploadNew(ctx, "@alice:test", up(makePNGBomb(3000, 3000), "image/png", ""))
		_, err = s.Thumbnail(ctx, testServer, mediaIDOf(t, mxcBomb), ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
		wantErr(t, "too many pixels", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		mxcWebP, _ := s.UploadNew(ctx, "@alice:test", up(makeAnimatedWebPHeader(500, 500), "image/webp", ""))
		// Animated WebP falls back to the original.
		c, err := s.Thumbnail(ctx, testServer, mediaIDOf(t, mxcWebP), ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
		if err != nil {
			t.Fatalf("animated webp: %v", err)
		}
		if c.ContentType != "image/webp" || c.Size != int64(len(makeAnimatedWebPHeader(500, 500))) {
			t.Errorf("animated webp: got %s of %d bytes, want the original", c.ContentType, c.Size)
		}
		c.Close()
		_, err = s.Thumbnail(ctx, testServer, id, ThumbnailRequest{Width: 0, Height: 32, Method: Crop}, 0)
		wantErr(t, "zero width", err, http.StatusBadRequest, "M_INVALID_PARAM")
		_, err = s.Thumbnail(ctx, testServer, id, ThumbnailRequest{Width: 32, Height: 32, Method: "zoom"}, 0)
		wantErr(t, "bad method", err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestConcurrentThumbnails asks for the thumbnails of one new image from
// many goroutines: each gets the right size, and they are made once.
func TestConcurrentThumbnails(t *testing.T) {
	db := storagetest.Open(t, storage.SQLite)
	ctx := context.Background()
	s, _ := newTestService(t, db, Options{ThumbnailWorkers: 1})
	mxc, err := s.UploadNew(ctx, "@alice:test", up(makeJPEG(t, 1600, 1200), "image/jpeg", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := mediaIDOf(t, mxc)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sz := StandardSizes[i%len(StandardSizes)]
			c, err := s.Thumbnail(ctx, testServer, id, ThumbnailRequest{Width: sz.Width, Height: sz.Height, Method: sz.Method}, 0)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			cfg, _, err := image.DecodeConfig(c.Body)
			if err != nil {
				errs <- err
				return
			}
			if want := plan(1600, 1200, sz).Out; cfg.Width != want.X || cfg.Height != want.Y {
				errs <- errors.New("wrong size")
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, _ := contentFiles(t, s); n != 1+len(StandardSizes) {
		t.Fatalf("%d files, want the original and %d thumbnails", n, len(StandardSizes))
	}
}

func TestSweepTmp(t *testing.T) {
	db := storagetest.Open(t, storage.SQLite)
	s, _ := newTestService(t, db, Options{})
	tmp := filepath.Join(s.files.dir, "tmp")
	old, fresh := filepath.Join(tmp, "up-old"), filepath.Join(tmp, "up-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if err := s.SweepExpired(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old temporary file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
}
