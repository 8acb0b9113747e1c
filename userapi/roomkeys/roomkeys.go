package roomkeys

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Service keeps users' server-side key backups. It is safe for concurrent use.
type Service struct {
	db  *storage.DB
	now func() time.Time
	// users serialises one user's backup writes, so that "is this the
	// current version?" and the write that depends on it cannot interleave
	// with another write of the same user.
	users keyed.Mutex
}

// New returns the key backup service on the database.
func New(db *storage.DB) *Service {
	return &Service{db: db, now: time.Now}
}

// Limits of identifiers and of one backup version's metadata.
const (
	maxIDLength      = 255
	maxAlgorithmLen  = 255
	maxAuthDataBytes = 64 << 10
)

// VersionInfo describes one backup version, as GET /room_keys/version answers.
type VersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// VersionUpdate is the body of PUT /room_keys/version/{version}.
type VersionUpdate struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	// Version, when given, must equal the version of the path.
	Version string `json:"version"`
}

// Counts is what a change of keys answers: how many keys the version holds
// and its new etag.
type Counts struct {
	Count int64  `json:"count"`
	ETag  string `json:"etag"`
}

// KeyData is one backed-up Megolm session (the spec's KeyBackupData).
type KeyData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// UnmarshalJSON checks that every field the spec requires is there and has
// the right type; what is wrong becomes M_BAD_JSON.
func (k *KeyData) UnmarshalJSON(b []byte) error {
	var raw struct {
		FirstMessageIndex *int64          `json:"first_message_index"`
		ForwardedCount    *int64          `json:"forwarded_count"`
		IsVerified        *bool           `json:"is_verified"`
		SessionData       json.RawMessage `json:"session_data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return merr.BadJSON("Invalid key backup data: first_message_index and forwarded_count must be whole numbers, is_verified a boolean and session_data an object")
	}
	switch {
	case raw.FirstMessageIndex == nil:
		return merr.BadJSON("Key backup data needs first_message_index")
	case raw.ForwardedCount == nil:
		return merr.BadJSON("Key backup data needs forwarded_count")
	case raw.IsVerified == nil:
		return merr.BadJSON("Key backup data needs is_verified")
	case *raw.FirstMessageIndex < 0 || *raw.ForwardedCount < 0:
		return merr.BadJSON("first_message_index and forwarded_count may not be negative")
	case !isObject(raw.SessionData):
		return merr.BadJSON("Key backup data needs session_data, an object")
	}
	*k = KeyData{FirstMessageIndex: *raw.FirstMessageIndex, ForwardedCount: *raw.ForwardedCount,
		IsVerified: *raw.IsVerified, SessionData: append(json.RawMessage(nil), bytes.TrimSpace(raw.SessionData)...)}
	return nil
}

// RoomKeys are the sessions of one room: session ID → key.
type RoomKeys map[string]KeyData

// Keys are backed-up sessions by room: room ID → session ID → key.
type Keys map[string]RoomKeys

func isObject(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{'
}

// Better tells whether a newly uploaded key should replace the stored one,
// by the spec's rules: a verified key beats an unverified one; then the key
// that decrypts from an earlier message (lower first_message_index); then
// the key forwarded fewer times. A key equal on all three keeps the stored one.
func Better(newKey, old KeyData) bool {
	if newKey.IsVerified != old.IsVerified {
		return newKey.IsVerified
	}
	if newKey.FirstMessageIndex != old.FirstMessageIndex {
		return newKey.FirstMessageIndex < old.FirstMessageIndex
	}
	return newKey.ForwardedCount < old.ForwardedCount
}

// parseVersion reads a version as this server hands them out: a positive
// decimal number without sign or leading zeros.
func parseVersion(s string) (int64, bool) {
	if s == "" || len(s) > 18 || s[0] == '0' {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

// IDs with a NUL character are refused: PostgreSQL cannot store them.
func validRoomID(s string) bool {
	return len(s) > 1 && len(s) <= maxIDLength && s[0] == '!' && !strings.ContainsRune(s, 0)
}
func validSessionID(s string) bool {
	return s != "" && len(s) <= maxIDLength && !strings.ContainsRune(s, 0)
}

// wrongVersion is the error for writes to a version that is not the current one.
func wrongVersion(current int64) error {
	return merr.Custom(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version: the current one is %d", current).
		With("current_version", strconv.FormatInt(current, 10))
}

func unknownVersion(version string) error {
	return merr.NotFound("Unknown backup version %q", version)
}

// CreateVersion starts a new backup version, which becomes the current one,
// and returns its version.
func (s *Service) CreateVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if algorithm == "" {
		return "", merr.BadJSON("algorithm is required")
	}
	if len(algorithm) > maxAlgorithmLen || strings.ContainsRune(algorithm, 0) {
		return "", merr.BadJSON("algorithm is too long or contains a NUL character")
	}
	if !isObject(authData) {
		return "", merr.BadJSON("auth_data must be an object")
	}
	if len(authData) > maxAuthDataBytes {
		return "", merr.TooLarge("auth_data is larger than %d bytes", maxAuthDataBytes)
	}
	unlock := s.users.Lock(userID)
	defer unlock()
	var version int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM room_key_backups WHERE user_id = $1`, userID).Scan(&version); err != nil {
			return fmt.Errorf("last backup version of %s: %w", userID, err)
		}
		version++
		if _, err := tx.Exec(ctx, `INSERT INTO room_key_backups (user_id, version, algorithm, auth_data, etag, deleted, created_ts) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
			userID, version, algorithm, string(bytes.TrimSpace(authData)), 0, false, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("insert backup version %d of %s: %w", version, userID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	logging.From(ctx).WithFields(map[string]any{"user_id": userID, "backup_version": version, "algorithm": algorithm}).Info("key backup version created")
	return strconv.FormatInt(version, 10), nil
}

type versionRow struct {
	version   int64
	algorithm string
	authData  string
	etag      int64
}

// currentVersion returns the user's newest version that is not deleted.
func currentVersion(ctx context.Context, q storage.Querier, userID string) (versionRow, error) {
	var r versionRow
	err := q.QueryRow(ctx, `SELECT version, algorithm, auth_data, etag FROM room_key_backups
WHERE user_id = $1 AND deleted = $2 ORDER BY version DESC LIMIT 1`, userID, false).Scan(&r.version, &r.algorithm, &r.authData, &r.etag)
	if errors.Is(err, sql.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("current backup version of %s: %w", userID, err)
	}
	return r, nil
}

// liveVersion returns one version that is not deleted.
func liveVersion(ctx context.Context, q storage.Querier, userID string, version int64) (versionRow, error) {
	r := versionRow{version: version}
	err := q.QueryRow(ctx, `SELECT algorithm, auth_data, etag FROM room_key_backups
WHERE user_id = $1 AND version = $2 AND deleted = $3`, userID, version, false).Scan(&r.algorithm, &r.authData, &r.etag)
	if errors.Is(err, sql.ErrNoRows) {
		return r, storage.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("backup version %d of %s: %w", version, userID, err)
	}
	return r, nil
}

func countKeys(ctx context.Context, q storage.Querier, userID string, version int64) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM room_keys WHERE user_id = $1 AND version = $2`, userID, version).Scan(&n); err != nil {
		return 0, fmt.Errorf("count keys of backup %d of %s: %w", version, userID, err)
	}
	return n, nil
}

