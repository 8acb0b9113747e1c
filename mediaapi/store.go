package mediaapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// Media is the metadata of one media ID.
type Media struct {
	MediaID     string
	UserID      string
	ContentType string
	Filename    string
	Size        int64
	SHA256      string // "" while an async upload is pending
	CreatedTS   int64
	ExpiresTS   int64 // when a pending ID lapses; 0 once uploaded
	// QuarantinedBy is the admin who quarantined the media ("" if none):
	// quarantined media is never served.
	QuarantinedBy string
}

// Pending tells whether the media ID still waits for its content.
func (m Media) Pending() bool { return m.SHA256 == "" }

// thumbRow is one stored thumbnail of a content hash.
type thumbRow struct {
	ContentType string
	ThumbSHA256 string
	Size        int64
}

const (
	insertMediaSQL = `INSERT INTO media (media_id, user_id, content_type, filename, size, sha256, created_ts, expires_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	fillPendingSQL = `UPDATE media SET content_type = $3, filename = $4, size = $5, sha256 = $6, expires_ts = 0
WHERE media_id = $1 AND user_id = $2 AND sha256 = '' AND expires_ts > $7`
	selectMediaSQL = `SELECT media_id, user_id, content_type, filename, size, sha256, created_ts, expires_ts, quarantined_by
FROM media WHERE media_id = $1`
	userUsageSQL         = `SELECT COALESCE(SUM(size), 0) FROM media WHERE user_id = $1`
	pendingCountSQL      = `SELECT COUNT(*), COALESCE(MIN(expires_ts), 0) FROM media WHERE user_id = $1 AND sha256 = '' AND expires_ts > $2`
	deleteExpiredSQL     = `DELETE FROM media WHERE sha256 = '' AND expires_ts <= $1`
	deleteUserExpiredSQL = `DELETE FROM media WHERE user_id = $1 AND sha256 = '' AND expires_ts <= $2`
	hashInUseSQL         = `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE thumb_sha256 = $1) + (SELECT COUNT(*) FROM remote_media WHERE sha256 = $1)`
	selectThumbSQL       = `SELECT content_type, thumb_sha256, size FROM media_thumbnails
WHERE sha256 = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5`
	insertThumbSQL = `INSERT INTO media_thumbnails (sha256, width, height, method, animated, content_type, thumb_sha256, size, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (sha256, width, height, method, animated) DO NOTHING`
)

func insertMedia(ctx context.Context, q storage.Querier, m Media) error {
	_, err := q.Exec(ctx, insertMediaSQL, m.MediaID, m.UserID, m.ContentType, m.Filename, m.Size, m.SHA256, m.CreatedTS, m.ExpiresTS)
	if err != nil {
		return fmt.Errorf("insert media %s: %w", m.MediaID, err)
	}
	return nil
}

// fillPending stores the content of a pending media ID; false when the ID
// is not (or no longer) pending for that user.
func fillPending(ctx context.Context, q storage.Querier, m Media, now int64) (bool, error) {
	res, err := q.Exec(ctx, fillPendingSQL, m.MediaID, m.UserID, m.ContentType, m.Filename, m.Size, m.SHA256, now)
	if err != nil {
		return false, fmt.Errorf("fill media %s: %w", m.MediaID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("fill media %s: %w", m.MediaID, err)
	}
	return n == 1, nil
}

func selectMedia(ctx context.Context, q storage.Querier, mediaID string) (Media, error) {
	var m Media
	err := q.QueryRow(ctx, selectMediaSQL, mediaID).Scan(&m.MediaID, &m.UserID, &m.ContentType, &m.Filename, &m.Size, &m.SHA256, &m.CreatedTS, &m.ExpiresTS, &m.QuarantinedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Media{}, storage.ErrNotFound
	}
	if err != nil {
		return Media{}, fmt.Errorf("select media %s: %w", mediaID, err)
	}
	return m, nil
}

func userUsage(ctx context.Context, q storage.Querier, userID string) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, userUsageSQL, userID).Scan(&n); err != nil {
		return 0, fmt.Errorf("media usage of %s: %w", userID, err)
	}
	return n, nil
}

// pendingCount counts a user's unexpired pending IDs and the earliest expiry among them.
func pendingCount(ctx context.Context, q storage.Querier, userID string, now int64) (int, int64, error) {
	var n int
	var first int64
	if err := q.QueryRow(ctx, pendingCountSQL, userID, now).Scan(&n, &first); err != nil {
		return 0, 0, fmt.Errorf("pending media of %s: %w", userID, err)
	}
	return n, first, nil
}

func hashInUse(ctx context.Context, q storage.Querier, hash string) (bool, error) {
	var n int64
	if err := q.QueryRow(ctx, hashInUseSQL, hash).Scan(&n); err != nil {
		return true, fmt.Errorf("uses of content %s: %w", hash, err)
	}
	return n > 0, nil
}

func selectThumb(ctx context.Context, q storage.Querier, hash string, t ThumbSize, animated bool) (thumbRow, error) {
	var r thumbRow
	err := q.QueryRow(ctx, selectThumbSQL, hash, t.Width, t.Height, string(t.Method), animated).Scan(&r.ContentType, &r.ThumbSHA256, &r.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return thumbRow{}, storage.ErrNotFound
	}
	if err != nil {
		return thumbRow{}, fmt.Errorf("select thumbnail of %s: %w", hash, err)
	}
	return r, nil
}

func insertThumb(ctx context.Context, q storage.Querier, hash string, t ThumbSize, animated bool, r thumbRow, now int64) error {
	_, err := q.Exec(ctx, insertThumbSQL, hash, t.Width, t.Height, string(t.Method), animated, r.ContentType, r.ThumbSHA256, r.Size, now)
	if err != nil {
		return fmt.Errorf("insert thumbnail of %s: %w", hash, err)
	}
	return nil
}
