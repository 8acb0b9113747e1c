package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// DeviceInfo is a device as GET /devices shows it.
type DeviceInfo struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

const deviceInfoColumns = `device_id, display_name, last_seen_ip, last_seen_ts`

func scanDeviceInfo(row interface{ Scan(...any) error }) (DeviceInfo, error) {
	var d DeviceInfo
	var name sql.NullString
	if err := row.Scan(&d.DeviceID, &name, &d.LastSeenIP, &d.LastSeenTS); err != nil {
		return d, err
	}
	if name.Valid {
		n := name.String
		d.DisplayName = &n
	}
	return d, nil
}

// Devices lists the user's devices, ordered by device ID.
func (s *Service) Devices(ctx context.Context, userID string) ([]DeviceInfo, error) {
	rows, err := s.db.Query(ctx, `SELECT `+deviceInfoColumns+` FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("select devices of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []DeviceInfo{}
	for rows.Next() {
		d, err := scanDeviceInfo(rows)
		if err != nil {
			return nil, fmt.Errorf("select devices of %s: %w", userID, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select devices of %s: %w", userID, err)
	}
	return out, nil
}

// DeviceByID returns one of the user's devices, or M_NOT_FOUND.
func (s *Service) DeviceByID(ctx context.Context, userID, deviceID string) (DeviceInfo, error) {
	d, err := scanDeviceInfo(s.db.QueryRow(ctx, `SELECT `+deviceInfoColumns+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, merr.NotFound("Unknown device %s", deviceID)
	}
	if err != nil {
		return d, fmt.Errorf("select device %s %s: %w", userID, deviceID, err)
	}
	return d, nil
}

// SetDeviceName changes a device's display name ("" clears it).
func (s *Service) SetDeviceName(ctx context.Context, userID, deviceID, name string) error {
	if utf8.RuneCountInString(name) > MaxDeviceNameRunes {
		return merr.TooLarge("The device display name is longer than %d characters", MaxDeviceNameRunes)
	}
	var hash string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2 RETURNING token_hash`,
			userID, deviceID, nullable(name)).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return merr.NotFound("Unknown device %s", deviceID)
		}
		if err != nil {
			return fmt.Errorf("update device %s %s: %w", userID, deviceID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The cached Device carries the display name; let it reload.
	s.revokeCachedOnly(hash)
	// Others see the name in /keys/query: a device list change.
	s.deviceRenamed(ctx, userID, deviceID)
	return nil
}

// revokeCachedOnly drops a still-valid token from the cache so that it is
// read again (the device row changed).
func (s *Service) revokeCachedOnly(hash string) {
	s.dropTokens([]string{hash})
}

// DeleteDevices deletes some of the user's devices; unknown IDs are ignored.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	var gone []removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		gone, err = deleteDevicesTx(ctx, tx, userID, `DELETE FROM devices WHERE user_id = $1 AND device_id IN ($2) RETURNING device_id, token_hash`, userID, deviceIDs)
		return err
	})
	if err != nil {
		return err
	}
	s.revokeTokens(ctx, hashesOf(gone))
	s.devicesChanged(ctx, userID, nil, idsOf(gone))
	if len(gone) > 0 {
		s.audit(ctx, "delete_devices", logrus.Fields{"user_id": userID, "devices": strings.Join(idsOf(gone), ",")})
	}
	return nil
}