// Version describes a backup version; an empty version means the current one.
// No backup (or an unknown or deleted version) is M_NOT_FOUND.
func (s *Service) Version(ctx context.Context, userID, version string) (VersionInfo, error) {
	var row versionRow
	var err error
	if version == "" {
		row, err = currentVersion(ctx, s.db, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return VersionInfo{}, merr.NotFound("No current backup version")
		}
	} else {
		v, ok := parseVersion(version)
		if !ok {
			return VersionInfo{}, unknownVersion(version)
		}
		row, err = liveVersion(ctx, s.db, userID, v)
		if errors.Is(err, storage.ErrNotFound) {
			return VersionInfo{}, unknownVersion(version)
		}
	}
	if err != nil {
		return VersionInfo{}, err
	}
	n, err := countKeys(ctx, s.db, userID, row.version)
	if err != nil {
		return VersionInfo{}, err
	}
	return VersionInfo{Algorithm: row.algorithm, AuthData: json.RawMessage(row.authData), Count: n,
		ETag: strconv.FormatInt(row.etag, 10), Version: strconv.FormatInt(row.version, 10)}, nil
}

// UpdateVersion replaces the auth_data of a version. The algorithm cannot
// change, and a version in the body must be the one of the path.
func (s *Service) UpdateVersion(ctx context.Context, userID, version string, upd VersionUpdate) error {
	if upd.Version != "" && upd.Version != version {
		return merr.InvalidParam("The version in the body (%q) differs from the version in the path (%q)", upd.Version, version)
	}
	if upd.Algorithm == "" {
		return merr.BadJSON("algorithm is required")
	}
	if !isObject(upd.AuthData) {
		return merr.BadJSON("auth_data must be an object")
	}
	if len(upd.AuthData) > maxAuthDataBytes {
		return merr.TooLarge("auth_data is larger than %d bytes", maxAuthDataBytes)
	}
	v, ok := parseVersion(version)
	if !ok {
		return unknownVersion(version)
	}
	unlock := s.users.Lock(userID)
	defer unlock()
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		row, err := liveVersion(ctx, tx, userID, v)
		if errors.Is(err, storage.ErrNotFound) {
			return unknownVersion(version)
		}
		if err != nil {
			return err
		}
		if row.algorithm != upd.Algorithm {
			return merr.InvalidParam("The algorithm of a backup version cannot change (it is %s)", row.algorithm)
		}
		if _, err := tx.Exec(ctx, `UPDATE room_key_backups SET auth_data = $1 WHERE user_id = $2 AND version = $3`,
			string(bytes.TrimSpace(upd.AuthData)), userID, v); err != nil {
			return fmt.Errorf("update backup version %d of %s: %w", v, userID, err)
		}
		return nil
	})
}

