package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/haven-chat/haven/internal/ids"
)

// The joined memberships of two users in the same room.
const sharedJoins = `FROM room_state a JOIN room_state b ON b.room_id = a.room_id AND b.type = 'm.room.member' AND b.membership = 'join'
WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'`

// SharesRoomWithServer tells whether userID is joined to a room that a
// user of server is joined to as well (the device list of another
// server's user is followed while it shares a room with one of ours).
func (s *Service) SharesRoomWithServer(ctx context.Context, userID, server string) (bool, error) {
	var one int
	// Server names hold no LIKE wildcards ('%', '_' are not DNS or IP
	// characters), and a user ID's server is all after its first colon.
	err := s.db.QueryRow(ctx, `SELECT 1 `+sharedJoins+` AND b.state_key LIKE $2 LIMIT 1`, userID, "%:"+server).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rooms shared by %s with %s: %w", userID, server, err)
	}
	return true, nil
}

// ServersSharingWith returns the servers of the users joined to a room
// userID is joined to (userID's own included), each once, sorted: the
// servers told of the user's device list changes.
func (s *Service) ServersSharingWith(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT b.state_key `+sharedJoins, userID)
	if err != nil {
		return nil, fmt.Errorf("servers sharing a room with %s: %w", userID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	out := []string{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("servers sharing a room with %s: %w", userID, err)
		}
		if srv := ids.ServerOf(u, '@'); srv != "" && !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("servers sharing a room with %s: %w", userID, err)
	}
	sort.Strings(out)
	return out, nil
}

// JoinedUsers returns the user IDs of a room's joined members, sorted.
func (s *Service) JoinedUsers(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' ORDER BY state_key`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined users of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("joined users of %s: %w", roomID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// ProfileVisible tells whether viewer may see target's profile when
// profile look-ups are limited (profiles.limit_to_shared_rooms): they are
// joined to a room together, or target is joined to a room of the user
// directory (published in the room directory, or with the public join
// rule), where viewer could find them anyway.
func (s *Service) ProfileVisible(ctx context.Context, viewer, target string) (bool, error) {
	if viewer == target {
		return true, nil
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM room_state m WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'
AND (m.room_id IN (SELECT v.room_id FROM room_state v WHERE v.type = 'm.room.member' AND v.state_key = $2 AND v.membership = 'join')
  OR m.room_id IN (SELECT room_id FROM rooms WHERE published = $3)
  OR m.room_id IN (SELECT j.room_id FROM room_state j JOIN events e ON e.event_id = j.event_id
    WHERE j.state_key = '' AND j.type = 'm.room.join_rules' AND e.json LIKE '%"join_rule":"public"%'))
LIMIT 1`, target, viewer, true).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("profile of %s visible to %s: %w", target, viewer, err)
	}
	return true, nil
}
