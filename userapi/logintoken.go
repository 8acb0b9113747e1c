package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// StageToken is the m.login.token login type: a short-lived token from
// Haven's sign-in page, exchanged once for an access token.
const StageToken = "m.login.token"

// LoginTokenLifetime is how long a login token from the sign-in page can be
// exchanged: long enough for the browser to return to the client.
const LoginTokenLifetime = 2 * time.Minute

const loginTokenPrefix = "hvl_"

// IssueLoginToken makes a single-use login token for userID (after the
// sign-in page has checked the password and the second factor).
func (s *Service) IssueLoginToken(ctx context.Context, userID string) (string, error) {
	token, hash, err := newToken(loginTokenPrefix)
	if err != nil {
		return "", err
	}
	now := s.now()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM login_tokens WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("delete expired login tokens: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			hash, userID, now.Add(LoginTokenLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("insert login token of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// TokenLoginRequest is an m.login.token login.
type TokenLoginRequest struct {
	Token             string
	DeviceID          string
	DeviceDisplayName string
	ClientAddr        string
	Refresh           bool
}

// LoginWithToken exchanges a login token for a device and access token.
// The token is used up by the first try, whether it succeeds or not.
func (s *Service) LoginWithToken(ctx context.Context, req TokenLoginRequest) (Session, error) {
	if err := validDeviceID(req.DeviceID); err != nil {
		return Session{}, err
	}
	var userID string
	var expires int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		return tx.QueryRow(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, HashToken(req.Token)).Scan(&userID, &expires)
	})
	if errors.Is(err, sql.ErrNoRows) || (err == nil && s.now().UnixMilli() > expires) {
		s.audit(ctx, "login_failed", logrus.Fields{"client_addr": req.ClientAddr, "reason": "invalid login token"})
		return Session{}, merr.Forbidden("Invalid or expired login token; sign in again")
	}
	if err != nil {
		return Session{}, fmt.Errorf("use login token: %w", err)
	}
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return Session{}, merr.Forbidden("Invalid or expired login token; sign in again")
	}
	if err != nil {
		return Session{}, err
	}
	if a.deactivated {
		s.audit(ctx, "login_failed", logrus.Fields{"user_id": userID, "client_addr": req.ClientAddr, "reason": "deactivated"})
		return Session{}, merr.UserDeactivated("This account has been deactivated")
	}
	sess, err := s.openSession(ctx, userID, req.DeviceID, req.DeviceDisplayName, req.ClientAddr, a.admin, req.Refresh)
	if err != nil {
		return Session{}, err
	}
	s.audit(ctx, "login", logrus.Fields{"user_id": userID, "device_id": sess.DeviceID, "client_addr": req.ClientAddr, "login_type": StageToken})
	return sess, nil
}
