package userapi

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// MaxFiltersPerUser bounds the stored filters of one user.
const MaxFiltersPerUser = 1000

// PutFilter stores a filter (already validated by the caller) and returns
// its ID, a decimal string. Storing a filter identical to one the user
// already has returns that one's ID: clients upload the same filter at
// every start.
func (s *Service) PutFilter(ctx context.Context, userID string, filter []byte) (string, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, filter); err != nil {
		return "", merr.NotJSON("Filter is not JSON")
	}
	text := compact.String()
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	var id int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		err := tx.QueryRow(ctx, `SELECT filter_id FROM filters WHERE user_id = $1 AND filter = $2`, userID, text).Scan(&id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("select filter of %s: %w", userID, err)
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1`, userID).Scan(&n, &id); err != nil {
			return fmt.Errorf("select next filter id of %s: %w", userID, err)
		}
		if n >= MaxFiltersPerUser {
			return merr.Custom(400, "M_RESOURCE_LIMIT_EXCEEDED", "You have stored %d filters, the most allowed", MaxFiltersPerUser)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3)`, userID, id, text); err != nil {
			return fmt.Errorf("insert filter %s %d: %w", userID, id, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	fid := strconv.FormatInt(id, 10)
	s.filters.Put(userID+"\x00"+fid, []byte(text))
	return fid, nil
}

// GetFilter returns a stored filter's JSON, or M_NOT_FOUND. Filters never
// change, so they are served from memory once read.
func (s *Service) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	key := userID + "\x00" + filterID
	if f, ok := s.filters.Get(key); ok {
		return f, nil
	}
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || id < 0 || strconv.FormatInt(id, 10) != filterID {
		return nil, merr.NotFound("No such filter")
	}
	var text string
	err = s.db.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, id).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, merr.NotFound("No such filter")
	}
	if err != nil {
		return nil, fmt.Errorf("select filter %s %s: %w", userID, filterID, err)
	}
	s.filters.Put(key, []byte(text))
	return []byte(text), nil
}
