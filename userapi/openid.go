package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// OpenIDTokenLifetime is how long an OpenID token identifies its user.
const OpenIDTokenLifetime = time.Hour

// NewOpenIDToken makes an OpenID token for the user: a third party (a
// widget, an integration manager) that is given it can learn the user's ID
// from OpenIDUser, and nothing else.
func (s *Service) NewOpenIDToken(ctx context.Context, userID string) (string, time.Duration, error) {
	token, hash, err := newToken(openIDTokenPrefix)
	if err != nil {
		return "", 0, err
	}
	now := s.now()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("delete expired openid tokens: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			hash, userID, now.Add(OpenIDTokenLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("insert openid token of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	return token, OpenIDTokenLifetime, nil
}

// OpenIDUser returns the user an OpenID token was made for, or 401
// M_UNKNOWN_TOKEN when it is unknown or expired.
func (s *Service) OpenIDUser(ctx context.Context, token string) (string, error) {
	var userID string
	err := s.db.QueryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		HashToken(token), s.now().UnixMilli()).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", merr.UnknownToken(false, "Unknown or expired OpenID token")
	}
	if err != nil {
		return "", fmt.Errorf("select openid token: %w", err)
	}
	return userID, nil
}
