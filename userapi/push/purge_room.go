package push

import (
	"context"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// PurgeRoomData drops the notifications and unread counts of a purged
// room: its later events (still on their way) are not evaluated, and the
// counts go from memory first so that no later checkpoint writes them back
// (adminapi/rooms calls it after the roomserver removed the room).
func (s *Service) PurgeRoomData(ctx context.Context, roomID string) error {
	// No evaluation runs while the room is marked: none adds to it after.
	s.evalMu.Lock()
	s.purged.Store(roomID, struct{}{})
	s.evalMu.Unlock()
	// Notifications of the room queued before are stored, then deleted.
	if err := s.w.flush(ctx); err != nil {
		return fmt.Errorf("purge notifications of %s: %w", roomID, err)
	}
	s.counts.dropRoom(roomID)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, table := range []string{"push_unread", "push_notified", "notifications"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE room_id = $1`, roomID); err != nil {
				return fmt.Errorf("purge %s of %s: %w", table, roomID, err)
			}
		}
		return nil
	})
}

// dropRoom forgets every user's unread notifications in the room.
func (c *counts) dropRoom(room string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for user, rooms := range c.byUser {
		if _, ok := rooms[room]; ok {
			delete(rooms, room)
			if len(rooms) == 0 {
				delete(c.byUser, user)
			}
		}
	}
	for k := range c.dirty {
		if k.room == room {
			delete(c.dirty, k)
		}
	}
}
