package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// refreshTokenPrefix marks Haven's refresh tokens.
const refreshTokenPrefix = "hvr_"

// DefaultAccessTokenLifetime is how long an access token that comes with a
// refresh token lives when Options.AccessTokenLifetime is not set.
const DefaultAccessTokenLifetime = 5 * 60 * 1000 // ms

// tokenPair is a new access token and, when the client asked for one, a
// refresh token and the access token's expiry.
type tokenPair struct {
	access, accessHash   string
	refresh, refreshHash string
	expiresTS, lifetime  int64 // ms; 0 when the access token never expires
}

// newTokenPair adds, when refresh is asked for, a refresh token and an
// expiry to an access token.
func (s *Service) newTokenPair(access, accessHash string, refresh bool) (tokenPair, error) {
	tk := tokenPair{access: access, accessHash: accessHash}
	if !refresh {
		return tk, nil
	}
	var err error
	if tk.refresh, tk.refreshHash, err = newToken(refreshTokenPrefix); err != nil {
		return tk, err
	}
	tk.lifetime = s.opts.AccessTokenLifetime.Milliseconds()
	if tk.lifetime <= 0 {
		tk.lifetime = DefaultAccessTokenLifetime
	}
	tk.expiresTS = s.now().UnixMilli() + tk.lifetime
	return tk, nil
}

// expires is token_expires_ts: NULL for a token that never expires.
func (tk tokenPair) expires() any {
	if tk.expiresTS == 0 {
		return nil
	}
	return tk.expiresTS
}

// refreshHashArg is refresh_hash: NULL without a refresh token.
func (tk tokenPair) refreshHashArg() any { return nullable(tk.refreshHash) }

func (tk tokenPair) session(userID, deviceID string) Session {
	return Session{UserID: userID, DeviceID: deviceID, AccessToken: tk.access, RefreshToken: tk.refresh, ExpiresInMS: tk.lifetime}
}

func errUnknownRefresh() error {
	return merr.UnknownToken(false, "Unknown refresh token, or one already replaced")
}

// Refresh exchanges a refresh token for a new access token (which expires)
// and a new refresh token, bound to the same device. The device's access
// token before stops working at once. The refresh token used stays valid
// until the new access token or refresh token is first used, so that a
// client that lost the answer can refresh again; then it is revoked (the
// spec's rule). An unknown or revoked refresh token, or one of a
// deactivated account, is 401 M_UNKNOWN_TOKEN.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Session, error) {
	if refreshToken == "" {
		return Session{}, merr.MissingParam("Missing refresh_token")
	}
	h := HashToken(refreshToken)
	access, accessHash, err := newAccessToken()
	if err != nil {
		return Session{}, err
	}
	tk, err := s.newTokenPair(access, accessHash, true)
	if err != nil {
		return Session{}, err
	}
	var dev Device
	var oldAccess string
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		var current, old sql.NullString
		var deactivated bool
		err := tx.QueryRow(ctx, `SELECT d.user_id, d.device_id, COALESCE(d.display_name, ''), a.is_admin, a.deactivated, d.token_hash, d.refresh_hash, d.old_refresh_hash
FROM devices d JOIN accounts a ON a.user_id = d.user_id WHERE d.refresh_hash = $1 OR d.old_refresh_hash = $1`, h).
			Scan(&dev.UserID, &dev.DeviceID, &dev.DisplayName, &dev.IsAdmin, &deactivated, &oldAccess, &current, &old)
		if errors.Is(err, sql.ErrNoRows) {
			return errUnknownRefresh()
		}
		if err != nil {
			return fmt.Errorf("select device by refresh token: %w", err)
		}
		if deactivated {
			return errUnknownRefresh()
		}
		// The token used stays valid as the old one until the new tokens
		// are used. Using the current one revokes the one before it; using
		// the old one again (the answer was lost) revokes the unused
		// current one.
		if _, err := tx.Exec(ctx, `UPDATE devices SET token_hash = $3, token_expires_ts = $4, refresh_hash = $5, old_refresh_hash = $6
WHERE user_id = $1 AND device_id = $2`, dev.UserID, dev.DeviceID, tk.accessHash, tk.expiresTS, tk.refreshHash, h); err != nil {
			return fmt.Errorf("refresh tokens of device %s %s: %w", dev.UserID, dev.DeviceID, err)
		}
		return nil
	})
	if err != nil {
		return Session{}, err
	}
	s.revokeTokens(ctx, []string{oldAccess})
	dev.SessionID, dev.ExpiresTS, dev.oldRefresh = tk.accessHash, tk.expiresTS, true
	s.cacheToken(dev)
	s.audit(ctx, "refresh", logrus.Fields{"user_id": dev.UserID, "device_id": dev.DeviceID})
	return tk.session(dev.UserID, dev.DeviceID), nil
}

// firstUse revokes the device's previous refresh token when an access
// token made by a refresh is used for the first time.
func (s *Service) firstUse(ctx context.Context, d Device) (Device, error) {
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE devices SET old_refresh_hash = NULL WHERE token_hash = $1`, d.SessionID)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("revoke the previous refresh token of %s %s: %w", d.UserID, d.DeviceID, err)
	}
	d.oldRefresh = false
	s.tokMu.Lock()
	if _, ok := s.tokens.Get(d.SessionID); ok {
		s.tokens.Put(d.SessionID, d)
	}
	s.tokMu.Unlock()
	return d, nil
}
