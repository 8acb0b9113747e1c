package roomserver

import (
	"context"
	"fmt"
)

// AvatarMedia lists the media IDs of this server's media that rooms have
// as their current avatar (the admin API's media clean-up keeps them).
func (s *Service) AvatarMedia(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT e.json FROM room_state rs JOIN events e ON e.event_id = rs.event_id
WHERE rs.type = 'm.room.avatar' AND rs.state_key = ''`)
	if err != nil {
		return nil, fmt.Errorf("room avatars: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		for _, m := range mxcPattern.FindAllStringSubmatch(raw, -1) {
			if m[1] == s.opts.ServerName {
				out = append(out, m[2])
			}
		}
	}
	return out, rows.Err()
}
