package keys

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Limits of what a device may store.
const (
	// MaxKeyIDBytes bounds a key ID ("algorithm:id") and an algorithm name.
	MaxKeyIDBytes = 255
	// MaxKeyBytes bounds one key object.
	MaxKeyBytes = 16 << 10
	// MaxOneTimeKeysPerUpload bounds the one-time keys of one upload.
	MaxOneTimeKeysPerUpload = 1000
)

// UploadRequest is the body of /keys/upload. Absent parts are nil.
type UploadRequest struct {
	DeviceKeys   json.RawMessage
	OneTimeKeys  map[string]json.RawMessage
	FallbackKeys map[string]json.RawMessage
}

// deviceKeysFields are the parts of a device keys object the server checks.
type deviceKeysFields struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// isNull tells whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// stripObject decodes a JSON object, drops the fields the server must not
// store ("unsigned"), and encodes it again compactly with sorted keys.
func stripObject(raw json.RawMessage, what string) (map[string]json.RawMessage, []byte, error) {
	var obj map[string]json.RawMessage
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &obj) != nil {
		return nil, nil, merr.BadJSON("%s must be a JSON object", what)
	}
	delete(obj, "unsigned")
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, merr.BadJSON("%s is not valid JSON", what)
	}
	return obj, out, nil
}

// checkDeviceKeys validates a device keys object for the uploading device.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) (deviceKeysFields, []byte, error) {
	var f deviceKeysFields
	obj, stored, err := stripObject(raw, "device_keys")
	if err != nil {
		return f, nil, err
	}
	if len(stored) > MaxKeyBytes {
		return f, nil, merr.TooLarge("device_keys is larger than %d bytes", MaxKeyBytes)
	}
	if err := json.Unmarshal(stored, &f); err != nil {
		return f, nil, merr.BadJSON("device_keys has a field of the wrong type")
	}
	if f.UserID != userID {
		return f, nil, merr.InvalidParam("device_keys.user_id must be %s, the user of the access token", userID)
	}
	if f.DeviceID != deviceID {
		return f, nil, merr.InvalidParam("device_keys.device_id must be %s, the device of the access token", deviceID)
	}
	// A device keys object without one of its required fields is malformed
	// JSON (M_BAD_JSON, as sytest's "Rejects invalid device keys" asks).
	if len(f.Algorithms) == 0 {
		return f, nil, merr.BadJSON("device_keys.algorithms is missing")
	}
	if len(f.Keys) == 0 {
		return f, nil, merr.BadJSON("device_keys.keys is missing")
	}
	for id, k := range f.Keys {
		alg, dev, ok := strings.Cut(id, ":")
		if !ok || alg == "" || dev != deviceID || k == "" {
			return f, nil, merr.InvalidParam("device_keys.keys: %q must be <algorithm>:%s with a key", id, deviceID)
		}
	}
	if _, ok := f.Keys["ed25519:"+deviceID]; !ok {
		return f, nil, merr.BadJSON("device_keys.keys has no ed25519 key")
	}
	if _, ok := obj["signatures"]; !ok {
		return f, nil, merr.BadJSON("device_keys.signatures is missing")
	}
	return f, stored, nil
}

// checkKeyID validates an "algorithm:id" key ID.
func checkKeyID(id, what string) (alg string, err error) {
	alg, rest, ok := strings.Cut(id, ":")
	if !ok || alg == "" || rest == "" || len(id) > MaxKeyIDBytes || !storage.StorableText(id) {
		return "", merr.InvalidParam("%s: key ID %q must be <algorithm>:<id>", what, id)
	}
	return alg, nil
}

// keyValue validates a one-time or fallback key value (a string or an
// object) and returns what is stored.
func keyValue(raw json.RawMessage, id, what string) (string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) > MaxKeyBytes {
		return "", merr.TooLarge("%s %s is larger than %d bytes", what, id, MaxKeyBytes)
	}
	if len(t) > 0 && t[0] == '"' {
		var s string
		// The value is stored as sent: it must be valid UTF-8 text.
		if json.Unmarshal(t, &s) != nil || s == "" || !utf8.Valid(t) {
			return "", merr.BadJSON("%s %s is not a key", what, id)
		}
		return string(t), nil
	}
	_, stored, err := stripObject(t, what+" "+id)
	if err != nil {
		return "", err
	}
	return string(stored), nil
}

type otkRow struct {
	alg, id, value string
}

