package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

const otherServer = "other.test"

// remoteFile is what the fake other server holds for a media ID.
type remoteFile struct {
	data        []byte
	contentType string
	name        string
	// declared, when not 0, is the size the answer declares.
	declared int64
	// broken ends the body with an error after half the bytes.
	broken bool
	err    error
}

// fakeRemote is the other servers, as the federation fetcher would reach them.
type fakeRemote struct {
	mu    sync.Mutex
	files map[string]remoteFile // server/mediaID
	calls atomic.Int64
	// gate, when set, holds every fetch until it is closed.
	gate chan struct{}
}

func (f *fakeRemote) put(server, id string, rf remoteFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string]remoteFile{}
	}
	f.files[server+"/"+id] = rf
}

func (f *fakeRemote) FetchMedia(ctx context.Context, server, mediaID string, _ time.Duration) (*RemoteMedia, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	rf, ok := f.files[server+"/"+mediaID]
	f.mu.Unlock()
	if !ok {
		return nil, merr.NotFound("Media not found on %s", server)
	}
	if rf.err != nil {
		return nil, rf.err
	}
	var body io.Reader = bytes.NewReader(rf.data)
	if rf.broken {
		body = io.MultiReader(bytes.NewReader(rf.data[:len(rf.data)/2]), iotest.ErrReader(io.ErrUnexpectedEOF))
	}
	size := int64(-1)
	if rf.declared != 0 {
		size = rf.declared
	}
	return &RemoteMedia{ContentType: rf.contentType, Filename: rf.name, Size: size, Body: io.NopCloser(body)}, nil
}

func remoteService(t *testing.T, db *storage.DB, opts Options) (*Service, *fakeRemote, *fakeClock) {
	t.Helper()
	fr := &fakeRemote{}
	opts.Remote = fr
	opts.RemoteAllowed = func(s string) bool { return s != "denied.test" }
	s, clock := newTestService(t, db, opts)
	return s, fr, clock
}

