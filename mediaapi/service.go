package mediaapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Options configure the media service.
type Options struct {
	// ServerName is the server part of the mxc:// URIs this server hands out.
	ServerName string
	// Dir is the folder of the content files (data_dir/media).
	Dir string
	// MaxUploadBytes is the largest upload accepted.
	MaxUploadBytes int64
	// QuotaBytesPerUser caps the bytes a user may have uploaded; 0 is unlimited.
	QuotaBytesPerUser int64
	// MaxThumbnailPixels is the largest image (width × height) that is
	// thumbnailed; for an animated GIF, frames × width × height.
	MaxThumbnailPixels int64
	// MaxPendingUploads is how many created-but-not-uploaded IDs a user may hold.
	MaxPendingUploads int
	// ThumbnailWorkers is how many thumbnails are made at once.
	ThumbnailWorkers int
	// PendingExpiry is how long an ID from /create stays usable (24 hours).
	PendingExpiry time.Duration
	// Preview configures URL previews (preview.go).
	Preview PreviewOptions
	// Remote fetches other servers' media (nil with federation off: their
	// media is not found); RemoteAllowed, when set, is the federation
	// allowlist, checked before the cache and before any fetch.
	Remote        RemoteFetcher
	RemoteAllowed func(server string) bool
	// RemoteFetchTimeout bounds one fetch of remote media, transfer
	// included (5 minutes).
	RemoteFetchTimeout time.Duration
	// Now is the clock (tests set it).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.MaxUploadBytes <= 0 {
		o.MaxUploadBytes = 50 << 20
	}
	if o.MaxThumbnailPixels <= 0 {
		o.MaxThumbnailPixels = 50_000_000
	}
	if o.MaxPendingUploads <= 0 {
		o.MaxPendingUploads = 20
	}
	if o.ThumbnailWorkers <= 0 {
		o.ThumbnailWorkers = 2
	}
	if o.PendingExpiry <= 0 {
		o.PendingExpiry = 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RemoteFetchTimeout <= 0 {
		o.RemoteFetchTimeout = 5 * time.Minute
	}
}

// Service stores uploads, serves them and makes thumbnails.
type Service struct {
	opts  Options
	db    *storage.DB
	files *fileStore

	userLock  keyed.Mutex // per user: quota check and insert
	hashLock  keyed.Mutex // per content hash: file placed or removed, and its rows
	thumbLock keyed.Mutex // per content hash: one thumbnail run at a time
	thumbSem  chan struct{}

	waitMu  sync.Mutex
	waiters map[string]*waiter // pending media ID -> closed on upload

	preview *preview

	// Remote media: the fetches under way, the client that follows an
	// answer's Location, and the context the fetches run in (ended by Close).
	flights  flights
	location *http.Client
	base     context.Context
	cancel   context.CancelFunc

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New opens the media service; the folder is created if needed.
func New(ctx context.Context, db *storage.DB, opts Options) (*Service, error) {
	opts.defaults()
	if opts.ServerName == "" || opts.Dir == "" {
		return nil, errors.New("mediaapi: server name and folder are required")
	}
	fs, err := newFileStore(opts.Dir)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Service{
		opts:     opts,
		db:       db,
		files:    fs,
		thumbSem: make(chan struct{}, opts.ThumbnailWorkers),
		waiters:  map[string]*waiter{},
		preview:  newPreview(opts.Preview, opts.MaxUploadBytes),
		flights:  flights{run: map[string]*flight{}},
		location: previewClient(&PreviewOptions{Timeout: opts.RemoteFetchTimeout, Denied: opts.Preview.Denied, Allowed: opts.Preview.Allowed}),
		base:     base,
		cancel:   cancel,
	}, nil
}

// Start runs the sweeper that deletes lapsed pending IDs, hourly, until Close.
func (s *Service) Start(ctx context.Context) {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if err := s.SweepExpired(ctx); err != nil && ctx.Err() == nil {
				logging.From(ctx).WithError(err).Warn("media: sweeping lapsed upload IDs failed")
			}
			select {
			case <-t.C:
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
}

// Close stops the sweeper and the remote fetches under way.
func (s *Service) Close() {
	s.once.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
		s.cancel()
		s.flights.wg.Wait()
	})
}

