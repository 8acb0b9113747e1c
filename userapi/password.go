package userapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/haven-chat/haven/internal/merr"
)

// Password hashing.
//
// bcrypt reads at most 72 bytes of its input and Go's bcrypt refuses longer
// inputs, so a long passphrase would otherwise lose everything after byte 72
// (or fail). Haven therefore hashes base64(SHA-256(password)) — 44 ASCII
// bytes, no NUL — with bcrypt at the configured cost, and stores it as
// "bcrypt-sha256$" followed by the bcrypt string. A stored hash that is a
// plain bcrypt string ("$2a$", "$2b$", "$2y$"), as imported from another
// server, is checked against the password itself.

const hashPrefix = "bcrypt-sha256$"

// MaxPasswordBytes bounds passwords; longer ones are refused at registration
// and password change.
const MaxPasswordBytes = 512

func prehash(password string) []byte {
	sum := sha256.Sum256([]byte(password))
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum[:])
	return out
}

// HashPassword hashes a password at the given bcrypt cost.
func HashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(prehash(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return hashPrefix + string(h), nil
}

// CheckPassword tells whether password matches a stored hash.
func CheckPassword(stored, password string) bool {
	switch {
	case strings.HasPrefix(stored, hashPrefix):
		return bcrypt.CompareHashAndPassword([]byte(stored[len(hashPrefix):]), prehash(password)) == nil
	case strings.HasPrefix(stored, "$2"):
		if len(password) > 72 {
			return false
		}
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(password)) == nil
	}
	// An unknown scheme never matches; compare anyway to spend similar time.
	_ = subtle.ConstantTimeCompare([]byte(stored), []byte(password))
	return false
}

// ValidNewPassword checks a password being set: not empty, at most MaxPasswordBytes.
func ValidNewPassword(password string) error {
	if password == "" {
		return merr.WeakPassword("The password must not be empty")
	}
	if len(password) > MaxPasswordBytes {
		return merr.WeakPassword("The password is longer than %d bytes", MaxPasswordBytes)
	}
	return nil
}

// HashNewPassword checks a password being set (CheckNewPassword: the
// byte limit and the password policy) and hashes it at the configured
// cost, for Register, ChangePassword and the parameters a UIA session
// keeps.
func (s *Service) HashNewPassword(password string) (string, error) {
	if err := s.CheckNewPassword(password); err != nil {
		return "", err
	}
	return HashPassword(password, s.opts.PasswordHashCost)
}

// validHash refuses a password hash that HashPassword did not make.
func validHash(hash string) error {
	if !strings.HasPrefix(hash, hashPrefix) {
		return fmt.Errorf("not a password hash of this server")
	}
	return nil
}

// dummyHash is compared against when the account does not exist, so that a
// failed login takes as long for an unknown user as for a wrong password.
type dummyHash struct {
	once sync.Once
	hash string
}

func (d *dummyHash) get(cost int) string {
	d.once.Do(func() {
		h, err := HashPassword("not a password of anyone", cost)
		if err == nil {
			d.hash = h
		}
	})
	return d.hash
}
