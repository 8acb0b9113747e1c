package syncapi

import (
	"context"
	"fmt"
	"strings"
)

// bumpTypes are the event types that move a room up a sliding sync list
// (MSC4186's bump_stamp): its creation and what people write in it, not
// state changes such as a topic or a power level. A user's own membership
// changes move the room too (an invite, a join: slidingEntry takes the
// later of the two positions).
var bumpTypes = []string{
	"m.room.create",
	"m.room.message",
	"m.room.encrypted",
	"m.sticker",
	"m.call.invite",
	"m.poll.start",
	"m.beacon_info",
}

// slidingBumps tells whether an event of this type moves its room up.
func slidingBumps(typ string) bool {
	for _, t := range bumpTypes {
		if t == typ {
			return true
		}
	}
	return false
}

// loadBumps seeds the notifier with every room's latest bump event.
func (s *Service) loadBumps(ctx context.Context) error {
	// The types are constants of this file: safe to write into the text.
	rows, err := s.db.Query(ctx, `SELECT room_id, MAX(pos) FROM events WHERE type IN ('`+strings.Join(bumpTypes, "', '")+`') GROUP BY room_id`)
	if err != nil {
		return fmt.Errorf("rooms' latest bump events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room string
		var pos int64
		if err := rows.Scan(&room, &pos); err != nil {
			return err
		}
		s.n.NoteBump(room, pos)
	}
	return rows.Err()
}
