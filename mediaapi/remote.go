package mediaapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/storage"
)

// RemoteMedia is another server's answer for one of its media IDs: the
// content as a stream, or (Body nil) a URL where it can be had.
type RemoteMedia struct {
	ContentType string
	// Filename is the name the other server gives, from its
	// Content-Disposition ("" when none).
	Filename string
	// Size is the declared size, -1 when not declared.
	Size int64
	// Body is the content; the receiver closes it.
	Body io.ReadCloser
	// Location, when Body is nil, is an http(s) URL of the content.
	Location string
}

// RemoteFetcher fetches another server's media over federation
// (federationapi.MediaFetcher). Its errors are Matrix errors: 404 for
// media the other server does not have, 403 for a server federation is
// not allowed with, 502 when it cannot be reached or answers nonsense, 504
// M_NOT_YET_UPLOADED when its upload is still pending after wait.
type RemoteFetcher interface {
	FetchMedia(ctx context.Context, server, mediaID string, wait time.Duration) (*RemoteMedia, error)
}

// touchEvery is how stale a cached media's last_access_ts may become
// before a download writes it again (one write per media an hour at most).
const touchEvery = time.Hour

// localOnlyKey marks a request that may not fetch from other servers.
type localOnlyKey struct{}

// LocalOnly marks ctx so that media of other servers is answered only from
// the cache, never fetched (allow_remote=false of the legacy endpoints, as
// a server asking on behalf of another one sends).
func LocalOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, localOnlyKey{}, true)
}

func localOnly(ctx context.Context) bool {
	v, _ := ctx.Value(localOnlyKey{}).(bool)
	return v
}

// flight is one fetch of a remote media, shared by every request for it
// that arrives while it runs.
type flight struct {
	done chan struct{}
	m    Media
	err  error
}

// flights is the set of running fetches, by origin and media ID.
type flights struct {
	mu  sync.Mutex
	run map[string]*flight
	wg  sync.WaitGroup
}

// remoteLookup finds media of another server: from the cache, else
// fetched once over federation.
func (s *Service) remoteLookup(ctx context.Context, origin, mediaID string, wait time.Duration) (Media, error) {
	if s.opts.Remote == nil {
		return Media{}, merr.NotFound("Media not found (federation is off: media of other servers is not available)")
	}
	if !ValidMediaID(mediaID) || !ids.ValidServerName(origin) {
		return Media{}, merr.NotFound("Media not found")
	}
	// Server names are DNS names: one cache entry whatever the case.
	origin = strings.ToLower(origin)
	if s.opts.RemoteAllowed != nil && !s.opts.RemoteAllowed(origin) {
		return Media{}, merr.Forbidden("Federation with %s is not allowed on this server", origin)
	}
	r, err := selectRemote(ctx, s.db, origin, mediaID)
	switch {
	case err == nil && s.files.exists(r.SHA256, r.Size):
		metrics.Hit("remote_media")
		s.touch(ctx, r)
		return r.media(), nil
	case err == nil:
		// The file is gone (a restored backup without the cache): fetch again.
		logging.From(ctx).WithFields(map[string]any{"origin": origin, "media_id": mediaID}).Warn("media: cached remote file missing, fetching it again")
	case !errors.Is(err, storage.ErrNotFound):
		return Media{}, err
	}
	metrics.Miss("remote_media")
	if localOnly(ctx) {
		return Media{}, merr.NotFound("Media not found (not cached here, and allow_remote is false)")
	}
	return s.fetchOnce(ctx, origin, mediaID, wait)
}

// touch records a download of cached media, at most hourly.
func (s *Service) touch(ctx context.Context, r remoteRow) {
	now := s.opts.Now()
	if now.Sub(time.UnixMilli(r.LastAccessTS)) < touchEvery {
		return
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error { return touchRemote(ctx, tx, r.Origin, r.MediaID, now.UnixMilli()) })
	if err != nil && ctx.Err() == nil {
		logging.From(ctx).WithError(err).WithField("media_id", r.MediaID).Warn("media: cannot record the access to cached media")
	}
}

