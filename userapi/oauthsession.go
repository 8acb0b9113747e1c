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
// always has a refresh token.
func (s *Service) LoginOAuth(ctx context.Context, userID, deviceID, displayName, clientAddr string) (Session, error) {
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
