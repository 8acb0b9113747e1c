package userapi

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// AccountDataTopic is the bus topic of committed account data changes.
const AccountDataTopic = "account_data"

// MaxAccountDataTypeBytes bounds account data type names.
const MaxAccountDataTypeBytes = 255

// Account data types the server manages; clients cannot set them through
// the account data endpoints (the spec wants 405 M_BAD_JSON).
const (
	TypePushRules = "m.push_rules"
	TypeFullyRead = "m.fully_read"
)

// ServerManagedAccountData tells whether clients are refused setting this type.
func ServerManagedAccountData(typ string) bool {
	return typ == TypePushRules || typ == TypeFullyRead
}

// AccountDataNotice is published on AccountDataTopic after a change commits,
// in position order. RoomID is "" for global account data.
type AccountDataNotice struct {
	UserID string `json:"user_id"`
	RoomID string `json:"room_id"`
	Type   string `json:"type"`
	Pos    int64  `json:"pos"`
}

// AccountDataItem is one account data entry as sync reads it. RoomID is ""
// for global account data.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content json.RawMessage
	Pos     int64
}

func maxAccountDataPos(ctx context.Context, q storage.Querier) (int64, error) {
	var pos int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM account_data`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("select max account data position: %w", err)
	}
	return pos, nil
}

// AccountDataPosition is the highest visible position of the account data
// stream: every change at or below it has committed.
func (s *Service) AccountDataPosition() int64 { return s.adSeq.Visible() }

// checkObject makes sure content is one JSON object.
func checkObject(content []byte) error {
	c := bytes.TrimSpace(content)
	if !json.Valid(c) || !utf8.Valid(c) {
		return merr.NotJSON("Content not JSON")
	}
	if len(c) == 0 || c[0] != '{' {
		return merr.BadJSON("Account data content must be a JSON object")
	}
	return nil
}

func validAccountDataType(typ string) error {
	if typ == "" {
		return merr.InvalidParam("The account data type must not be empty")
	}
	if len(typ) > MaxAccountDataTypeBytes {
		return merr.InvalidParam("The account data type is longer than %d bytes", MaxAccountDataTypeBytes)
	}
	return nil
}

// SetAccountData stores account data (roomID "" for global) and publishes
// the change on the account data stream. It does not refuse
// server-managed types: server code (read markers) sets m.fully_read here.
func (s *Service) SetAccountData(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error {
	if err := validAccountDataType(typ); err != nil {
		return err
	}
	if err := checkObject(content); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, content); err != nil {
		return merr.NotJSON("Content not JSON")
	}
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	return s.writeAccountData(ctx, userID, roomID, typ, func(tx *storage.Tx, pos int64) error {
		return upsertAccountData(ctx, tx, userID, roomID, typ, compact.String(), pos)
	})
}

// UpdateAccountData changes one entry by a function of its current content
// (nil when there is none), under the user's lock, so concurrent updates of
// the same entry (room tags) do not lose each other. When update returns
// nil content, nothing is written.
func (s *Service) UpdateAccountData(ctx context.Context, userID, roomID, typ string, update func(old json.RawMessage) (json.RawMessage, error)) error {
	if err := validAccountDataType(typ); err != nil {
		return err
	}
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	old, err := s.GetAccountData(ctx, userID, roomID, typ)
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return err
	}
	content, err := update(old)
	if err != nil || content == nil {
		return err
	}
	if err := checkObject(content); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, content); err != nil {
		return merr.NotJSON("Content not JSON")
	}
	return s.writeAccountData(ctx, userID, roomID, typ, func(tx *storage.Tx, pos int64) error {
		return upsertAccountData(ctx, tx, userID, roomID, typ, compact.String(), pos)
	})
}

func upsertAccountData(ctx context.Context, tx *storage.Tx, userID, roomID, typ, content string, pos int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, pos) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, pos = excluded.pos`,
		userID, roomID, typ, content, pos)
	if err != nil {
		return fmt.Errorf("upsert account data %s %s %s: %w", userID, roomID, typ, err)
	}
	return nil
}

