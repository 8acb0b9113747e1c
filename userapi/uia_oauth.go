package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/storage"
)

// The m.oauth UIA stage (MSC4312). A session of the OAuth 2.0 API has no
// password to give, so an operation that needs user-interactive auth (the
// reset of the cross-signing keys) offers it this stage instead, with a
// link to the account page. There the user signs in (with the second
// factor where the policy asks for it) and approves the operation; the
// approval lets the client's next try of the operation through once,
// within ApprovalLifetime. Approvals live in uia_approvals.

// UIA stages of MSC4312: the stable name and the unstable one clients of
// other servers know.
const (
	StageOAuth         = "m.oauth"
	StageOAuthUnstable = "org.matrix.cross_signing_reset"
)

// ApprovalLifetime is how long an approval given on the account page waits
// for the client's retry.
const ApprovalLifetime = 10 * time.Minute

// OpCrossSigning is the UIA operation of replacing the cross-signing keys.
const OpCrossSigning = "cross_signing"

// approvableOps are the operations the account page can approve, with the
// account management action (MSC4191) that deep-links to each.
var approvableOps = map[string]string{OpCrossSigning: StageOAuthUnstable}

func isOAuthStage(t string) bool { return t == StageOAuth || t == StageOAuthUnstable }

// oauthFlows replaces the flows of an approvable operation requested from a
// device of the OAuth 2.0 API by the m.oauth stage (in both names, one flow
// each). Other devices keep their flows (password, or m.login.sso under
// the two-factor policy).
func (s *Service) oauthFlows(ctx context.Context, req UIARequest) ([][]string, error) {
	if s.opts.AccountURL == "" || req.UserID == "" || req.DeviceID == "" || approvableOps[req.Op] == "" {
		return req.Flows, nil
	}
	ok, err := s.isOAuthDevice(ctx, req.UserID, req.DeviceID)
	if err != nil || !ok {
		return req.Flows, err
	}
	return [][]string{{StageOAuth}, {StageOAuthUnstable}}, nil
}

// isOAuthDevice tells whether the OAuth 2.0 API made the device.
func (s *Service) isOAuthDevice(ctx context.Context, userID, deviceID string) (bool, error) {
	_, _, ok, err := s.OAuthSession(ctx, userID, deviceID)
	return ok, err
}

// uiaParams are the params of a challenge: the account page's link for
// the m.oauth stage.
func (s *Service) uiaParams(flows [][]string) map[string]any {
	params := map[string]any{}
	if !offered(flows, StageOAuth) {
		return params
	}
	link := s.opts.AccountURL + "?" + url.Values{"action": {StageOAuthUnstable}}.Encode()
	params[StageOAuth] = map[string]string{"url": link}
	params[StageOAuthUnstable] = map[string]string{"url": link}
	return params
}

// ApproveCrossSigningReset records that userID, signed in on the account
// page, approved the reset of their cross-signing keys: the next try
// within ApprovalLifetime from a session of the OAuth 2.0 API passes UIA.
func (s *Service) ApproveCrossSigningReset(ctx context.Context, userID, addr string) error {
	now := s.now()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM uia_approvals WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("delete lapsed approvals: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO uia_approvals (user_id, op, expires_ts) VALUES ($1, $2, $3)
ON CONFLICT (user_id, op) DO UPDATE SET expires_ts = excluded.expires_ts`, userID, OpCrossSigning, now.Add(ApprovalLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("insert approval: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{Action: "cross_signing_reset.approved", Actor: userID, Target: userID, Addr: addr, OK: true})
	return nil
}

// takeApproval uses up userID's approval of op, telling whether there was
// one still valid.
func (s *Service) takeApproval(ctx context.Context, userID, op string) (bool, error) {
	var ok bool
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var expires int64
		err := tx.QueryRow(ctx, `DELETE FROM uia_approvals WHERE user_id = $1 AND op = $2 RETURNING expires_ts`, userID, op).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("take approval: %w", err)
		}
		ok = expires >= s.now().UnixMilli()
		return nil
	})
	return ok, err
}
