package mediaapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// remoteRow is one cached media of another server (table remote_media).
type remoteRow struct {
	Origin       string
	MediaID      string
	ContentType  string
	Filename     string
	Size         int64
	SHA256       string
	CreatedTS    int64
	LastAccessTS int64
}

// media is the row as the download and thumbnail code sees media.
func (r remoteRow) media() Media {
	return Media{MediaID: r.MediaID, ContentType: r.ContentType, Filename: r.Filename,
		Size: r.Size, SHA256: r.SHA256, CreatedTS: r.CreatedTS}
}

const (
	selectRemoteSQL = `SELECT origin, media_id, content_type, filename, size, sha256, created_ts, last_access_ts
FROM remote_media WHERE origin = $1 AND media_id = $2`
	// A second fetch of the same media (its file was lost) replaces the row.
	upsertRemoteSQL = `INSERT INTO remote_media (origin, media_id, content_type, filename, size, sha256, created_ts, last_access_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (origin, media_id) DO UPDATE SET content_type = excluded.content_type, filename = excluded.filename,
size = excluded.size, sha256 = excluded.sha256, created_ts = excluded.created_ts, last_access_ts = excluded.last_access_ts`
	touchRemoteSQL = `UPDATE remote_media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2 AND last_access_ts < $3`
	// Oldest first, a batch at a time.
	staleRemoteSQL = `SELECT origin, media_id, sha256 FROM remote_media WHERE last_access_ts < $1
ORDER BY last_access_ts LIMIT $2`
	deleteRemoteSQL = `DELETE FROM remote_media WHERE origin = $1 AND media_id = $2 AND last_access_ts < $3`
	// contentUsesSQL counts the media rows (local and cached) of a content
	// hash, and the thumbnails of other originals that are this content.
	contentUsesSQL = `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM remote_media WHERE sha256 = $1)
 + (SELECT COUNT(*) FROM media_thumbnails WHERE thumb_sha256 = $1 AND sha256 <> $1)`
	deleteThumbsOfSQL = `DELETE FROM media_thumbnails WHERE sha256 = $1 RETURNING thumb_sha256`
)

func selectRemote(ctx context.Context, q storage.Querier, origin, mediaID string) (remoteRow, error) {
	var r remoteRow
	err := q.QueryRow(ctx, selectRemoteSQL, origin, mediaID).Scan(&r.Origin, &r.MediaID, &r.ContentType, &r.Filename,
		&r.Size, &r.SHA256, &r.CreatedTS, &r.LastAccessTS)
	if errors.Is(err, sql.ErrNoRows) {
		return remoteRow{}, storage.ErrNotFound
	}
	if err != nil {
		return remoteRow{}, fmt.Errorf("select remote media %s/%s: %w", origin, mediaID, err)
	}
	return r, nil
}

func upsertRemote(ctx context.Context, q storage.Querier, r remoteRow) error {
	_, err := q.Exec(ctx, upsertRemoteSQL, r.Origin, r.MediaID, r.ContentType, r.Filename, r.Size, r.SHA256, r.CreatedTS, r.LastAccessTS)
	if err != nil {
		return fmt.Errorf("insert remote media %s/%s: %w", r.Origin, r.MediaID, err)
	}
	return nil
}

func touchRemote(ctx context.Context, q storage.Querier, origin, mediaID string, now int64) error {
	if _, err := q.Exec(ctx, touchRemoteSQL, origin, mediaID, now); err != nil {
		return fmt.Errorf("touch remote media %s/%s: %w", origin, mediaID, err)
	}
	return nil
}

// staleRemote lists up to limit cached media not asked for since before.
func staleRemote(ctx context.Context, q storage.Querier, before int64, limit int) ([]remoteRow, error) {
	rows, err := q.Query(ctx, staleRemoteSQL, before, limit)
	if err != nil {
		return nil, fmt.Errorf("select stale remote media: %w", err)
	}
	defer rows.Close()
	var out []remoteRow
	for rows.Next() {
		var r remoteRow
		if err := rows.Scan(&r.Origin, &r.MediaID, &r.SHA256); err != nil {
			return nil, fmt.Errorf("select stale remote media: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// deleteRemote deletes a cached media row unless it was asked for again
// since before; false when it was.
func deleteRemote(ctx context.Context, q storage.Querier, origin, mediaID string, before int64) (bool, error) {
	res, err := q.Exec(ctx, deleteRemoteSQL, origin, mediaID, before)
	if err != nil {
		return false, fmt.Errorf("delete remote media %s/%s: %w", origin, mediaID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("delete remote media %s/%s: %w", origin, mediaID, err)
	}
	return n == 1, nil
}

func contentUses(ctx context.Context, q storage.Querier, hash string) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, contentUsesSQL, hash).Scan(&n); err != nil {
		return 0, fmt.Errorf("uses of content %s: %w", hash, err)
	}
	return n, nil
}

// deleteThumbsOf deletes the thumbnail rows of an original and returns the
// content hashes they pointed at.
func deleteThumbsOf(ctx context.Context, q storage.Querier, hash string) ([]string, error) {
	rows, err := q.Query(ctx, deleteThumbsOfSQL, hash)
	if err != nil {
		return nil, fmt.Errorf("delete thumbnails of %s: %w", hash, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("delete thumbnails of %s: %w", hash, err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}
