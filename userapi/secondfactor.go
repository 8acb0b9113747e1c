package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// StageSSO is the m.login.sso UIA stage: completed on Haven's sign-in page
// (the stage's fallback page), where the user gives the password and the
// second factor again.
const StageSSO = "m.login.sso"

// SecondFactor is the two-factor policy (userapi/totp.Policy): whether an
// account must give a second factor, which m.login.password cannot carry.
type SecondFactor interface {
	Required(ctx context.Context, userID string, admin bool) (bool, error)
}

// ErrSecondFactorRequired is the refusal of m.login.password for an account
// that must sign in with a second factor.
func ErrSecondFactorRequired() error {
	return merr.Forbidden("This account signs in with a second factor (TOTP): choose your client's single sign-on or browser sign-in (\"Continue with SSO\") instead of the password form")
}

// passwordLoginAllowed refuses a password login of an account that must
// use a second factor. It is asked after the password was checked, so the
// refusal tells nothing to someone without the password.
func (s *Service) passwordLoginAllowed(ctx context.Context, a account, addr string) error {
	if s.opts.SecondFactor == nil {
		return nil
	}
	need, err := s.opts.SecondFactor.Required(ctx, a.userID, a.admin)
	if err != nil {
		return err
	}
	if need {
		s.audit(ctx, "login_failed", logrus.Fields{"user_id": a.userID, "client_addr": addr, "reason": "second factor required"})
		return ErrSecondFactorRequired()
	}
	return nil
}

// withoutPasswordSession turns a client's registration of an account that
// must sign in with a second factor into one without a session (as
// inhibit_login): a password alone must not open a session for such an
// account, at registration no more than at login. The person signs in on
// the sign-in page afterwards, which sets the second factor up first.
// Registrations by the server's operator (shared secret, admin API,
// command line) and application services are left as they are.
func (s *Service) withoutPasswordSession(ctx context.Context, userID string, req RegisterRequest) (RegisterRequest, error) {
	if req.InhibitLogin || req.Via != "client" || req.AppService != "" || req.Guest || s.opts.SecondFactor == nil {
		return req, nil
	}
	need, err := s.opts.SecondFactor.Required(ctx, userID, req.Admin)
	if err != nil {
		return req, err
	}
	req.InhibitLogin = need
	return req, nil
}

// CheckCredentials checks a user's password for the sign-in page, under
// the same per-account backoff as m.login.password (addr is the client's
// address: failures from addresses that signed in before count apart), and
// returns the user ID and whether the account is an admin's.
func (s *Service) CheckCredentials(ctx context.Context, user, password, addr string) (userID string, admin bool, err error) {
	userID, ok := s.resolveLogin(user)
	if !ok || password == "" {
		return "", false, errBadLogin()
	}
	a, err := s.verifyPassword(ctx, userID, password, addr)
	if err != nil {
		return "", false, err
	}
	if a.deactivated {
		return "", false, merr.UserDeactivated("This account has been deactivated")
	}
	return a.userID, a.admin, nil
}

// IsAdmin tells whether userID is a server admin (false when unknown).
func (s *Service) IsAdmin(ctx context.Context, userID string) (bool, error) {
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return a.admin, err
}

// sensitiveFlows are the UIA flows of an operation on an existing account:
// the password, or for an account with a second factor the m.login.sso
// stage (the sign-in page asks for both).
func (s *Service) sensitiveFlows(ctx context.Context, req UIARequest) ([][]string, error) {
	if req.UserID == "" || !slices.EqualFunc(req.Flows, PasswordFlows(), slices.Equal) {
		return req.Flows, nil
	}
	if s.opts.UpstreamUIA {
		only, err := s.upstreamOnly(ctx, req.UserID)
		if err != nil || only {
			return [][]string{{StageSSO}}, err
		}
	}
	if s.opts.SecondFactor == nil {
		return req.Flows, nil
	}
	admin, err := s.IsAdmin(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	need, err := s.opts.SecondFactor.Required(ctx, req.UserID, admin)
	if err != nil || !need {
		return req.Flows, err
	}
	return [][]string{{StageSSO}}, nil
}

// UIASessionUser returns the user of a UIA session that is still valid
// (M_UNKNOWN otherwise, and for a registration's session, which has none).
func (s *Service) UIASessionUser(ctx context.Context, sessionID string) (string, error) {
	var userID string
	var created int64
	err := s.db.QueryRow(ctx, `SELECT user_id, created_ts FROM uia_sessions WHERE session_id = $1`, sessionID).Scan(&userID, &created)
	if err != nil || s.now().UnixMilli()-created > UIASessionLifetime.Milliseconds() || userID == "" {
		return "", merr.Unknown("Unknown or expired authentication session; start again from your client")
	}
	return userID, nil
}

// CompleteUIAStage marks stage done in a UIA session of userID (the
// sign-in page, after checking the password and the second factor); the
// client then retries its request with the session alone.
func (s *Service) CompleteUIAStage(ctx context.Context, sessionID, userID, stage string) error {
	var owner, raw string
	var created int64
	err := s.db.QueryRow(ctx, `SELECT user_id, data, created_ts FROM uia_sessions WHERE session_id = $1`, sessionID).Scan(&owner, &raw, &created)
	if err != nil || s.now().UnixMilli()-created > UIASessionLifetime.Milliseconds() {
		return merr.Unknown("Unknown or expired authentication session; start again from your client")
	}
	if owner != userID {
		return merr.Forbidden("This authentication session belongs to another user")
	}
	var data uiaData
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		return fmt.Errorf("decode auth session: %w", err)
	}
	if !slices.Contains(data.Completed, stage) {
		data.Completed = append(data.Completed, stage)
	}
	return s.saveUIASession(ctx, sessionID, data)
}
