package mediaapi

import (
	"context"
	"fmt"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// SetProtected protects local media from quarantine and from the
// date-based clean-up (on), or lifts the protection. M_NOT_FOUND when the
// media ID does not exist.
func (s *Service) SetProtected(ctx context.Context, mediaID string, on bool) error {
	if !ValidMediaID(mediaID) {
		return merr.NotFound("Media not found")
	}
	res, err := s.db.Exec(ctx, `UPDATE media SET safe_from_quarantine = $1 WHERE media_id = $2`, on, mediaID)
	if err != nil {
		return fmt.Errorf("protect %s: %w", mediaID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return merr.NotFound("Media not found")
	}
	logging.From(ctx).WithFields(map[string]any{"media_id": mediaID, "protected": on}).Warn("media protection changed")
	return nil
}

// OldMedia selects the local media the date-based clean-up deletes:
// uploaded before BeforeTS (Unix ms; Haven keeps no last-access time, so
// the upload time stands for it), larger than SizeGT bytes, neither
// protected nor in Keep (media IDs still in use, such as avatars).
type OldMedia struct {
	BeforeTS int64
	SizeGT   int64
	Keep     map[string]bool
}

// DeleteOldMedia deletes the local media o selects and returns their IDs.
func (s *Service) DeleteOldMedia(ctx context.Context, o OldMedia) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT media_id FROM media WHERE sha256 <> '' AND created_ts < $1 AND size > $2
AND safe_from_quarantine = FALSE ORDER BY created_ts`, o.BeforeTS, o.SizeGT)
	if err != nil {
		return nil, fmt.Errorf("select old media: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		if !o.Keep[id] {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	deleted := []string{}
	for _, id := range ids {
		if err := s.DeleteMedia(ctx, id); err != nil {
			if merr.Is(err, "M_NOT_FOUND") { // deleted meanwhile
				continue
			}
			return deleted, err
		}
		deleted = append(deleted, id)
	}
	return deleted, nil
}
