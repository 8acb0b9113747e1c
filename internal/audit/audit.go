// Package audit keeps the audit log: who did what to which account,
// device, room or setting, from which address, and whether it was allowed.
// Each entry is written to the audit_log table (searchable by user, action
// and time, kept for a retention period) and as one structured log line
// (msg "audit", fields action, actor, target, addr, ok), the form log
// shippers and fail2ban read.
//
// Recording never fails the action it records: an entry that cannot be
// stored is logged with the error instead.
//
// Tables owned: audit_log (migration 0024).
// Goroutines: none; the server's housekeeping (server/housekeeping.go)
// calls Prune at start and once a day with audit.retention_days.
// Locks: none.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// Actions recorded. Admin API calls use "admin." followed by the operation.
const (
	Login          = "login"
	LoginFailed    = "login.failed"
	LoginRefused   = "login.refused" // rate limit or lockout
	DeviceAdded    = "device.added"
	DeviceDeleted  = "device.deleted"
	PasswordChange = "password.changed"
	TOTPChange     = "totp.changed"
	Deactivated    = "account.deactivated"
)

// Entry is one audited action.
type Entry struct {
	// Action names what was done (the constants above, or "admin.<op>").
	Action string
	// Actor is the user who acted ("" for an anonymous attempt).
	Actor string
	// Target is what was acted on: a user ID, room ID, device or token.
	Target string
	// Addr is the client's address (after trusted proxies).
	Addr string
	// OK is false for a refused or failed attempt.
	OK bool
	// Detail holds small extra facts (never secrets).
	Detail map[string]any
}

// Record is a stored entry.
type Record struct {
	ID     int64          `json:"id"`
	TS     int64          `json:"ts"`
	Action string         `json:"action"`
	Actor  string         `json:"actor,omitempty"`
	Target string         `json:"target,omitempty"`
	Addr   string         `json:"addr,omitempty"`
	OK     bool           `json:"ok"`
	Detail map[string]any `json:"detail,omitempty"`
}

// Log is the audit log. A nil *Log records nothing (tests, tools).
type Log struct {
	db  *storage.DB
	now func() time.Time
}

// New returns the audit log kept in db; entries are also logged with the
// request's logger (logging.From).
func New(db *storage.DB) *Log {
	return &Log{db: db, now: time.Now}
}

// Record stores e and logs it.
func (l *Log) Record(ctx context.Context, e Entry) {
	if l == nil {
		return
	}
	fields := logrus.Fields{"audit_action": e.Action, "ok": e.OK}
	if e.Actor != "" {
		fields["user_id"] = e.Actor
	}
	if e.Target != "" {
		fields["target"] = e.Target
	}
	if e.Addr != "" {
		fields["addr"] = e.Addr
	}
	for k, v := range e.Detail {
		fields["detail_"+k] = v
	}
	logging.From(ctx).WithFields(fields).Info("audit")
	detail := []byte("{}")
	if len(e.Detail) > 0 {
		if b, err := json.Marshal(e.Detail); err == nil {
			detail = b
		}
	}
	_, err := l.db.Exec(ctx, `INSERT INTO audit_log (ts, action, actor, target, addr, ok, detail) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
		l.now().UnixMilli(), e.Action, e.Actor, e.Target, e.Addr, e.OK, string(detail))
	if err != nil {
		logging.From(ctx).WithError(err).WithFields(fields).Error("Audit entry not stored")
	}
}

// Filter selects entries: every set field must match. User matches the
// actor or the target; Action matches exactly or, ending in ".", as a
// prefix ("admin." for every admin action).
type Filter struct {
	User   string
	Action string
	Since  time.Time
	Until  time.Time
	// Before pages backwards: only entries with a smaller ID (0: newest).
	Before int64
	// Limit is at most 1000 (default 100).
	Limit int
}

// Query returns the newest entries matching f, newest first.
func (l *Log) Query(ctx context.Context, f Filter) ([]Record, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.User != "" {
		p := arg(f.User)
		where = append(where, "(actor = "+p+" OR target = "+p+")")
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, ".") {
			where = append(where, "substr(action, 1, "+arg(len(f.Action))+") = "+arg(f.Action))
		} else {
			where = append(where, "action = "+arg(f.Action))
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "ts >= "+arg(f.Since.UnixMilli()))
	}
	if !f.Until.IsZero() {
		where = append(where, "ts < "+arg(f.Until.UnixMilli()))
	}
	if f.Before > 0 {
		where = append(where, "audit_id < "+arg(f.Before))
	}
	q := `SELECT audit_id, ts, action, actor, target, addr, ok, detail FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY audit_id DESC LIMIT " + arg(f.Limit)
	rows, err := l.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query audit log: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var detail string
		if err := rows.Scan(&r.ID, &r.TS, &r.Action, &r.Actor, &r.Target, &r.Addr, &r.OK, &detail); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		if detail != "" && detail != "{}" {
			_ = json.Unmarshal([]byte(detail), &r.Detail)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Prune deletes the entries older than before; it returns how many.
func (l *Log) Prune(ctx context.Context, before time.Time) (int64, error) {
	res, err := l.db.Exec(ctx, `DELETE FROM audit_log WHERE ts < $1`, before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	return res.RowsAffected()
}
