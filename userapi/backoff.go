package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// backoff slows down password guessing against one account, on top of the
// per-address rate limit of the login route. After freeAttempts failures in
// a row each further attempt must wait twice as long as the previous one
// (1 s, 2 s, 4 s, ... up to maxDelay). A success resets the count; a count
// is forgotten forgetAfter after its last failure. Keys are user IDs whether
// or not the account exists, so the lockout reveals nothing.
//
// The counters live in the database (login_failures, migration 0038), so
// every Haven process of a scale-out sees the same ones: attempts spread
// over the processes count as much as attempts on one.
type backoff struct {
	db  *storage.DB
	now func() time.Time

	mu    sync.Mutex // guards sweep
	sweep time.Time
}

// failureKey names a counter: the account's (addr "", for the networks it
// has not signed in from) or one of a known network's (knownaddrs.go).
type failureKey struct {
	user, addr string
}

const (
	freeAttempts = 3
	maxDelay     = 5 * time.Minute
	forgetAfter  = 15 * time.Minute
)

func newBackoff(db *storage.DB, now func() time.Time) *backoff {
	return &backoff{db: db, now: now}
}

// delayAfter is the wait after n failures in a row.
func delayAfter(n int) time.Duration {
	if n < freeAttempts {
		return 0
	}
	return min(time.Second<<min(n-freeAttempts, 20), maxDelay)
}

// wait returns how long the key must wait before its next attempt (0: go
// ahead). When the counter cannot be read, the attempt goes ahead (the
// per-address rate limit still holds) and the failure is logged.
func (b *backoff) wait(ctx context.Context, k failureKey) time.Duration {
	var last, until int64
	err := b.db.QueryRow(ctx, `SELECT last_ts, until_ts FROM login_failures WHERE user_id = $1 AND addr = $2`, k.user, k.addr).Scan(&last, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return 0
	}
	if err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", k.user).Warn("password failure counter not readable")
		return 0
	}
	now := b.now()
	if now.Sub(time.UnixMilli(last)) > forgetAfter {
		return 0
	}
	if d := time.UnixMilli(until).Sub(now); d > 0 {
		return d
	}
	return 0
}

// fail records a failed attempt: the count goes up by one in one
// statement, whichever process counts, and the wait follows from it.
func (b *backoff) fail(ctx context.Context, k failureKey) {
	now := b.now()
	err := b.db.Write(ctx, func(tx *storage.Tx) error {
		var n int
		err := tx.QueryRow(ctx, `INSERT INTO login_failures (user_id, addr, failures, last_ts, until_ts) VALUES ($1, $2, 1, $3, 0)
ON CONFLICT (user_id, addr) DO UPDATE SET
failures = CASE WHEN login_failures.last_ts < $4 THEN 1 ELSE login_failures.failures + 1 END,
last_ts = excluded.last_ts
RETURNING failures`, k.user, k.addr, now.UnixMilli(), now.Add(-forgetAfter).UnixMilli()).Scan(&n)
		if err != nil {
			return err
		}
		if d := delayAfter(n); d > 0 {
			_, err = tx.Exec(ctx, `UPDATE login_failures SET until_ts = $3 WHERE user_id = $1 AND addr = $2`, k.user, k.addr, now.Add(d).UnixMilli())
		}
		return err
	})
	if err != nil {
		logging.From(ctx).WithError(fmt.Errorf("count password failure of %s: %w", k.user, err)).Warn("password failure not counted")
	}
	b.sweepOld(ctx, now)
}

// reset forgets the key's failures after a success.
func (b *backoff) reset(ctx context.Context, k failureKey) {
	if _, err := b.db.Exec(ctx, `DELETE FROM login_failures WHERE user_id = $1 AND addr = $2`, k.user, k.addr); err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", k.user).Warn("password failure counter not reset")
	}
}

// sweepOld deletes forgotten counters, at most once a minute per process.
// Names that are not accounts are counted too, so a guesser cycling names
// adds rows; they go 15 minutes later.
func (b *backoff) sweepOld(ctx context.Context, now time.Time) {
	b.mu.Lock()
	due := now.Sub(b.sweep) >= time.Minute
	if due {
		b.sweep = now
	}
	b.mu.Unlock()
	if !due {
		return
	}
	if _, err := b.db.Exec(ctx, `DELETE FROM login_failures WHERE last_ts < $1`, now.Add(-forgetAfter).UnixMilli()); err != nil {
		logging.From(ctx).WithError(err).Warn("old password failure counters not deleted")
	}
}
