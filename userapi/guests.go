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

// Guests (registration.guests): an account made with POST
// /register?kind=guest has a numeric localpart, no password and no display
// name; its devices carry IsGuest, and the client API lets them use only the
// endpoints the spec opens to guests. Registering with the guest's access
// token and its localpart upgrades it (UpgradeGuest).

// randomGuestLocalpart is a new guest's localpart: twelve digits.
func randomGuestLocalpart() string { return randomString(12, "0123456789") }

// IsGuest tells whether a user is a guest of this server (unknown users
// are not).
func (s *Service) IsGuest(ctx context.Context, userID string) (bool, error) {
	var guest bool
	err := s.db.QueryRow(ctx, `SELECT is_guest FROM accounts WHERE user_id = $1`, userID).Scan(&guest)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select guest flag of %s: %w", userID, err)
	}
	return guest, nil
}

// UpgradeGuest makes the guest guest a full account with the given password
// hash (as HashNewPassword made it) and gives it a new device: its guest
// devices keep working, no longer as guests.
func (s *Service) UpgradeGuest(ctx context.Context, guest Device, hash, deviceID, deviceName, clientAddr string, inhibitLogin bool) (Session, error) {
	if !guest.IsGuest {
		return Session{}, merr.Forbidden("This access token is not a guest's")
	}
	if err := validHash(hash); err != nil {
		return Session{}, err
	}
	if err := validDeviceID(deviceID); err != nil {
		return Session{}, err
	}
	sess := Session{UserID: guest.UserID}
	// The guest's devices would become the account's sessions without a
	// second factor: an account that must have one is registered afresh.
	if req, err := s.withoutPasswordSession(ctx, guest.UserID, RegisterRequest{Via: "client"}); err != nil {
		return Session{}, err
	} else if req.InhibitLogin {
		return Session{}, merr.Forbidden("Accounts on this server sign in with a second factor: register a new account instead of upgrading the guest one, then sign in through single sign-on")
	}
	var issued Device
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $2, is_guest = FALSE WHERE user_id = $1 AND is_guest AND deactivated = FALSE`, guest.UserID, hash)
		if err != nil {
			return fmt.Errorf("upgrade guest %s: %w", guest.UserID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return merr.Forbidden("This guest account was upgraded already")
		}
		if inhibitLogin {
			return nil
		}
		var err2 error
		sess, issued, _, err2 = s.issueDevice(ctx, tx, guest.UserID, deviceID, deviceName, clientAddr, false, false)
		return err2
	})
	if err != nil {
		return Session{}, err
	}
	// The guest's cached devices must stop being guests.
	if err := s.InvalidateUser(ctx, guest.UserID); err != nil {
		return Session{}, err
	}
	if issued.SessionID != "" {
		s.cacheToken(issued)
		s.devicesChanged(ctx, guest.UserID, []string{issued.DeviceID}, nil)
	}
	s.audit(ctx, "guest_upgrade", logrus.Fields{"user_id": guest.UserID, "device_id": sess.DeviceID, "client_addr": clientAddr})
	return sess, nil
}
