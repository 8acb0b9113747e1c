package syncapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/haven-chat/haven/internal/merr"
)

// AdminMessages pages through a room's history for a server admin (GET
// /_synapse/admin/v1/rooms/{roomId}/messages): every event of the room,
// whatever its history visibility and whoever is in the room, with the
// parameters of /messages except that dir defaults to "f". A room this
// server has no events of answers 404.
func (s *Service) AdminMessages(ctx context.Context, req MessagesRequest) (*MessagesResponse, error) {
	o := req.Opts
	if o == nil {
		o = DefaultOpts()
	}
	if !validRoom(req.RoomID) {
		return nil, merr.InvalidParam("Invalid room ID")
	}
	switch req.Dir {
	case "", "f":
		req.Backwards = false
	case "b":
		req.Backwards = true
	default:
		return nil, merr.InvalidParam("dir must be b or f")
	}
	s.CatchUp(ctx)
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM events WHERE room_id = $1 LIMIT 1`, req.RoomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, merr.NotFound("Room not found")
	}
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", req.RoomID, err)
	}
	// No user: no ignore list, no transaction IDs, no membership notes.
	req.UserID, req.DeviceID = "", ""
	return s.messages(ctx, req, o, &visibility{current: "join", all: true})
}
