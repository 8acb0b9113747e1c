package syncapi

import (
	"context"
	"fmt"
	"slices"
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
func slidingBumps(typ string) bool { return slices.Contains(bumpTypes, typ) }

// loadBumps seeds the notifier with every room's latest bump event. Per
// room, it walks the room's events back from the newest (events_room_pos)
// to the first of a bump type, which is most often the newest or nearly:
// the cost follows the number of rooms, not of events (a scan of all
// events for the types would read the whole table at every start).
func (s *Service) loadBumps(ctx context.Context) error {
	// The types are constants of this file: safe to write into the text.
	rows, err := s.db.Query(ctx, `SELECT room_id, COALESCE((SELECT e.pos FROM events e WHERE e.room_id = rooms.room_id
		AND e.type IN ('`+strings.Join(bumpTypes, "', '")+`') ORDER BY e.pos DESC LIMIT 1), 0) FROM rooms`)
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
		if pos > 0 {
			s.n.NoteBump(room, pos)
		}
	}
	return rows.Err()
}
