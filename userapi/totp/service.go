package totp

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// RecoveryCodeCount is how many recovery codes a user gets at a time.
const RecoveryCodeCount = 10

// Attempt limits: after MaxFailures wrong codes within FailureWindow, a
// user's codes are refused until the window has passed since the first of
// them. A right code resets the count.
const (
	MaxFailures   = 5
	FailureWindow = 10 * time.Minute
)

// Options configure the service.
type Options struct {
	// Issuer names the server in authenticator apps (the server name).
	Issuer string
	// EncryptionKey, when not empty, encrypts secrets at rest (AES-256-GCM
	// with a key derived from it); existing secrets stored without it stay
	// readable, and those stored with it need it.
	EncryptionKey string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Service keeps the users' TOTP secrets and recovery codes.
type Service struct {
	db     *storage.DB
	issuer string
	aead   cipher.AEAD
	now    func() time.Time

	mu    sync.Mutex
	fails map[string]*failures
}

type failures struct {
	n     int
	first time.Time
}

// New returns the service over db.
func New(db *storage.DB, opts Options) *Service {
	s := &Service{db: db, issuer: opts.Issuer, now: opts.Now, fails: map[string]*failures{}}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.EncryptionKey != "" {
		k := sha256.Sum256([]byte("haven totp secrets\x00" + opts.EncryptionKey))
		block, _ := aes.NewCipher(k[:]) // a 32-byte key never fails
		s.aead, _ = cipher.NewGCM(block)
	}
	return s
}

// Enrolment is a new secret: its base32 form for typing and its otpauth URI
// for a QR code.
type Enrolment struct {
	Secret string
	URI    string
}

// Status is a user's enrolment.
type Status struct {
	// Enrolled: a confirmed secret; codes are asked for at sign-in.
	Enrolled bool
	// Pending: a secret waits for its first code (the user's own enrolment).
	Pending bool
	// RecoveryCodes is how many unused recovery codes are left.
	RecoveryCodes int
}

// Status reads userID's enrolment.
func (s *Service) Status(ctx context.Context, userID string) (Status, error) {
	var st Status
	var confirmed bool
	err := s.db.QueryRow(ctx, `SELECT confirmed FROM totp_secrets WHERE user_id = $1`, userID).Scan(&confirmed)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("select totp of %s: %w", userID, err)
	}
	st.Enrolled, st.Pending = confirmed, !confirmed
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM totp_recovery_codes WHERE user_id = $1 AND used_ts IS NULL`, userID).Scan(&st.RecoveryCodes); err != nil {
		return st, fmt.Errorf("count recovery codes of %s: %w", userID, err)
	}
	return st, nil
}

// Enrolled tells whether userID has a confirmed secret.
func (s *Service) Enrolled(ctx context.Context, userID string) (bool, error) {
	st, err := s.Status(ctx, userID)
	return st.Enrolled, err
}

// Begin starts a user's own enrolment: a new secret that counts only once
// Confirm has seen a code from it. An enrolled user must be reset first.
func (s *Service) Begin(ctx context.Context, userID string) (Enrolment, error) {
	return s.store(ctx, userID, false)
}

// Enroll is an admin's enrolment: the new secret replaces any other and
// counts at once; the user's recovery codes are dropped.
func (s *Service) Enroll(ctx context.Context, userID string) (Enrolment, error) {
	return s.store(ctx, userID, true)
}

func (s *Service) store(ctx context.Context, userID string, confirmed bool) (Enrolment, error) {
	secret := NewSecret()
	stored, err := s.seal(userID, secret)
	if err != nil {
		return Enrolment{}, err
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if !confirmed {
			var was bool
			err := tx.QueryRow(ctx, `SELECT confirmed FROM totp_secrets WHERE user_id = $1`, userID).Scan(&was)
			if err == nil && was {
				return merr.Forbidden("Two-factor sign-in is already set up for this account; an admin can reset it")
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("select totp of %s: %w", userID, err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO totp_secrets (user_id, secret, confirmed, last_step, created_ts) VALUES ($1, $2, $3, 0, $4)
ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, confirmed = excluded.confirmed, last_step = 0, created_ts = excluded.created_ts`,
			userID, stored, confirmed, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("store totp of %s: %w", userID, err)
		}
		if confirmed {
			if _, err := tx.Exec(ctx, `DELETE FROM totp_recovery_codes WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("delete recovery codes of %s: %w", userID, err)
			}
		}
		return nil
	})
	if err != nil {
		return Enrolment{}, err
	}
	return Enrolment{Secret: EncodeSecret(secret), URI: URI(s.issuer, userID, secret)}, nil
}

// Confirm finishes a user's own enrolment with a code from the new secret
// and returns the user's recovery codes (shown once).
func (s *Service) Confirm(ctx context.Context, userID, code string) ([]string, error) {
	if err := s.allowed(userID); err != nil {
		return nil, err
	}
	secret, confirmed, last, err := s.load(ctx, userID)
	if err != nil {
		return nil, err
	}
	if secret == nil || confirmed {
		return nil, merr.Forbidden("There is no two-factor set-up waiting for a code; start again")
	}
	step, ok := Match(secret, code, s.now())
	if !ok || step <= last {
		s.fail(userID)
		return nil, merr.Forbidden("The code is wrong; check the time on your phone and try the next code")
	}
	res, err := s.db.Exec(ctx, `UPDATE totp_secrets SET confirmed = TRUE, last_step = $2 WHERE user_id = $1 AND confirmed = FALSE AND last_step < $2`, userID, step)
	if err != nil {
		return nil, fmt.Errorf("confirm totp of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, merr.Forbidden("There is no two-factor set-up waiting for a code; start again")
	}
	s.succeed(userID)
	return s.NewRecoveryCodes(ctx, userID)
}

// Verify checks a second factor of an enrolled user: a code from the app
// (accepted once: a code, or an older one, cannot be used again) or an
// unused recovery code (used up). Wrong codes count towards the attempt
// limit, and a limited user gets M_LIMIT_EXCEEDED whatever the code.
func (s *Service) Verify(ctx context.Context, userID, code string) error {
	if err := s.allowed(userID); err != nil {
		return err
	}
	code = NormalizeCode(code)
	if code == "" {
		return merr.Forbidden("A two-factor code is required")
	}
	secret, confirmed, last, err := s.load(ctx, userID)
	if err != nil {
		return err
	}
	if secret == nil || !confirmed {
		return merr.Forbidden("Two-factor sign-in is not set up for this account")
	}
	if len(code) == Digits && strings.Trim(code, "0123456789") == "" {
		step, ok := Match(secret, code, s.now())
		if ok && step > last {
			res, err := s.db.Exec(ctx, `UPDATE totp_secrets SET last_step = $2 WHERE user_id = $1 AND last_step < $2`, userID, step)
			if err != nil {
				return fmt.Errorf("update totp step of %s: %w", userID, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				s.succeed(userID)
				return nil
			}
		}
		s.fail(userID)
		if ok {
			return merr.Forbidden("This code has already been used; wait for the next one")
		}
		return merr.Forbidden("The two-factor code is wrong")
	}
	res, err := s.db.Exec(ctx, `UPDATE totp_recovery_codes SET used_ts = $3 WHERE user_id = $1 AND code_hash = $2 AND used_ts IS NULL`,
		userID, hashRecovery(code), s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("use recovery code of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		s.succeed(userID)
		return nil
	}
	s.fail(userID)
	return merr.Forbidden("The two-factor code is wrong")
}

// NewRecoveryCodes replaces userID's recovery codes with new ones and
// returns them; only their hashes are kept.
func (s *Service) NewRecoveryCodes(ctx context.Context, userID string) ([]string, error) {
	codes := make([]string, RecoveryCodeCount)
	for i := range codes {
		codes[i] = newRecoveryCode()
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM totp_recovery_codes WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete recovery codes of %s: %w", userID, err)
		}
		for _, c := range codes {
			if _, err := tx.Exec(ctx, `INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, userID, hashRecovery(c)); err != nil {
				return fmt.Errorf("insert recovery code of %s: %w", userID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return codes, nil
}

// Reset removes userID's secret and recovery codes; false when there was
// no secret.
func (s *Service) Reset(ctx context.Context, userID string) (bool, error) {
	var n int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `DELETE FROM totp_secrets WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("delete totp of %s: %w", userID, err)
		}
		n, _ = res.RowsAffected()
		if _, err := tx.Exec(ctx, `DELETE FROM totp_recovery_codes WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete recovery codes of %s: %w", userID, err)
		}
		return nil
	})
	if err == nil {
		s.succeed(userID)
	}
	return n > 0, err
}

