package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// syncUpstreamEmail keeps the email address a company identity provider
// gives for a person as the account's verified email threepid: added at
// the first sign-in, replaced when the provider later gives another one
// (the previous address goes only if it is still the one the provider
// gave). An address already bound to another account is left to it, and
// logged. Failures are logged: the sign-in goes on without the address.
func (s *Service) syncUpstreamEmail(ctx context.Context, id UpstreamIdentity, userID string) {
	if id.Email == "" || id.EmailUnverified {
		return
	}
	log := logging.From(ctx).WithField("provider", id.Provider).WithField("user_id", userID)
	addr, err := normalizeEmail(id.Email)
	if err != nil {
		log.Warn("the identity provider's email claim is not a valid email address; not kept")
		return
	}
	var added, replaced bool
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		var prev string
		if err := tx.QueryRow(ctx, `SELECT email FROM oidc_links WHERE provider_id = $1 AND subject = $2`, id.Provider, id.Subject).Scan(&prev); err != nil {
			return fmt.Errorf("select oidc link email: %w", err)
		}
		var owner string
		err := tx.QueryRow(ctx, `SELECT user_id FROM user_threepids WHERE medium = 'email' AND address = $1`, addr).Scan(&owner)
		switch {
		case err == nil && owner != userID:
			log.Warn("the identity provider's email address belongs to another account; not kept")
			return nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("select owner of a 3pid: %w", err)
		case err == nil && prev == addr:
			return nil
		}
		now := s.now().UnixMilli()
		if owner == "" {
			if _, err := tx.Exec(ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts) VALUES ('email', $1, $2, $3, $3)`,
				addr, userID, now); err != nil {
				return fmt.Errorf("insert 3pid: %w", err)
			}
			added = true
		}
		if prev != "" && prev != addr {
			if _, err := tx.Exec(ctx, `DELETE FROM user_threepids WHERE medium = 'email' AND address = $1 AND user_id = $2`, prev, userID); err != nil {
				return fmt.Errorf("delete previous 3pid: %w", err)
			}
			replaced = true
		}
		if _, err := tx.Exec(ctx, `UPDATE oidc_links SET email = $3 WHERE provider_id = $1 AND subject = $2`, id.Provider, id.Subject, addr); err != nil {
			return fmt.Errorf("update oidc link email: %w", err)
		}
		return nil
	})
	if err != nil {
		log.WithError(err).Warn("cannot keep the identity provider's email address")
		return
	}
	// After the commit: the audit log writes through the database too.
	if added {
		s.audit(ctx, "threepid_added", logrus.Fields{"user_id": userID, "via": "oidc:" + id.Provider})
	}
	if replaced {
		s.audit(ctx, "threepid_deleted", logrus.Fields{"user_id": userID, "via": "oidc:" + id.Provider})
	}
}

// upstreamOnly tells whether userID signs in only at a company identity
// provider: linked to one, without a Haven password.
func (s *Service) upstreamOnly(ctx context.Context, userID string) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM accounts a JOIN oidc_links l ON l.user_id = a.user_id
WHERE a.user_id = $1 AND a.password_hash = ''`, userID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("select company sign-in of %s: %w", userID, err)
	}
	return n > 0, nil
}
