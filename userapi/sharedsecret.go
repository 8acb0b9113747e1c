package userapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Shared-secret registration, as Synapse's /_synapse/admin/v1/register
// defines it (so its register_new_matrix_user tool and other scripts work):
// GET hands out a nonce; POST carries the nonce, the new user's name and
// password, and mac = hex(HMAC-SHA1(shared_secret,
// nonce NUL username NUL password NUL ("admin"|"notadmin") [NUL user_type])).
// Nonces are stored (so any Haven process can check them), single-use and
// expire after NonceLifetime.

// NonceLifetime is how long a registration nonce stays usable.
const NonceLifetime = 2 * time.Minute

func errSharedSecretOff() error {
	return merr.Unknown("Shared secret registration is not enabled")
}

// SharedSecretEnabled tells whether registration.shared_secret is set.
func (s *Service) SharedSecretEnabled() bool { return s.opts.SharedSecret != "" }

// NewRegistrationNonce stores and returns a fresh nonce.
func (s *Service) NewRegistrationNonce(ctx context.Context) (string, error) {
	if !s.SharedSecretEnabled() {
		return "", errSharedSecretOff()
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random nonce: %w", err)
	}
	nonce := hex.EncodeToString(b[:])
	now := s.now()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM registration_nonces WHERE created_ts < $1`, now.Add(-NonceLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("delete expired nonces: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO registration_nonces (nonce, created_ts) VALUES ($1, $2)`, nonce, now.UnixMilli()); err != nil {
			return fmt.Errorf("insert nonce: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return nonce, nil
}

// SharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type SharedSecretRequest struct {
	Nonce       string
	Username    string
	DisplayName string
	Password    string
	Admin       bool
	UserType    *string
	MAC         string
	ClientAddr  string
}

// SharedSecretMAC computes the MAC a client must send.
func SharedSecretMAC(secret, nonce, username, password string, admin bool, userType *string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != nil {
		m.Write([]byte{0})
		m.Write([]byte(*userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// RegisterWithSharedSecret checks the nonce (using it up) and the MAC, then
// creates the account and a device.
func (s *Service) RegisterWithSharedSecret(ctx context.Context, req SharedSecretRequest) (Session, error) {
	if !s.SharedSecretEnabled() {
		return Session{}, errSharedSecretOff()
	}
	if req.Nonce == "" || req.MAC == "" {
		return Session{}, merr.MissingParam("nonce and mac are required")
	}
	if req.Username == "" || strings.ContainsRune(req.Username, 0) {
		return Session{}, merr.InvalidUsername("Invalid username")
	}
	if req.Password == "" || strings.ContainsRune(req.Password, 0) {
		return Session{}, merr.WeakPassword("Invalid password")
	}
	res, err := s.db.Exec(ctx, `DELETE FROM registration_nonces WHERE nonce = $1 AND created_ts >= $2`,
		req.Nonce, s.now().Add(-NonceLifetime).UnixMilli())
	if err != nil {
		return Session{}, fmt.Errorf("use nonce: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Session{}, merr.Unknown("Unrecognised nonce")
	}
	want := SharedSecretMAC(s.opts.SharedSecret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	got := strings.ToLower(strings.TrimSpace(req.MAC))
	if !hmac.Equal([]byte(want), []byte(got)) {
		return Session{}, merr.Forbidden("HMAC incorrect")
	}
	// The holder of the shared secret is an admin tool (or a test suite):
	// the password policy is not applied, only the byte limit.
	if err := ValidNewPassword(req.Password); err != nil {
		return Session{}, err
	}
	hash, err := HashPassword(req.Password, s.opts.PasswordHashCost)
	if err != nil {
		return Session{}, err
	}
	return s.Register(ctx, RegisterRequest{
		Localpart:    strings.ToLower(req.Username),
		PasswordHash: hash,
		Admin:        req.Admin,
		DisplayName:  req.DisplayName,
		ClientAddr:   req.ClientAddr,
		Via:          "shared_secret",
	})
}
