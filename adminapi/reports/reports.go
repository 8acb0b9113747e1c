package reports

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// MaxReasonLength bounds a report's reason, in bytes.
const MaxReasonLength = 4096

// Report is one stored report.
type Report struct {
	ID        int64  `json:"id"`
	RoomID    string `json:"room_id"`
	EventID   string `json:"event_id,omitempty"`
	Reporter  string `json:"user_id"`
	Reason    string `json:"reason"`
	Score     *int64 `json:"score,omitempty"`
	CreatedTS int64  `json:"received_ts"`
}

// Store keeps the reports.
type Store struct {
	db  *storage.DB
	now func() time.Time
}

// New returns the report store on the database.
func New(db *storage.DB) *Store { return &Store{db: db, now: time.Now} }

// Check validates the free-form parts of a report: the reason's length and
// encoding, and a score between -100 (most offensive) and 0.
func Check(reason string, score *int64) error {
	if len(reason) > MaxReasonLength {
		return merr.InvalidParam("reason is longer than %d bytes", MaxReasonLength)
	}
	if !storage.StorableText(reason) {
		return merr.InvalidParam("reason is not valid UTF-8 text")
	}
	if score != nil && (*score < -100 || *score > 0) {
		return merr.InvalidParam("score must be between -100 and 0")
	}
	return nil
}

// Add stores a report and returns its ID. eventID is empty for a report
// about a whole room. The caller has checked that the reporter may see it.
func (s *Store) Add(ctx context.Context, reporter, roomID, eventID, reason string, score *int64) (int64, error) {
	if err := Check(reason, score); err != nil {
		return 0, err
	}
	var ev, sc any
	if eventID != "" {
		ev = eventID
	}
	if score != nil {
		sc = *score
	}
	var id int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO content_reports (room_id, event_id, reporter, reason, score, created_ts)
VALUES ($1,$2,$3,$4,$5,$6) RETURNING report_id`, roomID, ev, reporter, reason, sc, s.now().UnixMilli()).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("store report on %s by %s: %w", roomID, reporter, err)
	}
	logging.From(ctx).WithFields(map[string]any{"user_id": reporter, "room_id": roomID, "event_id": eventID, "report_id": id}).Info("content reported")
	return id, nil
}

// List returns up to limit reports after skipping from, newest first,
// optionally of one room, and how many there are in all (the shape admin
// tools page through).
func (s *Store) List(ctx context.Context, roomID string, from, limit int) ([]Report, int64, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	from = max(from, 0)
	where, args := "", []any{limit, from}
	if roomID != "" {
		where, args = ` WHERE room_id = $3`, append(args, roomID)
	}
	var total int64
	countArgs := []any{}
	countWhere := ""
	if roomID != "" {
		countWhere, countArgs = ` WHERE room_id = $1`, []any{roomID}
	}
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM content_reports`+countWhere, countArgs...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count reports: %w", err)
	}
	rows, err := s.db.Query(ctx, `SELECT report_id, room_id, COALESCE(event_id, ''), reporter, reason, score, created_ts FROM content_reports`+
		where+` ORDER BY report_id DESC LIMIT $1 OFFSET $2`, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list reports: %w", err)
	}
	defer rows.Close()
	out := []Report{}
	for rows.Next() {
		var r Report
		var score sql.NullInt64
		if err := rows.Scan(&r.ID, &r.RoomID, &r.EventID, &r.Reporter, &r.Reason, &score, &r.CreatedTS); err != nil {
			return nil, 0, err
		}
		if score.Valid {
			v := score.Int64
			r.Score = &v
		}
		out = append(out, r)
	}
	return out, total, rows.Err()
}