// writeAccountData allocates the next position, runs write in a transaction
// with it and publishes the change after the commit. The caller holds the
// user's lock, so one user's changes commit in position order.
func (s *Service) writeAccountData(ctx context.Context, userID, roomID, typ string, write func(tx *storage.Tx, pos int64) error) error {
	pos := s.adSeq.Next()
	err := s.db.Write(ctx, func(tx *storage.Tx) error { return write(tx, pos) })
	if err != nil {
		// Nothing is at the position: it is published as a skip.
		s.adSeq.Skip(pos)
		return err
	}
	if roomID == "" && typ == TypeIgnoredUsers {
		s.ignored.Remove(userID)
	}
	s.adSeq.Done(pos, AccountDataNotice{UserID: userID, RoomID: roomID, Type: typ, Pos: pos})
	return nil
}

// publishAccountData tells the bus of every account data position; a
// failed write's is a notice with no user (a skip), so that readers waiting
// for the position move on.
func (s *Service) publishAccountData(pos int64, payload any) {
	n, ok := payload.(AccountDataNotice)
	if !ok {
		n = AccountDataNotice{Pos: pos}
	}
	if s.bus == nil {
		return
	}
	data, err := json.Marshal(n)
	if err != nil {
		return
	}
	if err := s.bus.Publish(AccountDataTopic, data); err != nil {
		logging.From(context.Background()).WithError(err).WithField("user_id", n.UserID).Warn("cannot publish account data position")
	}
}

// GetAccountData returns one entry's content, or M_NOT_FOUND. Global
// m.push_rules is the user's full push ruleset.
func (s *Service) GetAccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	if roomID == "" && typ == TypePushRules {
		return s.PushRules(ctx, userID)
	}
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, merr.NotFound("Account data not found")
	}
	if err != nil {
		return nil, fmt.Errorf("select account data %s %s %s: %w", userID, roomID, typ, err)
	}
	return json.RawMessage(content), nil
}

// AccountDataSince returns the user's account data changed at positions
// in (after, upto], in position order. Global m.push_rules carries the full
// current ruleset. With after 0 (an initial sync) m.push_rules is always
// included, at position 0 if the user never changed a rule.
func (s *Service) AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]AccountDataItem, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, type, content, pos FROM account_data
WHERE user_id = $1 AND pos > $2 AND pos <= $3 ORDER BY pos`, userID, after, upto)
	if err != nil {
		return nil, fmt.Errorf("select account data of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []AccountDataItem
	hasRules := false
	for rows.Next() {
		var it AccountDataItem
		var content string
		if err := rows.Scan(&it.RoomID, &it.Type, &content, &it.Pos); err != nil {
			return nil, fmt.Errorf("select account data of %s: %w", userID, err)
		}
		it.Content = json.RawMessage(content)
		if it.RoomID == "" && it.Type == TypePushRules {
			hasRules = true
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select account data of %s: %w", userID, err)
	}
	rows.Close()
	if after == 0 && !hasRules {
		out = append([]AccountDataItem{{Type: TypePushRules}}, out...)
		hasRules = true
	}
	if hasRules {
		rules, err := s.PushRules(ctx, userID)
		if err != nil {
			return nil, err
		}
		for i := range out {
			if out[i].RoomID == "" && out[i].Type == TypePushRules {
				out[i].Content = rules
			}
		}
	}
	return out, nil
}

// AddDirectRoom records, after a room upgrade, that newRoom is a direct
// room wherever the user's m.direct lists oldRoom (as Synapse does; the old
// room stays listed). Nothing is written when m.direct does not list
// oldRoom or already lists newRoom beside it.
func (s *Service) AddDirectRoom(ctx context.Context, userID, oldRoom, newRoom string) error {
	return s.UpdateAccountData(ctx, userID, "", "m.direct", func(old json.RawMessage) (json.RawMessage, error) {
		var direct map[string]json.RawMessage
		if old == nil || json.Unmarshal(old, &direct) != nil {
			return nil, nil
		}
		changed := false
		for user, raw := range direct {
			var rooms []string
			if json.Unmarshal(raw, &rooms) != nil || !slices.Contains(rooms, oldRoom) || slices.Contains(rooms, newRoom) {
				continue
			}
			enc, err := json.Marshal(append(rooms, newRoom))
			if err != nil {
				return nil, err
			}
			direct[user], changed = enc, true
		}
		if !changed {
			return nil, nil
		}
		return json.Marshal(direct)
	})
}
