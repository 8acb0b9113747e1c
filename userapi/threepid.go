package userapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/mailer"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Email addresses on accounts (spec: "Adding Account Administrative
// Contact Information" and the password reset of /account/password).
// requestToken sends an email with a link to Haven's confirmation page
// (and a code); the page, or a client posting the code, validates the
// session; /account/3pid/add then binds the address, or /account/password
// with the m.login.email.identity stage sets a new password.

// StageEmailIdentity is the UIA stage of a validated email address.
const StageEmailIdentity = "m.login.email.identity"

// ThreePIDSessionLifetime is how long a validation session lasts.
const ThreePIDSessionLifetime = time.Hour

// Purposes of a validation session.
const (
	PurposePassword = "password"
	PurposeAdd      = "add"
)

// SubmitTokenPath is Haven's confirmation page and submit_url.
const SubmitTokenPath = "/_haven/email/submit_token"

// MailSender sends email (internal/mailer).
type MailSender interface {
	Send(ctx context.Context, msg mailer.Message) error
}

// ThreePID is an address bound to an account.
type ThreePID struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	AddedAt     int64  `json:"added_at"`
}

// TokenRequest is the body of an email requestToken.
type TokenRequest struct {
	ClientSecret string `json:"client_secret"`
	Email        string `json:"email"`
	SendAttempt  *int64 `json:"send_attempt"`
	NextLink     string `json:"next_link,omitempty"`
	IDServer     string `json:"id_server,omitempty"`
}

var clientSecretRE = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

// EmailEnabled tells whether email is configured.
func (s *Service) EmailEnabled() bool { return s.opts.Mail != nil }

// normalizeEmail checks an address and returns it lower-cased.
func normalizeEmail(addr string) (string, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Address != strings.TrimSpace(addr) || len(addr) > 254 || !strings.Contains(addr, "@") {
		return "", merr.InvalidParam("email is not a valid email address")
	}
	return strings.ToLower(a.Address), nil
}

// emailLimiter bounds the validation emails sent to one address.
type emailLimiter struct {
	mu   sync.Mutex
	sent map[string][]time.Time
}

func (l *emailLimiter) allow(addr string, perHour int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent == nil {
		l.sent = map[string][]time.Time{}
	}
	keep := l.sent[addr][:0]
	for _, t := range l.sent[addr] {
		if now.Sub(t) < time.Hour {
			keep = append(keep, t)
		}
	}
	if len(keep) >= perHour {
		l.sent[addr] = keep
		return false
	}
	l.sent[addr] = append(keep, now)
	if len(l.sent) > 10000 { // forget idle addresses
		for k, v := range l.sent {
			if len(v) == 0 || now.Sub(v[len(v)-1]) >= time.Hour {
				delete(l.sent, k)
			}
		}
	}
	return true
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

// RequestEmailToken starts (or, for the same client_secret and address
// with no newer send_attempt, repeats the answer of) a validation session
// and sends the email. For a password reset the address must belong to an
// account (400 M_THREEPID_NOT_FOUND); for adding one it must not
// (M_THREEPID_IN_USE).
func (s *Service) RequestEmailToken(ctx context.Context, purpose string, req TokenRequest) (sid string, err error) {
	if s.opts.Mail == nil {
		return "", merr.Custom(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server sends no email")
	}
	if req.ClientSecret == "" || req.Email == "" || req.SendAttempt == nil {
		return "", merr.MissingParam("client_secret, email and send_attempt are required")
	}
	if !clientSecretRE.MatchString(req.ClientSecret) {
		return "", merr.InvalidParam("client_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]")
	}
	addr, err := normalizeEmail(req.Email)
	if err != nil {
		return "", err
	}
	owner, err := s.ThreePIDOwner(ctx, "email", addr)
	if err != nil {
		return "", err
	}
	switch {
	case purpose == PurposePassword && owner == "":
		return "", merr.Custom(400, "M_THREEPID_NOT_FOUND", "No account uses this email address")
	case purpose == PurposeAdd && owner != "":
		return "", merr.Custom(400, "M_THREEPID_IN_USE", "This email address is already in use")
	}
	now := s.now()
	// The same attempt again answers the same session without a new email.
	var prevSID string
	var prevAttempt int64
	err = s.db.QueryRow(ctx, `SELECT sid, send_attempt FROM threepid_sessions WHERE client_secret = $1 AND medium = 'email' AND address = $2 AND purpose = $3 AND created_ts > $4
ORDER BY created_ts DESC LIMIT 1`, req.ClientSecret, addr, purpose, now.Add(-ThreePIDSessionLifetime).UnixMilli()).Scan(&prevSID, &prevAttempt)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("select validation session: %w", err)
	}
	if prevSID != "" && *req.SendAttempt <= prevAttempt {
		return prevSID, nil
	}
	if !s.mailLimit.allow(addr, max(s.opts.EmailTokensPerHour, 1), now) {
		return "", merr.LimitExceeded(time.Hour.Milliseconds() / int64(max(s.opts.EmailTokensPerHour, 1)))
	}
	var raw [20]byte
	_, _ = rand.Read(raw[:])
	token := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:])
	sid = newSessionID()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM threepid_sessions WHERE created_ts < $1`, now.Add(-ThreePIDSessionLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("delete expired validation sessions: %w", err)
		}
		if prevSID != "" {
			// A newer attempt replaces the session: the older email's link stops working.
			if _, err := tx.Exec(ctx, `DELETE FROM threepid_sessions WHERE sid = $1`, prevSID); err != nil {
				return fmt.Errorf("delete validation session: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO threepid_sessions (sid, client_secret, medium, address, purpose, token_hash, send_attempt, created_ts)
VALUES ($1, $2, 'email', $3, $4, $5, $6, $7)`, sid, req.ClientSecret, addr, purpose, hashToken(token), *req.SendAttempt, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert validation session: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	link := s.opts.PublicBaseURL + SubmitTokenPath + "?" + url.Values{"sid": {sid}, "client_secret": {req.ClientSecret}, "token": {token}}.Encode()
	tmpl := "add_email"
	if purpose == PurposePassword {
		tmpl = "password_reset"
	}
	msg, err := mailer.Render(tmpl, addr, mailer.ValidationData{ServerName: s.opts.ServerName, Address: addr, Link: link, Token: token})
	if err != nil {
		return "", err
	}
	if err := s.opts.Mail.Send(ctx, msg); err != nil {
		logging.From(ctx).WithError(err).WithField("purpose", purpose).Error("email: validation email not sent")
		return "", merr.Custom(500, "M_UNKNOWN", "The email could not be sent; try again later")
	}
	s.audit(ctx, "email_token_sent", logrus.Fields{"purpose": purpose, "user_id": owner})
	return sid, nil
}

