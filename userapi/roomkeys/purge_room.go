package roomkeys

import (
	"context"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// PurgeRoomData drops the backed-up keys of a purged room from every
// user's backups (the events they decrypt are gone) and moves the etag of
// each backup that changed, so clients notice (adminapi/rooms calls it
// after the roomserver removed the room).
func (s *Service) PurgeRoomData(ctx context.Context, roomID string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		rows, err := tx.Query(ctx, `SELECT DISTINCT user_id, version FROM room_keys WHERE room_id = $1`, roomID)
		if err != nil {
			return fmt.Errorf("backups with keys of %s: %w", roomID, err)
		}
		type backup struct {
			user    string
			version int64
		}
		var changed []backup
		for rows.Next() {
			var b backup
			if err := rows.Scan(&b.user, &b.version); err != nil {
				rows.Close()
				return err
			}
			changed = append(changed, b)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM room_keys WHERE room_id = $1`, roomID); err != nil {
			return fmt.Errorf("purge keys of %s: %w", roomID, err)
		}
		for _, b := range changed {
			if _, err := tx.Exec(ctx, `UPDATE room_key_backups SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, b.user, b.version); err != nil {
				return fmt.Errorf("update etag of backup %d of %s: %w", b.version, b.user, err)
			}
		}
		return nil
	})
}