// SweepExpired deletes pending IDs whose time ran out, and temporary files
// an interrupted process left behind (older than an hour; an upload may
// take at most 15 minutes).
func (s *Service) SweepExpired(ctx context.Context) error {
	s.files.sweepTmp(time.Now().Add(-time.Hour))
	now := s.opts.Now().UnixMilli()
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, deleteExpiredSQL, now)
		return err
	})
}

// MaxUploadBytes is the upload limit clients are told about.
func (s *Service) MaxUploadBytes() int64 { return s.opts.MaxUploadBytes }

// ServerName is the server part of local mxc:// URIs.
func (s *Service) ServerName() string { return s.opts.ServerName }

func (s *Service) mxc(mediaID string) string { return "mxc://" + s.opts.ServerName + "/" + mediaID }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 24 random characters of A-Z, a-z, 0-9 (about 143 bits).
func newMediaID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		// 256 = 4×62 + 8: the slight bias does not matter for an ID.
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

// Upload is what a client sends with an upload.
type Upload struct {
	Body io.Reader
	// ContentLength is the declared size, -1 when unknown.
	ContentLength int64
	ContentType   string
	Filename      string
}

func quotaError(quota int64) error {
	return merr.TooLarge("Upload refused: it would take you over your media quota of %d bytes", quota)
}

// check validates an upload's metadata and refuses, before reading it, one
// that is declared too large.
func (s *Service) check(ctx context.Context, userID string, up Upload) error {
	if up.Filename != "" && !ValidFilename(up.Filename) {
		return merr.InvalidParam("filename must be valid UTF-8 without control characters, at most %d bytes", MaxFilenameBytes)
	}
	if up.ContentLength > s.opts.MaxUploadBytes {
		return merr.TooLarge("Cannot upload files larger than %d bytes", s.opts.MaxUploadBytes)
	}
	if q := s.opts.QuotaBytesPerUser; q > 0 {
		used, err := userUsage(ctx, s.db, userID)
		if err != nil {
			return err
		}
		if used+max(up.ContentLength, 0) > q || (up.ContentLength < 0 && used >= q) {
			return quotaError(q)
		}
	}
	return nil
}

// readErrReader remembers an error of the request body, to tell a client
// that went away from a disk that failed.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// stage streams the body to a temporary file, refusing it once it passes
// the upload limit.
func (s *Service) stage(ctx context.Context, up Upload) (*staged, error) {
	rr := &readErrReader{r: up.Body}
	st, err := s.files.write(rr, s.opts.MaxUploadBytes)
	switch {
	case errors.Is(err, errTooBig):
		return nil, merr.TooLarge("Cannot upload files larger than %d bytes", s.opts.MaxUploadBytes)
	case err != nil && rr.err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, merr.Unknown("Could not read the upload body").Wrap(rr.err)
	case err != nil:
		return nil, err
	}
	return st, nil
}

// UploadNew stores a new upload and returns its mxc:// URI.
func (s *Service) UploadNew(ctx context.Context, userID string, up Upload) (string, error) {
	if err := s.check(ctx, userID, up); err != nil {
		return "", err
	}
	st, err := s.stage(ctx, up)
	if err != nil {
		return "", err
	}
	m := Media{
		MediaID:     newMediaID(),
		UserID:      userID,
		ContentType: NormalizeContentType(up.ContentType),
		Filename:    up.Filename,
		Size:        st.Size,
		SHA256:      st.Hash,
		CreatedTS:   s.opts.Now().UnixMilli(),
	}
	err = s.finish(ctx, st, m, func(tx *storage.Tx) error { return insertMedia(ctx, tx, m) })
	if err != nil {
		return "", err
	}
	logging.From(ctx).WithFields(map[string]any{"user_id": userID, "media_id": m.MediaID, "size": m.Size}).Debug("media uploaded")
	return s.mxc(m.MediaID), nil
}

