package userapi

import (
	"context"
	"fmt"
	"strings"
)

// AvatarMedia lists the media IDs of this server's media that users have
// as their avatar (the admin API's media clean-up keeps them).
func (s *Service) AvatarMedia(ctx context.Context) ([]string, error) {
	prefix := "mxc://" + s.opts.ServerName + "/"
	rows, err := s.db.Query(ctx, `SELECT DISTINCT avatar_url FROM profiles WHERE avatar_url LIKE $1`, prefix+"%")
	if err != nil {
		return nil, fmt.Errorf("avatars: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, strings.TrimPrefix(u, prefix))
	}
	return out, rows.Err()
}
