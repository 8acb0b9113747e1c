package roomserver

import (
	"context"
	"fmt"
	"sort"

	"github.com/haven-chat/haven/internal/ids"
)

// JoinedServers returns the server names of a room's joined members in
// its current state, each once and sorted (ours included when one of our
// users is joined): the servers that get the room's events.
func (s *Service) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM room_state
WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined servers of %s: %w", roomID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	out := []string{}
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return nil, fmt.Errorf("joined servers of %s: %w", roomID, err)
		}
		if srv := ids.ServerOf(userID, '@'); srv != "" && !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("joined servers of %s: %w", roomID, err)
	}
	sort.Strings(out)
	return out, nil
}
