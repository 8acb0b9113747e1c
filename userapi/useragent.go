package userapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/haven-chat/haven/storage"
)

type userAgentKey struct{}

// maxUserAgentBytes bounds the User-Agent kept of a device.
const maxUserAgentBytes = 512

// WithUserAgent records the client's User-Agent in a request context, so
// that a device signed in by the request keeps it (whois).
func WithUserAgent(ctx context.Context, ua string) context.Context {
	return context.WithValue(ctx, userAgentKey{}, ua)
}

// userAgentFrom is the request's User-Agent as stored: at most
// maxUserAgentBytes, "" when absent or not storable.
func userAgentFrom(ctx context.Context) string {
	ua, _ := ctx.Value(userAgentKey{}).(string)
	if len(ua) > maxUserAgentBytes {
		ua = strings.ToValidUTF8(ua[:maxUserAgentBytes], "")
	}
	if !storage.StorableText(ua) {
		return ""
	}
	return ua
}

// noteUserAgent stores the User-Agent of the request signing a device in.
func noteUserAgent(ctx context.Context, tx *storage.Tx, userID, deviceID string) error {
	ua := userAgentFrom(ctx)
	if ua == "" {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE devices SET user_agent = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ua); err != nil {
		return fmt.Errorf("store user agent of device %s %s: %w", userID, deviceID, err)
	}
	return nil
}

// DeviceUserAgents returns the User-Agent each of the user's devices
// signed in with, by device ID (devices without one are left out).
func (s *Service) DeviceUserAgents(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, user_agent FROM devices WHERE user_id = $1 AND user_agent <> ''`, userID)
	if err != nil {
		return nil, fmt.Errorf("user agents of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var d, ua string
		if err := rows.Scan(&d, &ua); err != nil {
			return nil, err
		}
		out[d] = ua
	}
	return out, rows.Err()
}
