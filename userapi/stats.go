package userapi

import (
	"context"
	"fmt"
	"time"
)

// UserCounts are the figures of local accounts for the metrics.
type UserCounts struct {
	// Total counts every account; Active those not deactivated (guests
	// included); Deactivated and Guests (not deactivated) their parts.
	Total, Active, Deactivated, Guests int64
	// Daily and Monthly count the accounts with a device seen in the last
	// 24 hours and 30 days (devices.last_seen_ts, kept within
	// Options.SeenInterval of the truth; a device that was logged out no
	// longer counts).
	Daily, Monthly int64
}

// CountUsers reads UserCounts with two queries (one pass over accounts,
// one over devices); metrics call it about once a minute, never per scrape.
func (s *Service) CountUsers(ctx context.Context) (UserCounts, error) {
	var c UserCounts
	err := s.db.QueryRow(ctx, `SELECT COUNT(*),
COALESCE(SUM(CASE WHEN deactivated THEN 0 ELSE 1 END), 0),
COALESCE(SUM(CASE WHEN deactivated THEN 1 ELSE 0 END), 0),
COALESCE(SUM(CASE WHEN is_guest AND NOT deactivated THEN 1 ELSE 0 END), 0)
FROM accounts`).Scan(&c.Total, &c.Active, &c.Deactivated, &c.Guests)
	if err != nil {
		return c, fmt.Errorf("count accounts: %w", err)
	}
	now := s.now()
	day, month := now.Add(-24*time.Hour).UnixMilli(), now.Add(-30*24*time.Hour).UnixMilli()
	err = s.db.QueryRow(ctx, `SELECT
COUNT(DISTINCT CASE WHEN last_seen_ts >= $1 THEN user_id END),
COUNT(DISTINCT user_id)
FROM devices WHERE last_seen_ts >= $2`, day, month).Scan(&c.Daily, &c.Monthly)
	if err != nil {
		return c, fmt.Errorf("count active users: %w", err)
	}
	return c, nil
}
