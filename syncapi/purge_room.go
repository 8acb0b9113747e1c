package syncapi

import (
	"context"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// PurgeRoomData drops what the sync engine keeps of a purged room: its
// receipts, its peeks and who is typing in it (adminapi/rooms calls it
// after the roomserver removed the room).
func (s *Service) PurgeRoomData(ctx context.Context, roomID string) error {
	s.typing.Forget(roomID)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, table := range []string{"receipts", "peeks"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE room_id = $1`, roomID); err != nil {
				return fmt.Errorf("purge %s of %s: %w", table, roomID, err)
			}
		}
		return nil
	})
}
