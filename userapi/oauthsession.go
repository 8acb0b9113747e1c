package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// The sessions of the OAuth 2.0 API (userapi/oauth). They are ordinary
// devices with an access token that expires and a refresh token: the
// authorization code grant opens one, the refresh token grant is Refresh,
// and revoking either token deletes the device.

// LoginOAuth opens a session for userID after an authorization code was
// exchanged: the device deviceID (from the grant's scope) is made, or, when
// the user already has a device with that ID, gets new tokens. The session
// always has a refresh token. oauth_sessions records which client (and
// scope) the device was issued to; deleting the device deletes that row.
func (s *Service) LoginOAuth(ctx context.Context, userID, deviceID, displayName, clientAddr, clientID, scope string) (Session, error) {
	if err := validDeviceID(deviceID); err != nil {
		return Session{}, err
	}
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return Session{}, merr.Forbidden("The account does not exist")
	}
	if err != nil {
		return Session{}, err
	}
	if a.deactivated {
		return Session{}, merr.UserDeactivated("This account has been deactivated")
	}
	sess, err := s.openSession(ctx, userID, deviceID, displayName, clientAddr, a.admin, true)
	if err != nil {
		return Session{}, err
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO oauth_sessions (user_id, device_id, client_id, scope, created_ts) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, device_id) DO UPDATE SET client_id = excluded.client_id, scope = excluded.scope, created_ts = excluded.created_ts`,
			userID, sess.DeviceID, clientID, scope, s.now().UnixMilli())
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("insert oauth session %s %s: %w", userID, sess.DeviceID, err)
	}
	s.record(ctx, auditlog.Entry{Action: auditlog.Login, Actor: userID, Target: userID, Addr: clientAddr, OK: true,
		Detail: map[string]any{"device_id": sess.DeviceID, "via": "oauth"}})
	return sess, nil
}

// TokenKind tells which token of a device a string is.
type TokenKind int

// Kinds of token.
const (
	TokenUnknown TokenKind = iota
	TokenAccess
	TokenRefresh
)

// DeviceOfToken finds the device an access token or refresh token (the
// current one, or the previous one still valid) belongs to. An unknown
// token is TokenUnknown with no error.
func (s *Service) DeviceOfToken(ctx context.Context, token string) (userID, deviceID string, kind TokenKind, err error) {
	if token == "" {
		return "", "", TokenUnknown, nil
	}
	h := HashToken(token)
	var access bool
	err = s.db.QueryRow(ctx, `SELECT user_id, device_id, token_hash = $1 FROM devices
WHERE token_hash = $1 OR refresh_hash = $1 OR old_refresh_hash = $1`, h).Scan(&userID, &deviceID, &access)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", TokenUnknown, nil
	}
	if err != nil {
		return "", "", TokenUnknown, fmt.Errorf("select device by token: %w", err)
	}
	if access {
		return userID, deviceID, TokenAccess, nil
	}
	return userID, deviceID, TokenRefresh, nil
}

// OAuthSession returns the client and scope an OAuth device was issued to;
// ok is false for a device the OAuth API did not make.
func (s *Service) OAuthSession(ctx context.Context, userID, deviceID string) (clientID, scope string, ok bool, err error) {
	err = s.db.QueryRow(ctx, `SELECT client_id, scope FROM oauth_sessions WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&clientID, &scope)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("select oauth session %s %s: %w", userID, deviceID, err)
	}
	return clientID, scope, true, nil
}