// DeleteVersion deletes a version and all its keys. Its number is not reused.
func (s *Service) DeleteVersion(ctx context.Context, userID, version string) error {
	v, ok := parseVersion(version)
	if !ok {
		return unknownVersion(version)
	}
	unlock := s.users.Lock(userID)
	defer unlock()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE room_key_backups SET deleted = $1 WHERE user_id = $2 AND version = $3 AND deleted = $4`, true, userID, v, false)
		if err != nil {
			return fmt.Errorf("delete backup version %d of %s: %w", v, userID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return unknownVersion(version)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM room_keys WHERE user_id = $1 AND version = $2`, userID, v); err != nil {
			return fmt.Errorf("delete keys of backup %d of %s: %w", v, userID, err)
		}
		return nil
	})
	if err == nil {
		logging.From(ctx).WithFields(map[string]any{"user_id": userID, "backup_version": v}).Info("key backup version deleted")
	}
	return err
}

// checkUpload validates the IDs of an upload.
func checkUpload(keys Keys) error {
	for roomID, sessions := range keys {
		if !validRoomID(roomID) {
			return merr.InvalidParam("Invalid room ID %q", roomID)
		}
		for sessionID, k := range sessions {
			if !validSessionID(sessionID) {
				return merr.InvalidParam("Invalid session ID %q", sessionID)
			}
			if !isObject(k.SessionData) {
				return merr.BadJSON("Key backup data needs session_data, an object")
			}
		}
	}
	return nil
}

// inChunk bounds the IN lists of one statement.
const inChunk = 500

