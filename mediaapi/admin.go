package mediaapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// AdminMedia is one media ID as the admin API lists it (Synapse's fields).
type AdminMedia struct {
	MediaID            string  `json:"media_id"`
	MediaType          string  `json:"media_type"`
	MediaLength        int64   `json:"media_length"`
	UploadName         *string `json:"upload_name"`
	CreatedTS          int64   `json:"created_ts"`
	LastAccessTS       *int64  `json:"last_access_ts"`
	QuarantinedBy      *string `json:"quarantined_by"`
	SafeFromQuarantine bool    `json:"safe_from_quarantine"`
}

// MediaOrder is how a user's media is listed.
type MediaOrder struct {
	// By is a column: media_id, upload_name, created_ts, last_access_ts,
	// media_length, media_type, quarantined_by or safe_from_quarantine.
	By string
	// Backwards lists newest (largest) first.
	Backwards bool
}

// mediaOrderColumns maps the admin API's order_by names to columns.
// Haven keeps no last access time: it orders as created_ts.
var mediaOrderColumns = map[string]string{
	"":                     "created_ts",
	"media_id":             "media_id",
	"upload_name":          "filename",
	"created_ts":           "created_ts",
	"last_access_ts":       "created_ts",
	"media_length":         "size",
	"media_type":           "content_type",
	"quarantined_by":       "quarantined_by",
	"safe_from_quarantine": "safe_from_quarantine",
}

// ValidMediaOrder tells whether order_by names a known ordering.
func ValidMediaOrder(by string) bool {
	_, ok := mediaOrderColumns[by]
	return ok
}

// UserMedia lists a user's uploaded media (pending IDs left out), from an
// offset, at most limit, and how many there are in all.
func (s *Service) UserMedia(ctx context.Context, userID string, from, limit int, order MediaOrder) ([]AdminMedia, int64, error) {
	col, ok := mediaOrderColumns[order.By]
	if !ok {
		return nil, 0, merr.InvalidParam("Unknown order_by %q", order.By)
	}
	dir := "ASC"
	if order.Backwards {
		dir = "DESC"
	}
	var total int64
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 <> ''`, userID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count media of %s: %w", userID, err)
	}
	rows, err := s.db.Query(ctx, `SELECT media_id, content_type, size, filename, created_ts, quarantined_by, safe_from_quarantine FROM media
WHERE user_id = $1 AND sha256 <> '' ORDER BY `+col+` `+dir+`, media_id `+dir+` LIMIT $2 OFFSET $3`, userID, limit, from)
	if err != nil {
		return nil, 0, fmt.Errorf("list media of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []AdminMedia{}
	for rows.Next() {
		var m AdminMedia
		var name, q string
		if err := rows.Scan(&m.MediaID, &m.MediaType, &m.MediaLength, &name, &m.CreatedTS, &q, &m.SafeFromQuarantine); err != nil {
			return nil, 0, err
		}
		if name != "" {
			m.UploadName = &name
		}
		if q != "" {
			m.QuarantinedBy = &q
		}
		out = append(out, m)
	}
	return out, total, rows.Err()
}

// DeleteMedia deletes a local media ID: its row, and its file and
// thumbnails once no other media ID has the same content. M_NOT_FOUND
// when it does not exist.
func (s *Service) DeleteMedia(ctx context.Context, mediaID string) error {
	if !ValidMediaID(mediaID) {
		return merr.NotFound("Media not found")
	}
	m, err := selectMedia(ctx, s.db, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return merr.NotFound("Media not found")
	}
	if err != nil {
		return err
	}
	if m.SHA256 == "" {
		_, err := s.db.Exec(ctx, `DELETE FROM media WHERE media_id = $1`, mediaID)
		return err
	}
	unlock := s.hashLock.Lock(m.SHA256)
	defer unlock()
	var thumbs []string
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM media WHERE media_id = $1`, mediaID); err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE sha256 = $1`, m.SHA256).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		rows, err := tx.Query(ctx, `DELETE FROM media_thumbnails WHERE sha256 = $1 RETURNING thumb_sha256`, m.SHA256)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				return err
			}
			thumbs = append(thumbs, h)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("delete media %s: %w", mediaID, err)
	}
	for _, h := range append(thumbs, m.SHA256) {
		if h != m.SHA256 {
			unlockThumb := s.hashLock.Lock(h)
			s.removeUnused(ctx, h)
			unlockThumb()
			continue
		}
		s.removeUnused(ctx, h)
	}
	logging.From(ctx).WithFields(map[string]any{"media_id": mediaID, "user_id": m.UserID}).Warn("media deleted by an admin")
	return nil
}

// removeUnused removes a content file nothing refers to any more; the
// caller holds the hash's lock.
func (s *Service) removeUnused(ctx context.Context, hash string) {
	if inUse, err := hashInUse(ctx, s.db, hash); err == nil && !inUse {
		s.files.remove(hash)
	}
}

// SetQuarantined quarantines local media (by is the admin) or lifts the
// quarantine (by ""). M_NOT_FOUND when the media ID does not exist.
func (s *Service) SetQuarantined(ctx context.Context, mediaID, by string) error {
	if !ValidMediaID(mediaID) {
		return merr.NotFound("Media not found")
	}
	// Protected media is never quarantined (lifting a quarantine is
	// always allowed).
	res, err := s.db.Exec(ctx, `UPDATE media SET quarantined_by = $1 WHERE media_id = $2 AND ($1 = '' OR safe_from_quarantine = FALSE)`, by, mediaID)
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", mediaID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		if _, err := selectMedia(ctx, s.db, mediaID); errors.Is(err, storage.ErrNotFound) {
			return merr.NotFound("Media not found")
		} else if err != nil {
			return err
		}
		logging.From(ctx).WithField("media_id", mediaID).Info("protected media not quarantined")
		return nil
	}
	logging.From(ctx).WithFields(map[string]any{"media_id": mediaID, "by": by, "quarantined": by != ""}).Warn("media quarantine changed")
	return nil
}

// QuarantineMany quarantines those of the local media IDs that exist and
// are not quarantined yet, and tells how many that was.
func (s *Service) QuarantineMany(ctx context.Context, mediaIDs []string, by string) (int64, error) {
	var ids []string
	for _, id := range mediaIDs {
		if ValidMediaID(id) {
			ids = append(ids, id)
		}
	}
	var total int64
	for i := 0; i < len(ids); i += 500 {
		res, err := s.db.Exec(ctx, `UPDATE media SET quarantined_by = $1 WHERE quarantined_by = '' AND safe_from_quarantine = FALSE AND media_id IN ($2)`, by, ids[i:min(i+500, len(ids))])
		if err != nil {
			return total, fmt.Errorf("quarantine media: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// QuarantineUser quarantines every upload of a user.
func (s *Service) QuarantineUser(ctx context.Context, userID, by string) (int64, error) {
	res, err := s.db.Exec(ctx, `UPDATE media SET quarantined_by = $1 WHERE quarantined_by = '' AND safe_from_quarantine = FALSE AND user_id = $2`, by, userID)
	if err != nil {
		return 0, fmt.Errorf("quarantine media of %s: %w", userID, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
