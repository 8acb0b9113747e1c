package roomserver

import (
	"context"
	"fmt"
)

// RoomCounts are the figures of rooms for the metrics.
type RoomCounts struct {
	// Total counts the rooms this server knows; Local those with at least
	// one joined local member.
	Total, Local int64
}

// CountRooms reads RoomCounts with two queries; metrics call it about once
// a minute, never per scrape.
func (s *Service) CountRooms(ctx context.Context) (RoomCounts, error) {
	var c RoomCounts
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM rooms`).Scan(&c.Total); err != nil {
		return c, fmt.Errorf("count rooms: %w", err)
	}
	// A server name has no "%" or "_" (letters, digits, "-", ".", ":" and
	// IPv6 brackets), so it is a LIKE pattern as it is.
	err := s.db.QueryRow(ctx, `SELECT COUNT(DISTINCT room_id) FROM room_state
WHERE type = 'm.room.member' AND membership = 'join' AND state_key LIKE $1`, "%:"+string(s.serverName)).Scan(&c.Local)
	if err != nil {
		return c, fmt.Errorf("count rooms with local members: %w", err)
	}
	return c, nil
}