// fetchOnce fetches a remote media, or waits for the fetch already under
// way. The fetch runs on its own, bounded by RemoteFetchTimeout: a client
// that gives up does not abort it for the others, and its result is kept.
func (s *Service) fetchOnce(ctx context.Context, origin, mediaID string, wait time.Duration) (Media, error) {
	key := origin + "/" + mediaID
	s.flights.mu.Lock()
	f, ok := s.flights.run[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		s.flights.run[key] = f
		s.flights.wg.Add(1)
		log := logging.From(ctx)
		go func() {
			defer s.flights.wg.Done()
			f.m, f.err = s.fetchRemote(logging.With(s.base, log), origin, mediaID, wait)
			s.flights.mu.Lock()
			delete(s.flights.run, key)
			s.flights.mu.Unlock()
			close(f.done)
		}()
	}
	s.flights.mu.Unlock()
	select {
	case <-f.done:
		return f.m, f.err
	case <-ctx.Done():
		return Media{}, ctx.Err()
	}
}

// fetchRemote fetches a remote media into the store and writes its row.
// The content goes to a temporary file, is counted against the upload
// limit as it arrives and checked against its declared size; only a
// complete file is put under its name, and only then is the row written.
func (s *Service) fetchRemote(ctx context.Context, origin, mediaID string, wait time.Duration) (Media, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RemoteFetchTimeout)
	defer cancel()
	log := logging.From(ctx).WithFields(map[string]any{"origin": origin, "media_id": mediaID})
	start := time.Now()
	rm, err := s.opts.Remote.FetchMedia(ctx, origin, mediaID, wait)
	if err != nil {
		log.WithError(err).Debug("media: remote fetch failed")
		return Media{}, remoteError(ctx, origin, err)
	}
	if rm.Body == nil && rm.Location != "" {
		if rm, err = s.followLocation(ctx, rm); err != nil {
			log.WithError(err).Debug("media: remote fetch failed")
			return Media{}, remoteError(ctx, origin, err)
		}
	}
	if rm.Body == nil {
		return Media{}, merr.BadGateway("%s answered no content", origin)
	}
	defer rm.Body.Close()
	if rm.Size > s.opts.MaxUploadBytes {
		return Media{}, remoteTooLarge(s.opts.MaxUploadBytes)
	}
	st, err := s.files.write(rm.Body, s.opts.MaxUploadBytes)
	if errors.Is(err, errTooBig) {
		return Media{}, remoteTooLarge(s.opts.MaxUploadBytes)
	}
	if err != nil {
		log.WithError(err).Warn("media: remote fetch broke off")
		return Media{}, remoteError(ctx, origin, err)
	}
	if rm.Size >= 0 && st.Size != rm.Size {
		s.files.discard(st)
		log.WithFields(map[string]any{"declared": rm.Size, "got": st.Size}).Warn("media: remote media shorter or longer than declared")
		return Media{}, merr.BadGateway("%s sent %d bytes of a %d-byte file", origin, st.Size, rm.Size)
	}
	now := s.opts.Now().UnixMilli()
	name := rm.Filename
	if !ValidFilename(name) {
		name = ""
	}
	r := remoteRow{Origin: origin, MediaID: mediaID, ContentType: NormalizeContentType(rm.ContentType), Filename: name,
		Size: st.Size, SHA256: st.Hash, CreatedTS: now, LastAccessTS: now}
	if err := s.finish(ctx, st, Media{}, func(tx *storage.Tx) error { return upsertRemote(ctx, tx, r) }); err != nil {
		return Media{}, err
	}
	log.WithFields(map[string]any{"size": r.Size, "ms": time.Since(start).Milliseconds()}).Debug("media: remote media fetched")
	return r.media(), nil
}