func remoteRows(t *testing.T, db *storage.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM remote_media`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoteMedia: another server's media is fetched on the first
// download, kept, and served from the cache afterwards, thumbnails too;
// allow_remote=false answers only from the cache.
func TestRemoteMedia(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, fr, clock := remoteService(t, db, Options{})
		doc := []byte("the minutes of the meeting")
		img := makePNG(t, 400, 300, false)
		fr.put(otherServer, "doc", remoteFile{data: doc, contentType: "text/plain", name: "minutes.txt", declared: int64(len(doc))})
		fr.put(otherServer, "img", remoteFile{data: img, contentType: "image/png", name: "photo.png"})

		// Not cached, and not to be fetched.
		_, err := s.Download(LocalOnly(ctx), otherServer, "doc", "", 0)
		wantErr(t, "local only", err, 404, "M_NOT_FOUND")
		if fr.calls.Load() != 0 {
			t.Fatal("allow_remote=false fetched")
		}

		c, err := s.Download(ctx, otherServer, "doc", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); !bytes.Equal(got, doc) || c.ContentType != "text/plain" || c.Size != int64(len(doc)) {
			t.Fatalf("first download: %q %s %d", got, c.ContentType, c.Size)
		}
		if c.Disposition != `inline; filename="minutes.txt"` {
			t.Fatalf("disposition %s", c.Disposition)
		}
		// Again, also in another case of the server name and local-only:
		// from the cache.
		for _, cx := range []context.Context{ctx, LocalOnly(ctx)} {
			c, err = s.Download(cx, "OTHER.test", "doc", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, c); !bytes.Equal(got, doc) {
				t.Fatalf("cached download: %q", got)
			}
		}
		if n := fr.calls.Load(); n != 1 {
			t.Fatalf("%d fetches, want 1", n)
		}

		// A thumbnail of a remote image is made here from the original.
		th, err := s.Thumbnail(ctx, otherServer, "img", ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, th); len(b) == 0 || th.ContentType != "image/jpeg" {
			t.Fatalf("thumbnail %s %d bytes", th.ContentType, len(b))
		}
		c, err = s.Download(ctx, otherServer, "img", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); !bytes.Equal(got, img) {
			t.Fatal("image differs")
		}
		if n := fr.calls.Load(); n != 2 {
			t.Fatalf("%d fetches, want 2", n)
		}
		if n := remoteRows(t, db); n != 2 {
			t.Fatalf("%d cached rows", n)
		}

		// last_access_ts moves at most hourly.
		r0, _ := selectRemote(ctx, db, otherServer, "doc")
		clock.add(30 * time.Minute)
		_, _ = s.Download(ctx, otherServer, "doc", "", 0)
		r1, _ := selectRemote(ctx, db, otherServer, "doc")
		clock.add(time.Hour)
		_, _ = s.Download(ctx, otherServer, "doc", "", 0)
		r2, _ := selectRemote(ctx, db, otherServer, "doc")
		if r1.LastAccessTS != r0.LastAccessTS || r2.LastAccessTS != clock.now().UnixMilli() {
			t.Fatalf("last access %d %d %d", r0.LastAccessTS, r1.LastAccessTS, r2.LastAccessTS)
		}

		// The file lost: fetched again.
		s.files.remove(r0.SHA256)
		c, err = s.Download(ctx, otherServer, "doc", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); !bytes.Equal(got, doc) || fr.calls.Load() != 3 {
			t.Fatalf("refetch: %q after %d fetches", got, fr.calls.Load())
		}
	})
}

// TestRemoteMediaSingleFlight: concurrent first downloads fetch once.
func TestRemoteMediaSingleFlight(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, fr, _ := remoteService(t, db, Options{})
		data := bytes.Repeat([]byte("x"), 100<<10)
		fr.put(otherServer, "big", remoteFile{data: data, contentType: "application/octet-stream"})
		fr.gate = make(chan struct{})
		const n = 8
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := s.Download(ctx, otherServer, "big", "", 0)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				b, err := io.ReadAll(c.Body)
				if err == nil && !bytes.Equal(b, data) {
					err = errors.New("content differs")
				}
				errs <- err
			}()
		}
		// Every request is waiting on the one fetch before it may go on.
		waitFor(t, "the first fetch", func() bool { return fr.calls.Load() == 1 })
		waitFor(t, "the requests to wait", func() bool {
			s.flights.mu.Lock()
			defer s.flights.mu.Unlock()
			return len(s.flights.run) == 1
		})
		close(fr.gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if c := fr.calls.Load(); c != 1 {
			t.Fatalf("%d fetches, want 1", c)
		}
		// A request that gives up does not abort the fetch for the others.
		fr.gate = make(chan struct{})
		fr.put(otherServer, "slow", remoteFile{data: []byte("slow"), contentType: "text/plain"})
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := s.Download(cctx, otherServer, "slow", "", 0); done <- err }()
		waitFor(t, "the fetch", func() bool { return fr.calls.Load() == 2 })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled download: %v", err)
		}
		close(fr.gate)
		waitFor(t, "the fetch to finish", func() bool { return remoteRows(t, db) == 2 })
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRemoteMediaErrors: what cannot be fetched whole is neither served
// nor kept, and every failure is a Matrix error.
func TestRemoteMediaErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, fr, _ := remoteService(t, db, Options{MaxUploadBytes: 1000})
		fr.put("denied.test", "x", remoteFile{data: []byte("x")})
		fr.put(otherServer, "huge", remoteFile{data: make([]byte, 1001)})
		fr.put(otherServer, "hugedeclared", remoteFile{data: make([]byte, 10), declared: 5000})
		fr.put(otherServer, "short", remoteFile{data: make([]byte, 100), declared: 200})
		fr.put(otherServer, "broken", remoteFile{data: make([]byte, 100), broken: true})
		fr.put(otherServer, "down", remoteFile{err: errors.New("connection refused")})
		fr.put(otherServer, "pending", remoteFile{err: merr.NotYetUploaded("not yet")})

		_, err := s.Download(ctx, "denied.test", "x", "", 0)
		wantErr(t, "not allowed", err, 403, "M_FORBIDDEN")
		if fr.calls.Load() != 0 {
			t.Fatal("a server outside the allowlist was asked")
		}
		for _, tc := range []struct {
			server, id string
			status     int
			code       string
		}{
			{otherServer, "missing", 404, "M_NOT_FOUND"},
			{otherServer, "huge", 502, "M_TOO_LARGE"},
			{otherServer, "hugedeclared", 502, "M_TOO_LARGE"},
			{otherServer, "short", 502, "M_UNKNOWN"},
			{otherServer, "broken", 502, "M_UNKNOWN"},
			{otherServer, "down", 502, "M_UNKNOWN"},
			{otherServer, "pending", 504, "M_NOT_YET_UPLOADED"},
			{otherServer, "bad/id", 404, "M_NOT_FOUND"},
			{"bad server", "x", 404, "M_NOT_FOUND"},
		} {
			_, err := s.Download(ctx, tc.server, tc.id, "", 0)
			wantErr(t, tc.id, err, tc.status, tc.code)
			_, err = s.Thumbnail(ctx, tc.server, tc.id, ThumbnailRequest{Width: 32, Height: 32, Method: Crop}, 0)
			wantErr(t, tc.id+" thumbnail", err, tc.status, tc.code)
		}
		if n := remoteRows(t, db); n != 0 {
			t.Fatalf("%d rows cached from failed fetches", n)
		}
		if files, tmp := contentFiles(t, s); files != 0 || tmp != 0 {
			t.Fatalf("%d files and %d temporary files left", files, tmp)
		}

		// Federation off: other servers' media is simply not found.
		off, _ := newTestService(t, db, Options{})
		_, err = off.Download(ctx, otherServer, "x", "", 0)
		wantErr(t, "federation off", err, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestPurgeRemoteCache: cached media not asked for since a time goes,
// with its thumbnails; what local media shares stays.
func TestPurgeRemoteCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, fr, clock := remoteService(t, db, Options{})
		shared := []byte("the same bytes here and there")
		img := makePNG(t, 400, 300, false)
		fr.put(otherServer, "shared", remoteFile{data: shared, contentType: "text/plain"})
		fr.put(otherServer, "img", remoteFile{data: img, contentType: "image/png"})
		fr.put(otherServer, "recent", remoteFile{data: []byte("asked for lately"), contentType: "text/plain"})
		mxc, err := s.UploadNew(ctx, "@alice:"+testServer, up(shared, "text/plain", "a.txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"shared", "img"} {
			c, err := s.Download(ctx, otherServer, id, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		th, err := s.Thumbnail(ctx, otherServer, "img", ThumbnailRequest{Width: 96, Height: 96, Method: Crop}, 0)
		if err != nil {
			t.Fatal(err)
		}
		th.Close()
		clock.add(2 * time.Hour)
		cutoff := clock.now()
		clock.add(time.Minute)
		c, err := s.Download(ctx, otherServer, "recent", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		filesBefore, _ := contentFiles(t, s)

		n, err := s.PurgeRemoteCache(ctx, cutoff)
		if err != nil || n != 2 {
			t.Fatalf("purged %d, %v; want 2", n, err)
		}
		if rows := remoteRows(t, db); rows != 1 {
			t.Fatalf("%d rows left, want 1", rows)
		}
		var thumbs int
		_ = db.QueryRow(ctx, `SELECT COUNT(*) FROM media_thumbnails`).Scan(&thumbs)
		if thumbs != 0 {
			t.Fatalf("%d thumbnail rows left", thumbs)
		}
		// The image and its thumbnails' files are gone; the shared file,
		// which a local upload uses, and the recent one stay.
		filesAfter, _ := contentFiles(t, s)
		if filesAfter != 2 || filesBefore <= filesAfter+1 {
			t.Fatalf("files %d before, %d after", filesBefore, filesAfter)
		}
		c, err = s.Download(ctx, testServer, mediaIDOf(t, mxc), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); !bytes.Equal(got, shared) {
			t.Fatal("local upload damaged by the purge")
		}
		// Purged media is fetched again when asked for.
		calls := fr.calls.Load()
		c, err = s.Download(ctx, otherServer, "img", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); !bytes.Equal(got, img) || fr.calls.Load() != calls+1 {
			t.Fatal("purged media not fetched again")
		}
		if n, err := s.PurgeRemoteCache(ctx, cutoff); err != nil || n != 0 {
			t.Fatalf("second purge: %d, %v", n, err)
		}
	})
}