// SubmitEmailToken validates a session with the token from its email.
func (s *Service) SubmitEmailToken(ctx context.Context, sid, clientSecret, token string) error {
	if sid == "" || clientSecret == "" || token == "" {
		return merr.MissingParam("sid, client_secret and token are required")
	}
	var secret, hash string
	var created int64
	err := s.db.QueryRow(ctx, `SELECT client_secret, token_hash, created_ts FROM threepid_sessions WHERE sid = $1`, sid).Scan(&secret, &hash, &created)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && s.now().UnixMilli()-created > ThreePIDSessionLifetime.Milliseconds()) {
		return merr.Custom(400, "M_NO_VALID_SESSION", "Unknown or expired validation session; ask for a new email")
	}
	if err != nil {
		return fmt.Errorf("select validation session %s: %w", sid, err)
	}
	tok := strings.ToUpper(strings.Join(strings.Fields(token), ""))
	if subtle.ConstantTimeCompare([]byte(secret), []byte(clientSecret)) != 1 || subtle.ConstantTimeCompare([]byte(hash), []byte(hashToken(tok))) != 1 {
		s.audit(ctx, "email_token_wrong", logrus.Fields{"sid": sid})
		return merr.Custom(400, "M_INVALID_PARAM", "The code or link is not right")
	}
	if _, err := s.db.Exec(ctx, `UPDATE threepid_sessions SET validated_ts = $2 WHERE sid = $1 AND validated_ts = 0`, sid, s.now().UnixMilli()); err != nil {
		return fmt.Errorf("validate session %s: %w", sid, err)
	}
	return nil
}

// validatedSession returns the address and purpose of a validated, live
// session; M_SESSION_NOT_VALIDATED while it is not validated yet.
func (s *Service) validatedSession(ctx context.Context, sid, clientSecret string) (addr, purpose string, validated int64, err error) {
	var secret string
	var created int64
	err = s.db.QueryRow(ctx, `SELECT client_secret, address, purpose, created_ts, validated_ts FROM threepid_sessions WHERE sid = $1 AND medium = 'email'`, sid).
		Scan(&secret, &addr, &purpose, &created, &validated)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (s.now().UnixMilli()-created > ThreePIDSessionLifetime.Milliseconds() ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(clientSecret)) != 1)) {
		return "", "", 0, merr.Custom(400, "M_NO_VALID_SESSION", "Unknown or expired validation session")
	}
	if err != nil {
		return "", "", 0, fmt.Errorf("select validation session %s: %w", sid, err)
	}
	if validated == 0 {
		return "", "", 0, merr.Custom(400, "M_SESSION_NOT_VALIDATED", "The email address has not been confirmed yet: open the link in the email")
	}
	return addr, purpose, validated, nil
}

