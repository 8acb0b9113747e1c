package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// UpstreamIdentity is a person as a company identity provider (OpenID
// Connect) vouched for them, after the sign-in page verified the ID token.
type UpstreamIdentity struct {
	// Provider is the provider's id in the config (oidc.providers[].id).
	Provider string
	// Subject is the provider's stable identifier of the person (sub).
	Subject string
	// Localpart is the value of the configured localpart claim, as sent.
	Localpart   string
	DisplayName string
	// Email, when set, becomes the account's verified email address
	// (upstream_email.go) unless EmailUnverified: the provider said
	// email_verified: false.
	Email           string
	EmailUnverified bool
}

// UpstreamPolicy is what a provider may do with accounts.
type UpstreamPolicy struct {
	// CreateAccounts makes the account at the first sign-in.
	CreateAccounts bool
	// AllowExistingUsers links an account that exists already, not yet
	// linked to this provider, to the person whose localpart claim names it.
	AllowExistingUsers bool
}

// SignInUpstream finds (or makes, or links) the account of a person signed
// in through a company identity provider, and returns its user ID and
// whether it is an admin's. The link (provider, subject) → account is kept
// in oidc_links, so the person keeps the account when renamed at the
// provider. Refusals are audited (login.failed, via oidc:<provider>) and
// answered with M_FORBIDDEN or M_USER_DEACTIVATED.
func (s *Service) SignInUpstream(ctx context.Context, id UpstreamIdentity, pol UpstreamPolicy, addr string) (userID string, admin bool, err error) {
	via := "oidc:" + id.Provider
	fail := func(target, reason string, e error) (string, bool, error) {
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: target, Addr: addr, Detail: map[string]any{"reason": reason, "via": via}})
		return "", false, e
	}
	if id.Provider == "" || id.Subject == "" {
		return fail("", "no_subject", merr.Forbidden("The identity provider did not say who you are"))
	}
	linked, err := s.upstreamLink(ctx, id.Provider, id.Subject)
	if err != nil {
		return "", false, err
	}
	if linked != "" {
		a, err := selectAccount(ctx, s.db, linked)
		if errors.Is(err, storage.ErrNotFound) {
			return fail(linked, "linked_account_missing", merr.Forbidden("The account linked to your company sign-in no longer exists; ask your administrator"))
		}
		if err != nil {
			return "", false, err
		}
		if !a.deactivated {
			s.syncUpstreamEmail(ctx, id, a.userID)
		}
		return s.upstreamDone(ctx, a, addr, via)
	}
	mapped := strings.ToLower(strings.TrimSpace(id.Localpart))
	if i := strings.IndexByte(mapped, '@'); i > 0 {
		// An email-like name (Entra ID's preferred_username, an email
		// claim): the part before the @.
		mapped = mapped[:i]
	}
	if mapped == "" {
		return fail("", "no_localpart_claim", merr.Forbidden("Your company account has no user name Haven can use; ask your administrator"))
	}
	if ValidLocalpart(mapped, s.opts.ServerName) != nil {
		logging.From(ctx).WithField("provider", id.Provider).WithField("claimed_localpart", truncateRunes(id.Localpart, 100)).
			Warn("the identity provider's localpart claim is not a valid Matrix localpart")
		return fail("", "invalid_localpart_claim", merr.Forbidden("Your company account's name cannot be used as a Matrix user name; ask your administrator"))
	}
	uid := s.UserID(mapped)
	a, err := selectAccount(ctx, s.db, uid)
	switch {
	case errors.Is(err, storage.ErrNotFound) && !pol.CreateAccounts:
		return fail(uid, "no_account", merr.Forbidden("You have no account on this server yet; ask your administrator to create it"))
	case errors.Is(err, storage.ErrNotFound):
		name := truncateBytes(strings.TrimSpace(id.DisplayName), MaxDisplayNameBytes)
		_, err = s.Register(ctx, RegisterRequest{Localpart: mapped, NoPassword: true, DisplayName: name, InhibitLogin: true, ClientAddr: addr, Via: via})
		if merr.Is(err, "M_USER_IN_USE") {
			// Made at the same moment, by this person's other sign-in or by
			// someone else: decided by the link below.
			err = nil
			if !pol.AllowExistingUsers {
				if owner, _ := s.upstreamLink(ctx, id.Provider, id.Subject); owner == "" {
					return fail(uid, "account_exists", errUpstreamAccountExists())
				}
			}
		}
		if err != nil {
			return "", false, err
		}
	case err != nil:
		return "", false, err
	case !pol.AllowExistingUsers:
		return fail(uid, "account_exists", errUpstreamAccountExists())
	}
	owner, err := s.linkUpstream(ctx, id.Provider, id.Subject, uid)
	if err != nil {
		return "", false, err
	}
	if owner != uid {
		// Another sign-in of the same person linked another account first.
		uid = owner
	} else if other, err := s.otherUpstreamSubject(ctx, id.Provider, id.Subject, uid); err != nil {
		return "", false, err
	} else if other {
		// The account already belongs to another person of this provider
		// (a user name given again to someone new): never hand it over.
		_, _ = s.db.Exec(ctx, `DELETE FROM oidc_links WHERE provider_id = $1 AND subject = $2`, id.Provider, id.Subject)
		return fail(uid, "account_linked_to_other_subject", errUpstreamAccountExists())
	}
	if a, err = selectAccount(ctx, s.db, uid); err != nil {
		return "", false, err
	}
	if !a.deactivated {
		s.syncUpstreamEmail(ctx, id, a.userID)
	}
	return s.upstreamDone(ctx, a, addr, via)
}