func (s *Service) load(ctx context.Context, userID string) (secret []byte, confirmed bool, last int64, err error) {
	var stored string
	err = s.db.QueryRow(ctx, `SELECT secret, confirmed, last_step FROM totp_secrets WHERE user_id = $1`, userID).Scan(&stored, &confirmed, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, 0, nil
	}
	if err != nil {
		return nil, false, 0, fmt.Errorf("select totp of %s: %w", userID, err)
	}
	secret, err = s.open(userID, stored)
	return secret, confirmed, last, err
}

// seal is the stored form of a secret.
func (s *Service) seal(userID string, secret []byte) (string, error) {
	if s.aead == nil {
		return "plain:" + EncodeSecret(secret), nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("totp nonce: %w", err)
	}
	return "v1:" + base64.RawStdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, secret, []byte(userID))), nil
}

func (s *Service) open(userID, stored string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(stored, "plain:"); ok {
		return DecodeSecret(rest)
	}
	rest, ok := strings.CutPrefix(stored, "v1:")
	if !ok {
		return nil, fmt.Errorf("totp secret of %s: unknown format", userID)
	}
	if s.aead == nil {
		return nil, fmt.Errorf("totp secret of %s is encrypted but auth.totp_encryption_key is not set", userID)
	}
	raw, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return nil, fmt.Errorf("totp secret of %s: malformed", userID)
	}
	secret, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(userID))
	if err != nil {
		return nil, fmt.Errorf("totp secret of %s cannot be decrypted: was auth.totp_encryption_key changed?", userID)
	}
	return secret, nil
}