func remoteTooLarge(limit int64) error {
	return merr.Custom(http.StatusBadGateway, "M_TOO_LARGE", "The remote content is larger than this server's limit of %d bytes", limit).FromUpstream()
}

// remoteError turns a failed fetch into what the client sees: the
// fetcher's Matrix error, 504 when the time ran out, else 502.
func remoteError(ctx context.Context, origin string, err error) error {
	if _, ok := merr.As(err); ok {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return merr.UpstreamTimeout("Fetching the media from %s took too long", origin)
	}
	return merr.BadGateway("Could not fetch the media from %s", origin)
}

// followLocation fetches content another server points to (the Location
// part of its answer) with the URL preview's guarded client: no private or
// special addresses, no proxy.
func (s *Service) followLocation(ctx context.Context, rm *RemoteMedia) (*RemoteMedia, error) {
	u, err := url.Parse(rm.Location)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil {
		return nil, merr.BadGateway("The other server pointed to an unusable location")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, merr.BadGateway("The other server pointed to an unusable location")
	}
	req.Header.Set("User-Agent", "Haven (Matrix homeserver)")
	resp, err := s.location.Do(req)
	if err != nil {
		return nil, merr.BadGateway("Could not fetch the media from the location given: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, merr.NotFound("Media not found")
		}
		return nil, merr.BadGateway("The location given answered %d", resp.StatusCode)
	}
	ct := rm.ContentType
	if ct == "" {
		ct = resp.Header.Get("Content-Type")
	}
	return &RemoteMedia{ContentType: ct, Filename: rm.Filename, Size: resp.ContentLength, Body: resp.Body}, nil
}

// purgeBatch is how many cached media one purge transaction looks at.
const purgeBatch = 500

// PurgeRemoteCache deletes the cached media of other servers that nobody
// downloaded since before (they are fetched again when asked for), with
// their thumbnails; files that local media or other rows still use stay.
// It returns how many cached media were deleted. The admin API's
// POST /_synapse/admin/v1/purge_media_cache calls it.
func (s *Service) PurgeRemoteCache(ctx context.Context, before time.Time) (int, error) {
	cutoff := before.UnixMilli()
	deleted := 0
	for {
		rows, err := staleRemote(ctx, s.db, cutoff, purgeBatch)
		if err != nil {
			return deleted, err
		}
		for _, r := range rows {
			var gone bool
			err := s.db.Write(ctx, func(tx *storage.Tx) error {
				var err error
				gone, err = deleteRemote(ctx, tx, r.Origin, r.MediaID, cutoff)
				return err
			})
			if err != nil {
				return deleted, err
			}
			if !gone {
				continue
			}
			deleted++
			if err := s.dropContent(ctx, r.SHA256); err != nil {
				return deleted, err
			}
		}
		if len(rows) < purgeBatch {
			break
		}
	}
	logging.From(ctx).WithFields(map[string]any{"deleted": deleted, "before_ts": cutoff}).Info("media: remote media cache purged")
	return deleted, nil
}

// dropContent removes a content file that no media row uses any more,
// with its thumbnails (their rows, and their files unless used elsewhere).
func (s *Service) dropContent(ctx context.Context, hash string) error {
	unlockThumb := s.thumbLock.Lock(hash)
	defer unlockThumb()
	var thumbs []string
	unused := false
	unlock := s.hashLock.Lock(hash)
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		thumbs, unused = nil, false
		n, err := contentUses(ctx, tx, hash)
		if err != nil || n > 0 {
			return err
		}
		unused = true
		thumbs, err = deleteThumbsOf(ctx, tx, hash)
		return err
	})
	if err == nil && unused {
		s.files.remove(hash)
	}
	unlock()
	if err != nil {
		return err
	}
	for _, th := range thumbs {
		if th == hash {
			continue
		}
		unlock := s.hashLock.Lock(th)
		if inUse, err := hashInUse(ctx, s.db, th); err == nil && !inUse {
			s.files.remove(th)
		}
		unlock()
	}
	return nil
}