func errUpstreamAccountExists() error {
	return merr.Forbidden("An account of that name exists already and is not linked to your company sign-in; ask your administrator")
}

func (s *Service) upstreamDone(ctx context.Context, a account, addr, via string) (string, bool, error) {
	if a.deactivated {
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: a.userID, Addr: addr, Detail: map[string]any{"reason": "deactivated", "via": via}})
		return "", false, merr.UserDeactivated("This account has been deactivated")
	}
	s.rememberAddr(ctx, a.userID, addr)
	return a.userID, a.admin, nil
}

// upstreamLink is the account linked to a provider's subject ("" if none).
func (s *Service) upstreamLink(ctx context.Context, provider, subject string) (string, error) {
	var uid string
	err := s.db.QueryRow(ctx, `SELECT user_id FROM oidc_links WHERE provider_id = $1 AND subject = $2`, provider, subject).Scan(&uid)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("select oidc link %s: %w", provider, err)
	}
	return uid, nil
}

// linkUpstream links subject to userID unless it is linked already, and
// returns the account it is linked to.
func (s *Service) linkUpstream(ctx context.Context, provider, subject, userID string) (string, error) {
	var owner string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO oidc_links (provider_id, subject, user_id, created_ts) VALUES ($1, $2, $3, $4)
ON CONFLICT (provider_id, subject) DO NOTHING`, provider, subject, userID, s.now().UnixMilli()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT user_id FROM oidc_links WHERE provider_id = $1 AND subject = $2`, provider, subject).Scan(&owner)
	})
	if err != nil {
		return "", fmt.Errorf("link oidc subject of %s to %s: %w", provider, userID, err)
	}
	return owner, nil
}

// otherUpstreamSubject tells whether userID is linked to another subject
// of the same provider.
func (s *Service) otherUpstreamSubject(ctx context.Context, provider, subject, userID string) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM oidc_links WHERE provider_id = $1 AND user_id = $2 AND subject <> $3`, provider, userID, subject).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("select oidc links of %s: %w", userID, err)
	}
	return n > 0, nil
}

// ExternalID is one company identity linked to an account, as the admin
// API's user shows it (external_ids).
type ExternalID struct {
	AuthProvider string `json:"auth_provider"`
	ExternalID   string `json:"external_id"`
}

// ExternalIDs lists the company identities (provider, subject) that sign
// in to the account.
func (s *Service) ExternalIDs(ctx context.Context, userID string) ([]ExternalID, error) {
	rows, err := s.db.Query(ctx, `SELECT provider_id, subject FROM oidc_links WHERE user_id = $1 ORDER BY provider_id, subject`, userID)
	if err != nil {
		return nil, fmt.Errorf("select external ids of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []ExternalID{}
	for rows.Next() {
		var e ExternalID
		if err := rows.Scan(&e.AuthProvider, &e.ExternalID); err != nil {
			return nil, fmt.Errorf("select external ids of %s: %w", userID, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
