package userapi

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Directory checks passwords against the company directory (userapi/ldap).
type Directory interface {
	// Authenticate finds the person named username and checks password
	// as theirs. Its errors wrap ErrNotInDirectory, ErrDirectoryRefused
	// or ErrDirectoryUnavailable.
	Authenticate(ctx context.Context, username, password string) (DirectoryEntry, error)
}

// AuditDirectoryUnavailable is the audit action of a sign-in that could
// not be checked because the directory was unavailable.
const AuditDirectoryUnavailable = "login.unavailable"

// DirectoryEntry is what the directory says about a person who signed in.
type DirectoryEntry struct {
	// Localpart is the value of the localpart attribute, as stored.
	Localpart   string
	DisplayName string
	Email       string
}

// The outcomes of Directory.Authenticate other than success.
var (
	// ErrNotInDirectory: nobody of that name (the local password may be
	// asked, with DirectoryOptions.FallbackLocalPasswords).
	ErrNotInDirectory = errors.New("not in the directory")
	// ErrDirectoryRefused: the password is wrong, the account is locked,
	// or the name matches more than one person.
	ErrDirectoryRefused = errors.New("refused by the directory")
	// ErrDirectoryUnavailable: the directory cannot be reached or the
	// service account cannot search it.
	ErrDirectoryUnavailable = errors.New("directory unavailable")
)

// DirectoryOptions configure password checks against the directory
// (config ldap).
type DirectoryOptions struct {
	Directory Directory
	// CreateAccounts makes the Matrix account at the first sign-in.
	CreateAccounts bool
	// UpdateDisplayName sets the display name from the directory at every
	// sign-in, not only when the account is made.
	UpdateDisplayName bool
	// FallbackLocalPasswords checks the Haven password of accounts the
	// directory does not know, and of accounts with a Haven password while
	// the directory is unavailable.
	FallbackLocalPasswords bool
}

// errDirectoryUnavailable is the answer when the directory cannot be
// asked: 503 M_UNKNOWN, with nothing of the cause.
func errDirectoryUnavailable(cause error) error {
	return merr.Unavailable(
		"The company directory cannot be reached to check your password; try again in a few minutes").Wrap(cause)
}

// verifyWithDirectory is verifyPassword's directory step, after the
// backoff check: done is false when the local password is to be checked
// instead (an account the directory does not know, with fallback). The
// account returned is the one the directory's localpart attribute names,
// made at the first sign-in when so configured.
func (s *Service) verifyWithDirectory(ctx context.Context, key failureKey, userID, password, addr string) (a account, done bool, err error) {
	d := s.opts.Directory
	fail := func(reason string) (account, bool, error) {
		s.attempts.fail(ctx, key)
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: userID, Addr: addr, Detail: map[string]any{"reason": reason, "via": "ldap"}})
		return account{}, true, errBadLogin()
	}
	if password == "" {
		// Never asked of the directory: a bind with an empty password is
		// an unauthenticated bind, which many servers answer with success.
		return fail("empty_password")
	}
	lp, _, _ := SplitUserID(userID)
	if ValidLocalpart(lp, s.opts.ServerName) != nil {
		// A name no account can have is not looked up in the directory.
		if d.FallbackLocalPasswords {
			return account{}, false, nil
		}
		return fail("unknown_user")
	}
	entry, err := d.Directory.Authenticate(ctx, lp, password)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotInDirectory):
		if d.FallbackLocalPasswords {
			return account{}, false, nil
		}
		return fail("unknown_user")
	case errors.Is(err, ErrDirectoryRefused):
		return fail("wrong_password")
	default:
		if d.FallbackLocalPasswords {
			if la, err2 := selectAccount(ctx, s.db, userID); err2 == nil && la.hash != "" {
				logging.From(ctx).WithField("user_id", userID).WithError(err).Warn("company directory unavailable: the local password is checked instead")
				return account{}, false, nil
			}
		}
		// Not login.failed: the client did nothing wrong (and fail2ban's
		// filter must not ban everyone while the directory is down).
		s.record(ctx, auditlog.Entry{Action: AuditDirectoryUnavailable, Target: userID, Addr: addr,
			Detail: map[string]any{"reason": "directory_unavailable", "via": "ldap"}})
		// The cause goes to the log with the answer (httpx), not to the client.
		return account{}, true, errDirectoryUnavailable(err)
	}
	mapped := strings.ToLower(strings.TrimSpace(entry.Localpart))
	if ValidLocalpart(mapped, s.opts.ServerName) != nil {
		logging.From(ctx).WithField("user_id", userID).WithField("directory_localpart", truncateRunes(entry.Localpart, 100)).
			Warn("the directory's localpart attribute is not a valid Matrix localpart")
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: userID, Addr: addr, Detail: map[string]any{"reason": "invalid_directory_localpart", "via": "ldap"}})
		return account{}, true, merr.Forbidden("Your directory account's name cannot be used as a Matrix user name; ask your administrator")
	}
	uid := s.UserID(mapped)
	name := truncateBytes(strings.TrimSpace(entry.DisplayName), MaxDisplayNameBytes)
	a, err = selectAccount(ctx, s.db, uid)
	switch {
	case errors.Is(err, storage.ErrNotFound) && !d.CreateAccounts:
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: uid, Addr: addr, Detail: map[string]any{"reason": "no_account", "via": "ldap"}})
		return account{}, true, merr.Forbidden("You have no account on this server yet; ask your administrator to create it")
	case errors.Is(err, storage.ErrNotFound):
		_, err = s.Register(ctx, RegisterRequest{Localpart: mapped, NoPassword: true, DisplayName: name, InhibitLogin: true, ClientAddr: addr, Via: "ldap"})
		if err != nil && !merr.Is(err, "M_USER_IN_USE") { // in use: made by a sign-in at the same moment
			return account{}, true, err
		}
		if a, err = selectAccount(ctx, s.db, uid); err != nil {
			return account{}, true, err
		}
	case err != nil:
		return account{}, true, err
	case d.UpdateDisplayName && name != "" && !a.deactivated:
		if cur, _, err := s.Profile(ctx, uid); err == nil && cur != name {
			if err := s.SetDisplayName(ctx, uid, name); err != nil {
				logging.From(ctx).WithField("user_id", uid).WithError(err).Warn("display name from the directory not set")
			}
		}
	}
	s.attempts.reset(ctx, key)
	if !a.deactivated {
		s.rememberAddr(ctx, uid, addr)
	}
	return a, true, nil
}

// truncateBytes shortens s to at most n bytes without splitting a character.
func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