// PutKeys stores keys in the current backup version, each replacing the
// stored key of its session only when it is better (see Better). A version
// that is not the current one is M_WRONG_ROOM_KEYS_VERSION.
func (s *Service) PutKeys(ctx context.Context, userID, version string, keys Keys) (Counts, error) {
	if version == "" {
		return Counts{}, merr.MissingParam("The version query parameter is required")
	}
	if err := checkUpload(keys); err != nil {
		return Counts{}, err
	}
	unlock := s.users.Lock(userID)
	defer unlock()
	var out Counts
	changed := 0
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		cur, err := currentVersion(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return merr.NotFound("No backup version exists; create one first")
		}
		if err != nil {
			return err
		}
		if strconv.FormatInt(cur.version, 10) != version {
			return wrongVersion(cur.version)
		}
		for roomID, sessions := range keys {
			ids := make([]string, 0, len(sessions))
			for id := range sessions {
				ids = append(ids, id)
			}
			stored, err := storedKeys(ctx, tx, userID, cur.version, roomID, ids)
			if err != nil {
				return err
			}
			for sessionID, k := range sessions {
				if old, ok := stored[sessionID]; ok && !Better(k, old) {
					continue
				}
				if _, err := tx.Exec(ctx, `INSERT INTO room_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
					userID, cur.version, roomID, sessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)); err != nil {
					return fmt.Errorf("store key %s/%s in backup %d of %s: %w", roomID, sessionID, cur.version, userID, err)
				}
				changed++
			}
		}
		etag := cur.etag
		if changed > 0 {
			etag++
			if _, err := tx.Exec(ctx, `UPDATE room_key_backups SET etag = $1 WHERE user_id = $2 AND version = $3`, etag, userID, cur.version); err != nil {
				return fmt.Errorf("update etag of backup %d of %s: %w", cur.version, userID, err)
			}
		}
		n, err := countKeys(ctx, tx, userID, cur.version)
		if err != nil {
			return err
		}
		out = Counts{Count: n, ETag: strconv.FormatInt(etag, 10)}
		return nil
	})
	if err != nil {
		return Counts{}, err
	}
	logging.From(ctx).WithFields(map[string]any{"user_id": userID, "backup_version": version, "keys_changed": changed}).Debug("keys backed up")
	return out, nil
}

// storedKeys reads the stored keys of some sessions of a room.
func storedKeys(ctx context.Context, q storage.Querier, userID string, version int64, roomID string, sessionIDs []string) (map[string]KeyData, error) {
	out := make(map[string]KeyData, len(sessionIDs))
	for len(sessionIDs) > 0 {
		n := min(len(sessionIDs), inChunk)
		rows, err := q.Query(ctx, `SELECT session_id, first_message_index, forwarded_count, is_verified, session_data FROM room_keys
WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id IN ($4)`, userID, version, roomID, sessionIDs[:n])
		if err != nil {
			return nil, fmt.Errorf("stored keys of %s in backup %d of %s: %w", roomID, version, userID, err)
		}
		for rows.Next() {
			var id, data string
			var k KeyData
			if err := rows.Scan(&id, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
				rows.Close()
				return nil, err
			}
			k.SessionData = json.RawMessage(data)
			out[id] = k
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
		sessionIDs = sessionIDs[n:]
	}
	return out, nil
}

// scope selects keys: all of a version, one room's, or one session's.
func scope(roomID, sessionID string) (string, []any, error) {
	if roomID == "" {
		return "", nil, nil
	}
	if !validRoomID(roomID) {
		return "", nil, merr.InvalidParam("Invalid room ID %q", roomID)
	}
	if sessionID == "" {
		return ` AND room_id = $3`, []any{roomID}, nil
	}
	if !validSessionID(sessionID) {
		return "", nil, merr.InvalidParam("Invalid session ID %q", sessionID)
	}
	return ` AND room_id = $3 AND session_id = $4`, []any{roomID, sessionID}, nil
}

// readableVersion resolves the version parameter of a read or a delete:
// any version that exists and is not deleted.
func readableVersion(ctx context.Context, q storage.Querier, userID, version string) (versionRow, error) {
	if version == "" {
		return versionRow{}, merr.MissingParam("The version query parameter is required")
	}
	v, ok := parseVersion(version)
	if !ok {
		return versionRow{}, unknownVersion(version)
	}
	row, err := liveVersion(ctx, q, userID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return versionRow{}, unknownVersion(version)
	}
	return row, err
}

// Keys returns the keys of a version: all of them (roomID empty), one
// room's (sessionID empty) or one session's. Rooms without keys are absent.
func (s *Service) Keys(ctx context.Context, userID, version, roomID, sessionID string) (Keys, error) {
	where, args, err := scope(roomID, sessionID)
	if err != nil {
		return nil, err
	}
	row, err := readableVersion(ctx, s.db, userID, version)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM room_keys
WHERE user_id = $1 AND version = $2`+where, append([]any{userID, row.version}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("keys of backup %d of %s: %w", row.version, userID, err)
	}
	defer rows.Close()
	out := Keys{}
	for rows.Next() {
		var room, session, data string
		var k KeyData
		if err := rows.Scan(&room, &session, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, err
		}
		k.SessionData = json.RawMessage(data)
		if out[room] == nil {
			out[room] = RoomKeys{}
		}
		out[room][session] = k
	}
	return out, rows.Err()
}

// DeleteKeys deletes keys of a version: all, one room's or one session's.
func (s *Service) DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (Counts, error) {
	where, args, err := scope(roomID, sessionID)
	if err != nil {
		return Counts{}, err
	}
	unlock := s.users.Lock(userID)
	defer unlock()
	var out Counts
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		row, err := readableVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		res, err := tx.Exec(ctx, `DELETE FROM room_keys WHERE user_id = $1 AND version = $2`+where, append([]any{userID, row.version}, args...)...)
		if err != nil {
			return fmt.Errorf("delete keys of backup %d of %s: %w", row.version, userID, err)
		}
		etag := row.etag
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n > 0 {
			etag++
			if _, err := tx.Exec(ctx, `UPDATE room_key_backups SET etag = $1 WHERE user_id = $2 AND version = $3`, etag, userID, row.version); err != nil {
				return fmt.Errorf("update etag of backup %d of %s: %w", row.version, userID, err)
			}
		}
		n, err := countKeys(ctx, tx, userID, row.version)
		if err != nil {
			return err
		}
		out = Counts{Count: n, ETag: strconv.FormatInt(etag, 10)}
		return nil
	})
	return out, err
}
