package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/clientip"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// Known addresses (table login_addresses): the client networks
// (clientip.Network: an IPv4 address or an IPv6 /64) each account has
// signed in from with its password. The per-account slowdown (backoff.go)
// counts the failures from unknown networks together, against the
// account; a known network has a counter of its own. A guessing run from
// elsewhere therefore slows only the guessers, and the owner, signing in
// from where they always do, is not locked out.
const (
	// maxKnownAddrs bounds the networks remembered per account; the
	// least recently used is forgotten first.
	maxKnownAddrs = 20
	// knownAddrTTL is how long a network stays known without a sign-in.
	knownAddrTTL = 90 * 24 * time.Hour
)

// AuditRecorder records audited actions (internal/audit's Log).
type AuditRecorder interface {
	Record(ctx context.Context, e auditlog.Entry)
}

// record writes an audit entry with Options.Audit, or, without one
// (tools, tests), as a log line.
func (s *Service) record(ctx context.Context, e auditlog.Entry) {
	if s.opts.Audit != nil {
		s.opts.Audit.Record(ctx, e)
		return
	}
	entry := logging.From(ctx).WithField("audit_action", e.Action).WithField("ok", e.OK)
	if e.Actor != "" {
		entry = entry.WithField("user_id", e.Actor)
	}
	if e.Target != "" {
		entry = entry.WithField("target", e.Target)
	}
	if e.Addr != "" {
		entry = entry.WithField("addr", e.Addr)
	}
	for k, v := range e.Detail {
		entry = entry.WithField("detail_"+k, v)
	}
	entry.Info("audit")
}

// attemptKey is the backoff counter an attempt on userID from addr counts
// against: the account's own for unknown networks, one per known network.
func (s *Service) attemptKey(ctx context.Context, userID, addr string) failureKey {
	if addr == "" {
		return failureKey{user: userID}
	}
	netw := clientip.Network(addr)
	var ts int64
	err := s.db.QueryRow(ctx, `SELECT last_ts FROM login_addresses WHERE user_id = $1 AND addr = $2`, userID, netw).Scan(&ts)
	if err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			logging.From(ctx).WithError(err).WithField("user_id", userID).Warn("known sign-in addresses not readable")
		}
		return failureKey{user: userID}
	}
	if s.now().Sub(time.UnixMilli(ts)) > knownAddrTTL {
		return failureKey{user: userID}
	}
	return failureKey{user: userID, addr: netw}
}

// rememberAddr notes a successful sign-in of userID from addr, keeping the
// newest maxKnownAddrs networks of the account.
func (s *Service) rememberAddr(ctx context.Context, userID, addr string) {
	if addr == "" {
		return
	}
	netw := clientip.Network(addr)
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO login_addresses (user_id, addr, last_ts) VALUES ($1, $2, $3)
ON CONFLICT (user_id, addr) DO UPDATE SET last_ts = excluded.last_ts`, userID, netw, s.now().UnixMilli()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM login_addresses WHERE user_id = $1 AND addr NOT IN
(SELECT addr FROM login_addresses WHERE user_id = $1 ORDER BY last_ts DESC, addr LIMIT $2)`, userID, maxKnownAddrs)
		return err
	})
	if err != nil {
		logging.From(ctx).WithError(fmt.Errorf("remember sign-in address of %s: %w", userID, err)).Warn("sign-in address not remembered")
	}
}
