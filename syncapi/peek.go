package syncapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// Peeking (MSC2753): a device follows a world-readable room in /sync,
// under rooms.peek, without joining it. Peeks are stored (table peeks) and
// kept in the Notifier, which wakes a room's peekers as it wakes its
// members. A peek ends with POST /unpeek, when the user joins the room
// (the room moves to rooms.join), or when the room stops being
// world-readable (the device then sees nothing more of it).

// TopicPeeks carries peeks started and ended, in the order of the peeks
// stream's positions.
const TopicPeeks = "peeks"

type peekNotice struct {
	UserID   string `json:"user_id,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	RoomID   string `json:"room_id,omitempty"`
	// Start is the events position the peek started at; 0 ends it.
	Start int64 `json:"start,omitempty"`
	// Pos is the position in the peeks stream; a notice with no user is a
	// position at which nothing was written.
	Pos int64 `json:"pos"`
}

// Peek starts a device's peek into a room, which must be world-readable
// now. Peeking again into a room already peeked into changes nothing.
func (s *Service) Peek(ctx context.Context, userID, deviceID, roomID string) error {
	if !validRoom(roomID) {
		return merr.InvalidParam("Invalid room ID")
	}
	s.CatchUp(ctx)
	readable, err := s.worldReadable(ctx, roomID)
	if err != nil {
		return err
	}
	if !readable {
		return merr.Forbidden("Only world-readable rooms can be peeked into")
	}
	if s.n.Peeking(userID, deviceID, roomID) {
		return nil
	}
	start := s.n.Current().Events
	return s.writePeek(ctx, peekNotice{UserID: userID, DeviceID: deviceID, RoomID: roomID, Start: start}, func(pos int64) error {
		_, err := s.db.Exec(ctx, `INSERT INTO peeks (user_id, device_id, room_id, start_pos, pos) VALUES ($1,$2,$3,$4,$5)
ON CONFLICT (user_id, device_id, room_id) DO UPDATE SET start_pos = excluded.start_pos, pos = excluded.pos`, userID, deviceID, roomID, start, pos)
		return err
	})
}

// Unpeek ends a device's peek; ending one there is not is no error.
func (s *Service) Unpeek(ctx context.Context, userID, deviceID, roomID string) error {
	if !s.n.Peeking(userID, deviceID, roomID) {
		return nil
	}
	return s.writePeek(ctx, peekNotice{UserID: userID, DeviceID: deviceID, RoomID: roomID}, func(int64) error {
		_, err := s.db.Exec(ctx, `DELETE FROM peeks WHERE user_id = $1 AND device_id = $2 AND room_id = $3`, userID, deviceID, roomID)
		return err
	})
}

// writePeek stores one change of the peeks table at the next position of
// the peeks stream and publishes it; the device's next sync sees it.
func (s *Service) writePeek(ctx context.Context, n peekNotice, write func(pos int64) error) error {
	n.Pos = s.peekSeq.Next()
	if err := write(n.Pos); err != nil {
		s.peekSeq.Skip(n.Pos)
		return fmt.Errorf("store peek: %w", err)
	}
	s.peekSeq.Done(n.Pos, n)
	s.CatchUp(ctx)
	return nil
}

func (s *Service) onPeek(data []byte) {
	var n peekNotice
	if err := json.Unmarshal(data, &n); err != nil {
		logging.From(context.Background()).WithError(err).Error("bad peek notice")
		return
	}
	if n.UserID == "" {
		s.n.Skipped(Pos{Peeks: n.Pos})
		return
	}
	s.n.OnPeek(n.UserID, n.DeviceID, n.RoomID, n.Start, n.Pos)
}

// loadPeeks seeds the Notifier with the stored peeks at start, and
// returns the peeks stream's position.
func (s *Service) loadPeeks(ctx context.Context) (int64, error) {
	rows, err := s.db.Query(ctx, `SELECT user_id, device_id, room_id, start_pos, pos FROM peeks`)
	if err != nil {
		return 0, fmt.Errorf("load peeks: %w", err)
	}
	defer rows.Close()
	var last int64
	for rows.Next() {
		var n peekNotice
		if err := rows.Scan(&n.UserID, &n.DeviceID, &n.RoomID, &n.Start, &n.Pos); err != nil {
			return 0, err
		}
		s.n.OnPeek(n.UserID, n.DeviceID, n.RoomID, n.Start, n.Pos)
		last = max(last, n.Pos)
	}
	return last, rows.Err()
}

// worldReadable tells whether the room's current history visibility is
// world_readable (an unknown room is not).
func (s *Service) worldReadable(ctx context.Context, roomID string) (bool, error) {
	readable, err := s.worldReadableRooms(ctx, []string{roomID})
	return readable[roomID], err
}