// ThreePIDOwner returns the user an address is bound to, or "".
func (s *Service) ThreePIDOwner(ctx context.Context, medium, addr string) (string, error) {
	var userID string
	err := s.db.QueryRow(ctx, `SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2`, medium, strings.ToLower(addr)).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("select owner of a 3pid: %w", err)
	}
	return userID, nil
}

// AddThreePID binds the address of a validated "add" session to userID
// (after the caller's UIA) and ends the session.
func (s *Service) AddThreePID(ctx context.Context, userID, sid, clientSecret string) error {
	if sid == "" || clientSecret == "" {
		return merr.MissingParam("sid and client_secret are required")
	}
	addr, purpose, validated, err := s.validatedSession(ctx, sid, clientSecret)
	if err != nil {
		return err
	}
	if purpose != PurposeAdd {
		return merr.Custom(400, "M_NO_VALID_SESSION", "This session was not started by /account/3pid/email/requestToken")
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		var owner string
		err := tx.QueryRow(ctx, `SELECT user_id FROM user_threepids WHERE medium = 'email' AND address = $1`, addr).Scan(&owner)
		switch {
		case err == nil && owner != userID:
			return merr.Custom(400, "M_THREEPID_IN_USE", "This email address is already in use")
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("select owner of a 3pid: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts) VALUES ('email', $1, $2, $3, $4)
ON CONFLICT (medium, address) DO UPDATE SET validated_ts = excluded.validated_ts`, addr, userID, validated, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("insert 3pid: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM threepid_sessions WHERE sid = $1`, sid); err != nil {
			return fmt.Errorf("delete validation session: %w", err)
		}
		return nil
	})
	if err == nil {
		// After the commit: the audit log writes through the database too.
		s.audit(ctx, "threepid_added", logrus.Fields{"user_id": userID})
	}
	return err
}

// ThreePIDs lists the addresses bound to a user.
func (s *Service) ThreePIDs(ctx context.Context, userID string) ([]ThreePID, error) {
	rows, err := s.db.Query(ctx, `SELECT medium, address, validated_ts, added_ts FROM user_threepids WHERE user_id = $1 ORDER BY added_ts, address`, userID)
	if err != nil {
		return nil, fmt.Errorf("select 3pids of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []ThreePID{}
	for rows.Next() {
		var t ThreePID
		if err := rows.Scan(&t.Medium, &t.Address, &t.ValidatedAt, &t.AddedAt); err != nil {
			return nil, fmt.Errorf("select 3pids of %s: %w", userID, err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteThreePID unbinds an address from a user; unknown ones are fine.
func (s *Service) DeleteThreePID(ctx context.Context, userID, medium, addr string) error {
	if medium == "" || addr == "" {
		return merr.MissingParam("medium and address are required")
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3`, userID, medium, strings.ToLower(addr)); err != nil {
		return fmt.Errorf("delete 3pid of %s: %w", userID, err)
	}
	return nil
}

// threePIDCreds are the m.login.email.identity stage's credentials.
type threePIDCreds struct {
	SID          string `json:"sid"`
	ClientSecret string `json:"client_secret"`
}

// emailIdentityUser checks the stage's credentials for a password reset
// and returns the account the validated address belongs to.
func (s *Service) emailIdentityUser(ctx context.Context, c *threePIDCreds) (string, error) {
	if c == nil || c.SID == "" || c.ClientSecret == "" {
		return "", merr.MissingParam("threepid_creds with sid and client_secret is required")
	}
	addr, purpose, _, err := s.validatedSession(ctx, c.SID, c.ClientSecret)
	if err != nil {
		return "", err
	}
	if purpose != PurposePassword {
		return "", merr.Custom(400, "M_NO_VALID_SESSION", "This session was not started by /account/password/email/requestToken")
	}
	owner, err := s.ThreePIDOwner(ctx, "email", addr)
	if err != nil {
		return "", err
	}
	if owner == "" {
		return "", merr.Custom(400, "M_THREEPID_NOT_FOUND", "No account uses this email address any more")
	}
	return owner, nil
}

// EmailIdentityUser resolves the account of a completed password reset
// (the request's "auth" object with threepid_creds) and ends the
// validation session, so that its link sets a password once.
func (s *Service) EmailIdentityUser(ctx context.Context, auth []byte) (string, error) {
	c := parseCreds(auth)
	userID, err := s.emailIdentityUser(ctx, c)
	if err != nil {
		return "", err
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM threepid_sessions WHERE sid = $1`, c.SID); err != nil {
		return "", fmt.Errorf("delete validation session: %w", err)
	}
	return userID, nil
}