// allowed refuses a user with too many wrong codes lately.
func (s *Service) allowed(userID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fails[userID]
	if f == nil {
		return nil
	}
	left := FailureWindow - s.now().Sub(f.first)
	if left <= 0 {
		delete(s.fails, userID)
		return nil
	}
	if f.n >= MaxFailures {
		return merr.LimitExceeded(left.Milliseconds() + 1)
	}
	return nil
}

func (s *Service) fail(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.fails) > 100000 {
		for k, f := range s.fails {
			if now.Sub(f.first) > FailureWindow {
				delete(s.fails, k)
			}
		}
	}
	f := s.fails[userID]
	if f == nil || now.Sub(f.first) > FailureWindow {
		f = &failures{first: now}
		s.fails[userID] = f
	}
	f.n++
}

func (s *Service) succeed(userID string) {
	s.mu.Lock()
	delete(s.fails, userID)
	s.mu.Unlock()
}

const recoveryAlphabet = "abcdefghjkmnpqrstuvwxyz23456789" // no 0/o, 1/l/i

// newRecoveryCode is ten characters (about 49 bits) shown as xxxxx-xxxxx.
func newRecoveryCode() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 11)
	for i, v := range b {
		if i == 5 {
			out = append(out, '-')
		}
		out = append(out, recoveryAlphabet[int(v)%len(recoveryAlphabet)])
	}
	return string(out)
}

func hashRecovery(code string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(NormalizeCode(code))))
	return hex.EncodeToString(sum[:])
}
