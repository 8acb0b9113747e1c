package userapi

import (
	"context"
	"fmt"
)

// PurgeRoomData drops the room account data (tags included) every user
// kept for a purged room (adminapi/rooms calls it after the roomserver
// removed the room).
func (s *Service) PurgeRoomData(ctx context.Context, roomID string) error {
	if roomID == "" { // '' is the global account data
		return nil
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM account_data WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("purge account data of %s: %w", roomID, err)
	}
	return nil
}