// finish puts staged content under its name and then writes its row: the
// row exists only once the file is durable. When the row cannot be written
// a file this call created is removed again, unless something uses it.
func (s *Service) finish(ctx context.Context, st *staged, m Media, write func(tx *storage.Tx) error) error {
	// Media the server stores for itself (URL preview images) has no user
	// and counts against no quota.
	quota := s.opts.QuotaBytesPerUser
	if m.UserID == "" {
		quota = 0
	}
	if quota > 0 {
		unlock := s.userLock.Lock(m.UserID)
		defer unlock()
	}
	unlock := s.hashLock.Lock(st.Hash)
	defer unlock()
	created, err := s.files.commit(st)
	if err != nil {
		return err
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if q := quota; q > 0 {
			used, err := userUsage(ctx, tx, m.UserID)
			if err != nil {
				return err
			}
			if used+m.Size > q {
				return quotaError(q)
			}
		}
		return write(tx)
	})
	if err != nil && created {
		// Not the request's context: the cleanup must run even if it ended.
		if inUse, qerr := hashInUse(context.WithoutCancel(ctx), s.db, st.Hash); qerr == nil && !inUse {
			s.files.remove(st.Hash)
		}
	}
	return err
}

// Create makes a media ID whose content comes later (async upload).
func (s *Service) Create(ctx context.Context, userID string) (string, int64, error) {
	now := s.opts.Now()
	expires := now.Add(s.opts.PendingExpiry).UnixMilli()
	m := Media{MediaID: newMediaID(), UserID: userID, CreatedTS: now.UnixMilli(), ExpiresTS: expires}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, deleteUserExpiredSQL, userID, now.UnixMilli()); err != nil {
			return fmt.Errorf("delete lapsed media IDs of %s: %w", userID, err)
		}
		n, first, err := pendingCount(ctx, tx, userID, now.UnixMilli())
		if err != nil {
			return err
		}
		if n >= s.opts.MaxPendingUploads {
			wait := max(first-now.UnixMilli(), 1000)
			return merr.LimitExceeded(wait).Wrap(fmt.Errorf("%d pending uploads", n))
		}
		return insertMedia(ctx, tx, m)
	})
	if err != nil {
		return "", 0, err
	}
	return s.mxc(m.MediaID), expires, nil
}

