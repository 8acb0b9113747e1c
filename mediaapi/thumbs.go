package mediaapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/storage"
)

// ThumbnailRequest is what a client asks of a thumbnail.
type ThumbnailRequest struct {
	Width, Height int
	Method        Method
	Animated      bool
}

// thumbResult is one made thumbnail (or the original, when it is small enough).
type thumbResult struct {
	Size     ThumbSize
	Animated bool // the cache key's animated flag
	// AlsoAnimated stores the same row under animated=true as well (a still
	// image has no animated form).
	AlsoAnimated bool
	Row          thumbRow
	Data         []byte // nil when Row points at the original's file
}

func thumbError(err error) error {
	switch {
	case errors.Is(err, errTooManyPx):
		return merr.TooLarge("Content is too large to thumbnail")
	case errors.Is(err, errNotImage), errors.Is(err, errAnimatedWeb):
		return merr.Unknown("Cannot generate thumbnails for the requested content")
	}
	return err
}

// Thumbnail returns a thumbnail of local media, made on the first request
// for its size and kept. The standard sizes are made together.
func (s *Service) Thumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, wait time.Duration) (*Content, error) {
	if req.Width < 1 || req.Height < 1 {
		return nil, merr.InvalidParam("width and height must be positive integers")
	}
	if req.Method != Crop && req.Method != Scale {
		return nil, merr.InvalidParam("method must be crop or scale")
	}
	m, err := s.lookup(ctx, serverName, mediaID, wait)
	if err != nil {
		return nil, err
	}
	size, standard := pickSize(req.Width, req.Height, req.Method)
	if c, err := s.cachedThumb(ctx, m, size, req.Animated); c != nil || err != nil {
		if c != nil {
			metrics.Hit("media_thumbnails")
		}
		return c, err
	}
	metrics.Miss("media_thumbnails")
	// One run per content at a time: concurrent requests for a new image
	// wait for the first one and then find its result.
	unlock := s.thumbLock.Lock(m.SHA256)
	defer unlock()
	if c, err := s.cachedThumb(ctx, m, size, req.Animated); c != nil || err != nil {
		return c, err
	}
	select {
	case s.thumbSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	results, err := s.makeThumbs(ctx, m, size, standard, req.Animated)
	<-s.thumbSem
	if errors.Is(err, errAnimatedWeb) {
		// Animated WebP cannot be decoded here: the client gets the
		// original, which it can show (and animate) itself.
		return s.thumbContent(ctx, thumbRow{ContentType: "image/webp", ThumbSHA256: m.SHA256, Size: m.Size})
	}
	if err != nil {
		return nil, thumbError(err)
	}
	var want *thumbResult
	for i := range results {
		r := &results[i]
		if r.Size == size && (r.Animated == req.Animated || r.AlsoAnimated && req.Animated) {
			want = r
		}
		if !standard {
			// Other sizes are not kept: any client could otherwise fill the
			// disk with variants.
			continue
		}
		if err := s.storeThumb(ctx, m.SHA256, r); err != nil {
			return nil, err
		}
	}
	if want == nil {
		return nil, merr.Unknown("Cannot generate thumbnails for the requested content")
	}
	if want.Data != nil {
		c := thumbContentInfo(want.Row.ContentType)
		c.Size, c.Body = int64(len(want.Data)), bytes.NewReader(want.Data)
		return c, nil
	}
	return s.thumbContent(ctx, want.Row)
}

// thumbContentInfo is the metadata of a thumbnail of a content type.
func thumbContentInfo(contentType string) *Content {
	name := "thumbnail.png"
	switch contentType {
	case "image/jpeg":
		name = "thumbnail.jpg"
	case "image/gif":
		name = "thumbnail.gif"
	case "image/webp":
		name = "thumbnail.webp"
	}
	return &Content{
		ContentType: contentType,
		Disposition: DispositionWithName("inline", name),
		Modified:    time.Unix(0, 0),
	}
}

// cachedThumb returns the stored thumbnail, or nil when there is none yet.
func (s *Service) cachedThumb(ctx context.Context, m Media, size ThumbSize, animated bool) (*Content, error) {
	row, err := selectThumb(ctx, s.db, m.SHA256, size, animated)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f, err := s.files.open(row.ThumbSHA256)
	if err != nil {
		// The file is gone (a restored backup without thumbnails): make it
		// again; the same bytes get the same name, so the row fits again.
		logging.From(ctx).WithError(err).WithField("sha256", row.ThumbSHA256).Warn("media: thumbnail file missing, making it again")
		return nil, nil
	}
	c := thumbContentInfo(row.ContentType)
	c.Size, c.SHA256, c.Body, c.close = row.Size, row.ThumbSHA256, f, f.Close
	return c, nil
}

func (s *Service) thumbContent(ctx context.Context, row thumbRow) (*Content, error) {
	f, err := s.openContent(ctx, row.ThumbSHA256)
	if err != nil {
		return nil, err
	}
	c := thumbContentInfo(row.ContentType)
	c.Size, c.SHA256, c.Body, c.close = row.Size, row.ThumbSHA256, f, f.Close
	return c, nil
}

// makeThumbs decodes the media once and makes the thumbnails of the
// requested size (all standard sizes when it is one of them).
func (s *Service) makeThumbs(ctx context.Context, m Media, size ThumbSize, standard, animated bool) ([]thumbResult, error) {
	// The header first: most non-images and bombs are turned away without
	// reading the whole file.
	f, err := s.files.open(m.SHA256)
	if err == nil {
		err = precheck(bufio.NewReader(f), s.opts.MaxThumbnailPixels)
		f.Close()
		if errors.Is(err, errNotImage) || errors.Is(err, errTooManyPx) {
			return nil, err
		}
	}
	src, err := os.ReadFile(s.files.path(m.SHA256))
	if err != nil {
		logging.From(ctx).WithError(err).WithField("media_id", m.MediaID).Error("media: cannot read content to thumbnail")
		return nil, merr.NotFound("Media not found")
	}
	info, err := probe(src, s.opts.MaxThumbnailPixels)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	defer func() {
		logging.From(ctx).WithFields(map[string]any{"media_id": m.MediaID, "format": info.Format,
			"width": info.Width, "height": info.Height, "ms": time.Since(start).Milliseconds()}).Debug("media: thumbnails made")
	}()
	origType := "image/" + info.Format
	original := thumbRow{ContentType: origType, ThumbSHA256: m.SHA256, Size: m.Size}

	if info.Animated && animated {
		// An animated thumbnail of this one size.
		g := plan(info.Width, info.Height, size)
		if g.Original {
			return []thumbResult{{Size: size, Animated: true, Row: original}}, nil
		}
		if info.Format == "gif" && int64(info.Frames)*int64(info.Width)*int64(info.Height) <= s.opts.MaxThumbnailPixels {
			e, err := animatedGIF(src, info, size)
			if err != nil {
				return nil, err
			}
			return []thumbResult{{Size: size, Animated: true, Row: thumbRow{ContentType: e.ContentType}, Data: e.Data}}, nil
		}
		// Too many frames to animate: the first frame, below.
	}
	if info.Format == "webp" && info.Animated {
		return nil, errAnimatedWeb
	}
	sizes := []ThumbSize{size}
	if standard {
		sizes = StandardSizes
	}
	var out []thumbResult
	var todo []ThumbSize
	var todoIdx []int
	for _, t := range sizes {
		g := plan(info.Width, info.Height, t)
		r := thumbResult{Size: t, Animated: animated && info.Animated}
		if g.Original && !info.Animated {
			r.Row = original
		} else {
			todo = append(todo, t)
			todoIdx = append(todoIdx, len(out))
		}
		out = append(out, r)
	}
	if len(todo) > 0 {
		img, err := decodeStill(src, info)
		if err != nil {
			return nil, err
		}
		enc, err := stillThumbs(img, info, todo)
		if err != nil {
			return nil, err
		}
		for i, e := range enc {
			r := &out[todoIdx[i]]
			r.Row = thumbRow{ContentType: e.ContentType}
			r.Data = e.Data
		}
	}
	if !info.Animated {
		for i := range out {
			out[i].AlsoAnimated = true
		}
	}
	return out, nil
}

// storeThumb writes a thumbnail's file (if it has its own) and its row.
func (s *Service) storeThumb(ctx context.Context, hash string, r *thumbResult) error {
	now := s.opts.Now().UnixMilli()
	insert := func(tx *storage.Tx) error {
		if err := insertThumb(ctx, tx, hash, r.Size, r.Animated, r.Row, now); err != nil {
			return err
		}
		if r.AlsoAnimated && !r.Animated {
			return insertThumb(ctx, tx, hash, r.Size, true, r.Row, now)
		}
		return nil
	}
	if r.Data == nil {
		return s.db.Write(ctx, insert)
	}
	st, err := s.files.writeBytes(r.Data)
	if err != nil {
		return err
	}
	r.Row.ThumbSHA256, r.Row.Size = st.Hash, st.Size
	unlock := s.hashLock.Lock(st.Hash)
	defer unlock()
	if _, err := s.files.commit(st); err != nil {
		return err
	}
	r.Data = nil // the row now points at the file
	return s.db.Write(ctx, insert)
}
