package reports

import (
	"context"
	"fmt"
)

// PurgeRoomData drops the reports of a purged room's events: the events
// they point to are gone (adminapi/rooms calls it after the roomserver
// removed the room; the audit log keeps who reported and who deleted).
func (s *Store) PurgeRoomData(ctx context.Context, roomID string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM content_reports WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("purge reports of %s: %w", roomID, err)
	}
	return nil
}