// errCannotOverwrite is M_CANNOT_OVERWRITE_MEDIA.
func errCannotOverwrite() error {
	return merr.Custom(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
}

// UploadTo stores the content of an ID made by Create; only its creator may,
// and only once.
func (s *Service) UploadTo(ctx context.Context, userID, serverName, mediaID string, up Upload) error {
	if serverName != s.opts.ServerName || !ValidMediaID(mediaID) {
		return merr.NotFound("Unknown media ID")
	}
	m, err := selectMedia(ctx, s.db, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return merr.NotFound("Unknown media ID")
	}
	if err != nil {
		return err
	}
	now := s.opts.Now().UnixMilli()
	switch {
	case m.UserID != userID:
		return merr.Forbidden("This media ID was created by another user")
	case !m.Pending():
		return errCannotOverwrite()
	case m.ExpiresTS <= now:
		return merr.NotFound("This media ID has expired")
	}
	if err := s.check(ctx, userID, up); err != nil {
		return err
	}
	st, err := s.stage(ctx, up)
	if err != nil {
		return err
	}
	m.ContentType = NormalizeContentType(up.ContentType)
	m.Filename = up.Filename
	m.Size = st.Size
	m.SHA256 = st.Hash
	err = s.finish(ctx, st, m, func(tx *storage.Tx) error {
		ok, err := fillPending(ctx, tx, m, s.opts.Now().UnixMilli())
		if err != nil {
			return err
		}
		if !ok {
			// Uploaded (or lapsed) while this body was arriving.
			cur, err := selectMedia(ctx, tx, mediaID)
			if err == nil && !cur.Pending() {
				return errCannotOverwrite()
			}
			return merr.NotFound("This media ID has expired")
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.wake(mediaID)
	return nil
}

// waiter is the channel downloads waiting for one pending ID share.
type waiter struct {
	ch   chan struct{}
	refs int
}

// wake tells downloads waiting for a pending ID that its content is there.
func (s *Service) wake(mediaID string) {
	s.waitMu.Lock()
	if w, ok := s.waiters[mediaID]; ok {
		close(w.ch)
		delete(s.waiters, mediaID)
	}
	s.waitMu.Unlock()
}

// listen returns the channel closed when mediaID is uploaded; every listen
// is paired with a drop.
func (s *Service) listen(mediaID string) *waiter {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	w, ok := s.waiters[mediaID]
	if !ok {
		w = &waiter{ch: make(chan struct{})}
		s.waiters[mediaID] = w
	}
	w.refs++
	return w
}

// drop ends one wait; the last one out removes the channel.
func (s *Service) drop(mediaID string, w *waiter) {
	s.waitMu.Lock()
	w.refs--
	if cur, ok := s.waiters[mediaID]; ok && cur == w && w.refs <= 0 {
		delete(s.waiters, mediaID)
	}
	s.waitMu.Unlock()
}

// MaxWait caps how long a download waits for a pending upload.
const MaxWait = 60 * time.Second

// lookup finds uploaded media, waiting up to wait for a pending upload.
func (s *Service) lookup(ctx context.Context, serverName, mediaID string, wait time.Duration) (Media, error) {
	if serverName != s.opts.ServerName && !strings.EqualFold(serverName, s.opts.ServerName) {
		return s.remoteLookup(ctx, serverName, mediaID, wait)
	}
	if !ValidMediaID(mediaID) {
		return Media{}, merr.NotFound("Media not found")
	}
	wait = min(max(wait, 0), MaxWait)
	var timer *time.Timer
	for {
		m, err := selectMedia(ctx, s.db, mediaID)
		if errors.Is(err, storage.ErrNotFound) {
			return Media{}, merr.NotFound("Media not found")
		}
		if err != nil {
			return Media{}, err
		}
		if m.QuarantinedBy != "" {
			return Media{}, merr.NotFound("Media not found")
		}
		if !m.Pending() {
			return m, nil
		}
		if m.ExpiresTS <= s.opts.Now().UnixMilli() {
			return Media{}, merr.NotFound("Media not found")
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		}
		// Subscribe, then sample again, then wait.
		w := s.listen(mediaID)
		m, err = selectMedia(ctx, s.db, mediaID)
		if err == nil && !m.Pending() {
			s.drop(mediaID, w)
			if m.QuarantinedBy != "" {
				return Media{}, merr.NotFound("Media not found")
			}
			return m, nil
		}
		select {
		case <-w.ch:
			s.drop(mediaID, w)
			continue
		case <-timer.C:
			s.drop(mediaID, w)
			return Media{}, merr.NotYetUploaded("Content has not yet been uploaded")
		case <-ctx.Done():
			s.drop(mediaID, w)
			return Media{}, ctx.Err()
		}
	}
}

// Content is a file to serve: its metadata and an open file.
type Content struct {
	ContentType string
	// Disposition is the Content-Disposition header value.
	Disposition string
	Size        int64
	SHA256      string
	Modified    time.Time
	// Body is the content: an open file, or bytes made for this request.
	Body  io.ReadSeeker
	close func() error
}

// Close releases the content's file.
func (c *Content) Close() error {
	if c.close == nil {
		return nil
	}
	return c.close()
}

func (s *Service) openContent(ctx context.Context, hash string) (*os.File, error) {
	f, err := s.files.open(hash)
	if err != nil {
		logging.From(ctx).WithError(err).WithField("sha256", hash).Error("media: content file is missing")
		return nil, merr.NotFound("Media not found")
	}
	return f, nil
}

// Download opens local media for download. fileName, when not empty,
// replaces the uploaded file name in Content-Disposition.
func (s *Service) Download(ctx context.Context, serverName, mediaID, fileName string, wait time.Duration) (*Content, error) {
	m, err := s.lookup(ctx, serverName, mediaID, wait)
	if err != nil {
		return nil, err
	}
	f, err := s.openContent(ctx, m.SHA256)
	if err != nil {
		return nil, err
	}
	name := m.Filename
	if fileName != "" && ValidFilename(fileName) {
		name = fileName
	}
	ct := m.ContentType
	if ct == "" {
		ct = DefaultContentType
	}
	return &Content{
		ContentType: ct,
		Disposition: ContentDisposition(ct, name),
		Size:        m.Size,
		SHA256:      m.SHA256,
		Modified:    time.UnixMilli(m.CreatedTS),
		Body:        f,
		close:       f.Close,
	}, nil
}