// Upload stores the device's keys and returns its one-time key counts.
// Re-uploading the stored device keys changes nothing; other device keys
// replace them (as Synapse does: a client that lost its keys uploads new
// ones for the same device, and other users' clients see the change on the
// device list stream and decide whether to trust it); a one-time key ID
// cannot be reused for another key; a new fallback key replaces the old one
// of its algorithm.
func (s *Service) Upload(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	var dkFields deviceKeysFields
	var dkStored []byte
	if !isNull(req.DeviceKeys) {
		var err error
		if dkFields, dkStored, err = checkDeviceKeys(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	if len(req.OneTimeKeys) > MaxOneTimeKeysPerUpload {
		return nil, merr.TooLarge("At most %d one-time keys per upload", MaxOneTimeKeysPerUpload)
	}
	otks := make([]otkRow, 0, len(req.OneTimeKeys))
	for id, raw := range req.OneTimeKeys {
		alg, err := checkKeyID(id, "one_time_keys")
		if err != nil {
			return nil, err
		}
		v, err := keyValue(raw, id, "one-time key")
		if err != nil {
			return nil, err
		}
		otks = append(otks, otkRow{alg: alg, id: id, value: v})
	}
	sort.Slice(otks, func(i, j int) bool { return otks[i].id < otks[j].id })
	fallbacks := map[string]otkRow{}
	for id, raw := range req.FallbackKeys {
		alg, err := checkKeyID(id, "fallback_keys")
		if err != nil {
			return nil, err
		}
		if _, dup := fallbacks[alg]; dup {
			return nil, merr.InvalidParam("fallback_keys: more than one %s key", alg)
		}
		v, err := keyValue(raw, id, "fallback key")
		if err != nil {
			return nil, err
		}
		fallbacks[alg] = otkRow{alg: alg, id: id, value: v}
	}

	unlock := s.userLocks.Lock(userID)
	defer unlock()
	var counts keyCounts
	keysChanged := len(otks) > 0 || len(fallbacks) > 0
	write := func(tx *storage.Tx) (bool, error) {
		changed := false
		if dkStored != nil {
			var err error
			if changed, err = putDeviceKeys(ctx, tx, userID, deviceID, dkFields, dkStored, s.now().UnixMilli()); err != nil {
				return false, err
			}
		}
		if err := putOneTimeKeys(ctx, tx, userID, deviceID, otks); err != nil {
			return false, err
		}
		for _, alg := range sortedKeys(fallbacks) {
			fk := fallbacks[alg]
			if _, err := tx.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE FALSE END`,
				userID, deviceID, fk.alg, fk.id, fk.value); err != nil {
				return false, fmt.Errorf("upsert fallback key of %s %s: %w", userID, deviceID, err)
			}
		}
		var err error
		counts, err = selectCounts(ctx, tx, userID, deviceID)
		return changed, err
	}
	var err error
	if dkStored != nil {
		err = s.changeDeviceList(ctx, userID, listChange{devices: []string{deviceID}}, write)
	} else {
		err = s.db.Write(ctx, func(tx *storage.Tx) error { _, err := write(tx); return err })
	}
	if keysChanged || err != nil {
		s.countsChanged(ctx, userID, deviceID)
	}
	if err != nil {
		return nil, err
	}
	return counts.otk, nil
}

// putDeviceKeys stores device keys and reports whether anything changed. A
// change of a device's identity keys is taken, and logged.
func putDeviceKeys(ctx context.Context, tx *storage.Tx, userID, deviceID string, f deviceKeysFields, stored []byte, now int64) (bool, error) {
	var old string
	err := tx.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&old)
	switch {
	case err == nil:
		if old == string(stored) {
			return false, nil
		}
		var of deviceKeysFields
		if json.Unmarshal([]byte(old), &of) == nil {
			for id, k := range of.Keys {
				if nk, ok := f.Keys[id]; !ok || nk != k {
					logging.From(ctx).WithFields(logrus.Fields{"user_id": userID, "device_id": deviceID, "key_id": id}).
						Warn("a device replaced its identity keys")
					break
				}
			}
		}
	case errors.Is(err, sql.ErrNoRows):
	default:
		return false, fmt.Errorf("select device keys of %s %s: %w", userID, deviceID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json, ts) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ts = excluded.ts`, userID, deviceID, string(stored), now); err != nil {
		return false, fmt.Errorf("upsert device keys of %s %s: %w", userID, deviceID, err)
	}
	return true, nil
}

// putOneTimeKeys adds one-time keys; a key ID already stored must carry
// the same key (a retried upload), else the upload is refused.
func putOneTimeKeys(ctx context.Context, tx *storage.Tx, userID, deviceID string, otks []otkRow) error {
	if len(otks) == 0 {
		return nil
	}
	ids := make([]string, len(otks))
	for i, k := range otks {
		ids[i] = k.id
	}
	existing := map[string]string{}
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		rows, err := tx.Query(ctx, `SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id IN ($3)`,
			userID, deviceID, ids[start:end])
		if err != nil {
			return fmt.Errorf("select one-time keys of %s %s: %w", userID, deviceID, err)
		}
		for rows.Next() {
			var id, v string
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return fmt.Errorf("select one-time keys of %s %s: %w", userID, deviceID, err)
			}
			existing[id] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select one-time keys of %s %s: %w", userID, deviceID, err)
		}
	}
	// This upload's keys come after every key the device still has.
	var seq int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(upload_seq), 0) + 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&seq); err != nil {
		return fmt.Errorf("select upload order of %s %s: %w", userID, deviceID, err)
	}
	for _, k := range otks {
		if old, ok := existing[k.id]; ok {
			if old != k.value {
				return merr.InvalidParam("One-time key %s is already uploaded with another value", k.id)
			}
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq) VALUES ($1, $2, $3, $4, $5, $6)`,
			userID, deviceID, k.alg, k.id, k.value, seq); err != nil {
			return fmt.Errorf("insert one-time key of %s %s: %w", userID, deviceID, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
