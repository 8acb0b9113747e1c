package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Session is what registration and login hand out.
type Session struct {
	UserID      string
	DeviceID    string
	AccessToken string
	// RefreshToken and ExpiresInMS are set when the client asked for a
	// refresh token: the access token then expires after ExpiresInMS.
	RefreshToken string
	ExpiresInMS  int64
	// SecondFactorFirst is set when the account was made without a session
	// because it must sign in with a second factor it has not set up yet
	// (the sign-in page sets it up at the first sign-in).
	SecondFactorFirst bool
}

// MaxDeviceIDBytes bounds client-chosen device IDs.
const MaxDeviceIDBytes = 255

// MaxDeviceNameRunes bounds device display names.
const MaxDeviceNameRunes = 100

// errBadLogin is the one answer to a wrong user or password, whichever it was.
func errBadLogin() error { return merr.Forbidden("Invalid username or password") }

// auditActions names the audit log's action for the events of this
// package; others are stored as their name with "_" turned into ".".
var auditActions = map[string]string{
	"password_change": auditlog.PasswordChange,
	"deactivate":      auditlog.Deactivated,
	"login_failed":    auditlog.LoginFailed,
	"register":        "account.registered",
	"logout":          auditlog.DeviceDeleted,
	"logout_all":      auditlog.DeviceDeleted,
}

// audit records one audited event: in the audit log (Options.Audit, which
// also writes the log line) or, without one, as a structured log line from
// the request's logger. Never with a password or token.
func (s *Service) audit(ctx context.Context, event string, f logrus.Fields) {
	addr, _ := f["client_addr"].(string)
	if addr == "" {
		addr = clientAddrFrom(ctx)
	}
	// Token refreshes (every few minutes per client) are only logged.
	if s.opts.Audit != nil && event != "refresh" {
		action, ok := auditActions[event]
		if !ok {
			action = strings.ReplaceAll(event, "_", ".")
		}
		target, _ := f["user_id"].(string)
		actor := target
		if admin, ok := f["admin"].(string); ok && strings.HasPrefix(admin, "@") {
			actor = admin // an admin acting on the user
		}
		detail := map[string]any{}
		for k, v := range f {
			if k != "user_id" && k != "client_addr" && v != "" {
				detail[k] = v
			}
		}
		ok = event != "login_failed"
		s.record(ctx, auditlog.Entry{Action: action, Actor: actor, Target: target, Addr: addr, OK: ok, Detail: detail})
		return
	}
	e := logging.From(ctx).WithField("audit", event)
	if addr != "" {
		e = e.WithField("client_addr", addr)
	}
	for k, v := range f {
		if v == "" || k == "client_addr" {
			continue
		}
		e = e.WithField(k, v)
	}
	e.Info("audit: " + event)
}

type account struct {
	userID      string
	hash        string
	admin       bool
	deactivated bool
}

func selectAccount(ctx context.Context, q storage.Querier, userID string) (account, error) {
	a := account{userID: userID}
	err := q.QueryRow(ctx, `SELECT password_hash, is_admin, deactivated FROM accounts WHERE user_id = $1`, userID).
		Scan(&a.hash, &a.admin, &a.deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return a, storage.ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("select account %s: %w", userID, err)
	}
	return a, nil
}

// AccountExists tells whether a local, not deactivated account exists.
func (s *Service) AccountExists(ctx context.Context, userID string) (bool, error) {
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !a.deactivated, nil
}

// CheckUsernameAvailable validates a wanted username (lower-cased as the
// spec asks) and tells whether it is free: M_INVALID_USERNAME, M_USER_IN_USE,
// or the localpart to register.
func (s *Service) CheckUsernameAvailable(ctx context.Context, username string) (string, error) {
	lp := strings.ToLower(username)
	if err := ValidLocalpart(lp, s.opts.ServerName); err != nil {
		return "", err
	}
	if err := s.checkExclusive(s.UserID(lp), ""); err != nil {
		return "", err
	}
	_, err := selectAccount(ctx, s.db, s.UserID(lp))
	if errors.Is(err, storage.ErrNotFound) {
		return lp, nil
	}
	if err != nil {
		return "", err
	}
	return "", merr.UserInUse("The user ID %s is already taken", s.UserID(lp))
}

// checkExclusive refuses a user ID that an application service other than
// appService holds in an exclusive namespace (M_EXCLUSIVE).
func (s *Service) checkExclusive(userID, appService string) error {
	if s.opts.AppServices == nil {
		return nil
	}
	if owner := s.opts.AppServices.ExclusiveUserOwner(userID); owner != "" && owner != appService {
		return merr.Exclusive("The user ID %s is reserved by an application service", userID)
	}
	return nil
}

// RegisterRequest describes a new account.
type RegisterRequest struct {
	// Localpart of the new user ID (already lower-cased); empty picks a random one.
	Localpart string
	// Password, or PasswordHash: its hash as HashNewPassword made it.
	Password     string
	PasswordHash string
	Admin        bool
	// DisplayName defaults to the localpart.
	DisplayName string
	// DeviceID and DeviceDisplayName describe the first device.
	DeviceID          string
	DeviceDisplayName string
	// InhibitLogin creates no device and no token.
	InhibitLogin bool
	// Refresh asks for a refresh token and an access token that expires.
	Refresh    bool
	ClientAddr string
	// Via names the way the account is made, for the audit log:
	// "client", "shared_secret", "cli", "admin" or "appservice".
	Via string
	// AppService is the ID of the application service registering a user of
	// its namespace: the account gets no password (it logs in through the
	// service), and the service's own exclusive namespace is open to it.
	AppService string
	// Guest makes a guest account: a numeric localpart, no password, no
	// display name (guests.go).
	Guest bool
	// NoPassword makes an account no password can log in to (the admin
	// API's create without a password).
	NoPassword bool
	// UserType is the account's type ("" for a regular user; "bot",
	// "support"), as the admin API sets it.
	UserType string
}

// Register creates an account and, unless InhibitLogin, its first device.
func (s *Service) Register(ctx context.Context, req RegisterRequest) (Session, error) {
	random := req.Localpart == ""
	if !random {
		if err := ValidLocalpart(req.Localpart, s.opts.ServerName); err != nil {
			return Session{}, err
		}
	}
	if err := validDeviceID(req.DeviceID); err != nil {
		return Session{}, err
	}
	if len(req.DisplayName) > MaxDisplayNameBytes {
		return Session{}, merr.BadJSON("The display name is longer than %d bytes", MaxDisplayNameBytes)
	}
	hash := req.PasswordHash
	switch {
	case req.AppService != "" || req.Guest || req.NoPassword:
		hash = "" // no password matches it
	case hash == "":
		var err error
		if hash, err = s.HashNewPassword(req.Password); err != nil {
			return Session{}, err
		}
	default:
		if err := validHash(hash); err != nil {
			return Session{}, err
		}
	}
	for attempt := 0; ; attempt++ {
		lp := req.Localpart
		switch {
		case random && req.Guest:
			lp = randomGuestLocalpart()
		case random:
			lp = randomLocalpart()
		}
		if err := s.checkExclusive(s.UserID(lp), req.AppService); err != nil {
			if random && attempt < 5 {
				continue
			}
			return Session{}, err
		}
		areq, err := s.withoutPasswordSession(ctx, s.UserID(lp), req)
		if err != nil {
			return Session{}, err
		}
		sess, err := s.createAccount(ctx, s.UserID(lp), lp, hash, areq)
		sess.SecondFactorFirst = areq.InhibitLogin && !req.InhibitLogin
		if errors.Is(err, errInUse) {
			if random && attempt < 5 {
				continue
			}
			return Session{}, merr.UserInUse("The user ID %s is already taken", s.UserID(lp))
		}
		if err != nil {
			return Session{}, err
		}
		fields := logrus.Fields{"user_id": sess.UserID, "device_id": sess.DeviceID, "client_addr": req.ClientAddr, "via": req.Via, "admin": fmt.Sprint(req.Admin)}
		if sess.SecondFactorFirst {
			fields["session"] = "none: second factor required"
		}
		s.audit(ctx, "register", fields)
		return sess, nil
	}
}

// CreateAccount makes an account without a device (command line, admin API).
func (s *Service) CreateAccount(ctx context.Context, localpart, password string, admin bool, via string) (string, error) {
	sess, err := s.Register(ctx, RegisterRequest{Localpart: localpart, Password: password, Admin: admin, InhibitLogin: true, Via: via})
	return sess.UserID, err
}

var errInUse = errors.New("user ID in use")

func (s *Service) createAccount(ctx context.Context, userID, localpart, hash string, req RegisterRequest) (Session, error) {
	var displayName any = req.DisplayName
	switch {
	case req.Guest:
		displayName = nil // a guest names themselves, or stays unnamed
	case req.DisplayName == "":
		displayName = localpart
	}
	sess := Session{UserID: userID}
	var issued Device
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO accounts (user_id, password_hash, is_admin, is_guest, deactivated, created_ts, user_type)
VALUES ($1, $2, $3, $4, FALSE, $5, $6) ON CONFLICT (user_id) DO NOTHING`, userID, hash, req.Admin, req.Guest, s.now().UnixMilli(), nullable(req.UserType))
		if err != nil {
			return fmt.Errorf("insert account %s: %w", userID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errInUse
		}
		if _, err := tx.Exec(ctx, `INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, NULL)
ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = NULL`, userID, displayName); err != nil {
			return fmt.Errorf("insert profile %s: %w", userID, err)
		}
		if req.InhibitLogin {
			return nil
		}
		var err2 error
		sess, issued, _, err2 = s.issueDevice(ctx, tx, userID, req.DeviceID, req.DeviceDisplayName, req.ClientAddr, req.Admin, req.Refresh)
		issued.IsGuest = req.Guest
		return err2
	})
	if err != nil {
		return Session{}, err
	}
	s.profiles.Remove(userID)
	if issued.SessionID != "" {
		s.cacheToken(issued)
		s.devicesChanged(ctx, userID, []string{issued.DeviceID}, nil)
	}
	return sess, nil
}

func validDeviceID(id string) error {
	if len(id) > MaxDeviceIDBytes {
		return merr.InvalidParam("device_id is longer than %d bytes", MaxDeviceIDBytes)
	}
	if strings.ContainsRune(id, 0) {
		return merr.InvalidParam("device_id must not contain NUL")
	}
	return nil
}

// truncateRunes shortens s to at most n runes.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// issueDevice gives userID a device with a new access token inside tx. An
// existing device ID keeps its display name and gets a new token (its old
// access and refresh tokens stop working); the old token's hash is returned
// for revocation after the commit. With refresh, the access token expires
// after the configured lifetime and a refresh token comes with it.
func (s *Service) issueDevice(ctx context.Context, tx *storage.Tx, userID, deviceID, displayName, ip string, admin, refresh bool) (Session, Device, string, error) {
	token, hash, err := newAccessToken()
	if err != nil {
		return Session{}, Device{}, "", err
	}
	tk, err := s.newTokenPair(token, hash, refresh)
	if err != nil {
		return Session{}, Device{}, "", err
	}
	displayName = truncateRunes(displayName, MaxDeviceNameRunes)
	now := s.now().UnixMilli()
	dev := Device{UserID: userID, DeviceID: deviceID, DisplayName: displayName, IsAdmin: admin, SessionID: hash, ExpiresTS: tk.expiresTS}
	oldHash := ""
	if deviceID != "" {
		var oldName sql.NullString
		err := tx.QueryRow(ctx, `SELECT token_hash, display_name FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&oldHash, &oldName)
		switch {
		case err == nil:
			if _, err := tx.Exec(ctx, `UPDATE devices SET token_hash = $3, last_seen_ts = $4,
last_seen_ip = CASE WHEN $5 = '' THEN last_seen_ip ELSE $5 END, token_expires_ts = $6, refresh_hash = $7, old_refresh_hash = NULL
WHERE user_id = $1 AND device_id = $2`,
				userID, deviceID, hash, now, ip, tk.expires(), tk.refreshHashArg()); err != nil {
				return Session{}, Device{}, "", fmt.Errorf("replace token of device %s %s: %w", userID, deviceID, err)
			}
			dev.DisplayName = oldName.String
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip, token_expires_ts, refresh_hash)
VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)`, userID, deviceID, nullable(displayName), hash, now, ip, tk.expires(), tk.refreshHashArg()); err != nil {
				return Session{}, Device{}, "", fmt.Errorf("insert device %s %s: %w", userID, deviceID, err)
			}
		default:
			return Session{}, Device{}, "", fmt.Errorf("select device %s %s: %w", userID, deviceID, err)
		}
	} else {
		for attempt := 0; ; attempt++ {
			dev.DeviceID = randomDeviceID()
			res, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip, token_expires_ts, refresh_hash)
VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8) ON CONFLICT (user_id, device_id) DO NOTHING`, userID, dev.DeviceID, nullable(displayName), hash, now, ip, tk.expires(), tk.refreshHashArg())
			if err != nil {
				return Session{}, Device{}, "", fmt.Errorf("insert device %s %s: %w", userID, dev.DeviceID, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				break
			}
			if attempt >= 5 {
				return Session{}, Device{}, "", fmt.Errorf("insert device for %s: no free device ID", userID)
			}
		}
	}
	if err := noteUserAgent(ctx, tx, userID, dev.DeviceID); err != nil {
		return Session{}, Device{}, "", err
	}
	return tk.session(userID, dev.DeviceID), dev, oldHash, nil
}

// verifyPassword checks userID's password under the failure backoff of
// the account, or, from a network the account has signed in from before,
// of that network (knownaddrs.go). Wrong user and wrong password give the
// same error and take the same time. Every failure and refusal is audited.
func (s *Service) verifyPassword(ctx context.Context, userID, password, addr string) (account, error) {
	key := s.attemptKey(ctx, userID, addr)
	if wait := s.attempts.wait(ctx, key); wait > 0 {
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginRefused, Target: userID, Addr: addr,
			Detail: map[string]any{"reason": "account_slowdown", "retry_after_ms": wait.Milliseconds() + 1}})
		return account{}, merr.LimitExceeded(wait.Milliseconds() + 1)
	}
	if s.opts.Directory.Directory != nil {
		if a, done, err := s.verifyWithDirectory(ctx, key, userID, password, addr); done {
			return a, err
		}
	}
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		CheckPassword(s.dummy.get(s.opts.PasswordHashCost), password)
		s.attempts.fail(ctx, key)
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: userID, Addr: addr, Detail: map[string]any{"reason": "unknown_user"}})
		return account{}, errBadLogin()
	}
	if err != nil {
		return account{}, err
	}
	if !CheckPassword(a.hash, password) {
		s.attempts.fail(ctx, key)
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: userID, Addr: addr, Detail: map[string]any{"reason": "wrong_password"}})
		return account{}, errBadLogin()
	}
	s.attempts.reset(ctx, key)
	if !a.deactivated {
		s.rememberAddr(ctx, userID, addr)
	}
	return a, nil
}

// LoginRequest is an m.login.password login, or an application service's
// login as a user of its namespace.
type LoginRequest struct {
	// User is a localpart or a full user ID, in any case.
	User     string
	Password string
	// AppService is the ID of the application service logging in as User
	// (m.login.application_service): no password is checked, the caller
	// has checked that the service controls the user.
	AppService        string
	DeviceID          string
	DeviceDisplayName string
	ClientAddr        string
	// Refresh asks for a refresh token and an access token that expires.
	Refresh bool
}

// Login checks a password and issues a device and access token.
func (s *Service) Login(ctx context.Context, req LoginRequest) (Session, error) {
	if err := validDeviceID(req.DeviceID); err != nil {
		return Session{}, err
	}
	userID, ok := s.resolveLogin(req.User)
	if !ok {
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: truncateRunes(req.User, 100), Addr: req.ClientAddr,
			Detail: map[string]any{"reason": "not_a_local_user"}})
		return Session{}, errBadLogin()
	}
	var a account
	var err error
	if req.AppService != "" {
		if a, err = selectAccount(ctx, s.db, userID); errors.Is(err, storage.ErrNotFound) {
			return Session{}, errBadLogin()
		}
	} else {
		a, err = s.verifyPassword(ctx, userID, req.Password, req.ClientAddr)
	}
	if err != nil {
		return Session{}, err
	}
	userID = a.userID // the directory may name another account than typed
	if a.deactivated {
		s.record(ctx, auditlog.Entry{Action: auditlog.LoginFailed, Target: userID, Addr: req.ClientAddr, Detail: map[string]any{"reason": "deactivated"}})
		return Session{}, merr.UserDeactivated("This account has been deactivated")
	}
	if req.AppService == "" {
		if err := s.passwordLoginAllowed(ctx, a, req.ClientAddr); err != nil {
			return Session{}, err
		}
	}
	sess, err := s.openSession(ctx, userID, req.DeviceID, req.DeviceDisplayName, req.ClientAddr, a.admin, req.Refresh)
	if err != nil {
		return Session{}, err
	}
	detail := map[string]any{"device_id": sess.DeviceID}
	if req.AppService != "" {
		detail["appservice"] = req.AppService
	}
	s.record(ctx, auditlog.Entry{Action: auditlog.Login, Actor: userID, Target: userID, Addr: req.ClientAddr, OK: true, Detail: detail})
	return sess, nil
}

// removed is one deleted device.
type removed struct {
	deviceID, hash string
}

// deleteDevicesTx deletes devices with query (which must return device_id,
// token_hash) and their waiting to-device messages.
func deleteDevicesTx(ctx context.Context, tx *storage.Tx, userID, query string, args ...any) ([]removed, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("delete devices of %s: %w", userID, err)
	}
	var out []removed
	for rows.Next() {
		var r removed
		if err := rows.Scan(&r.deviceID, &r.hash); err != nil {
			rows.Close()
			return nil, fmt.Errorf("delete devices of %s: %w", userID, err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("delete devices of %s: %w", userID, err)
	}
	if len(out) > 0 {
		ids := make([]string, len(out))
		for i, r := range out {
			ids[i] = r.deviceID
		}
		if _, err := tx.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id IN ($2)`, userID, ids); err != nil {
			return nil, fmt.Errorf("delete to-device messages of %s: %w", userID, err)
		}
		// A device ID used again later is not the OAuth session it was.
		if _, err := tx.Exec(ctx, `DELETE FROM oauth_sessions WHERE user_id = $1 AND device_id IN ($2)`, userID, ids); err != nil {
			return nil, fmt.Errorf("delete oauth sessions of %s: %w", userID, err)
		}
	}
	return out, nil
}

func hashesOf(rs []removed) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.hash
	}
	return out
}

func idsOf(rs []removed) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.deviceID
	}
	return out
}

// Logout deletes the device of the session; its token stops working at once.
func (s *Service) Logout(ctx context.Context, dev Device) error {
	var gone []removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		gone, err = deleteDevicesTx(ctx, tx, dev.UserID, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING device_id, token_hash`, dev.UserID, dev.DeviceID)
		return err
	})
	if err != nil {
		return err
	}
	s.revokeTokens(ctx, append(hashesOf(gone), dev.SessionID))
	s.devicesChanged(ctx, dev.UserID, nil, idsOf(gone))
	s.audit(ctx, "logout", logrus.Fields{"user_id": dev.UserID, "device_id": dev.DeviceID})
	return nil
}

// LogoutAll deletes every device of the user.
func (s *Service) LogoutAll(ctx context.Context, userID string) error {
	var gone []removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		gone, err = deleteDevicesTx(ctx, tx, userID, `DELETE FROM devices WHERE user_id = $1 RETURNING device_id, token_hash`, userID)
		return err
	})
	if err != nil {
		return err
	}
	s.revokeTokens(ctx, hashesOf(gone))
	s.devicesChanged(ctx, userID, nil, idsOf(gone))
	s.audit(ctx, "logout_all", logrus.Fields{"user_id": userID, "devices": strings.Join(idsOf(gone), ",")})
	return nil
}

// ChangePassword sets a new password, given as its hash (HashNewPassword).
// With logoutDevices every other device of the user is deleted; the
// current one (keep) stays.
func (s *Service) ChangePassword(ctx context.Context, userID, keepDeviceID, hash string, logoutDevices bool) error {
	if err := validHash(hash); err != nil {
		return err
	}
	var gone []removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $2 WHERE user_id = $1 AND deactivated = FALSE`, userID, hash)
		if err != nil {
			return fmt.Errorf("update password of %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return merr.Forbidden("This account does not exist or is deactivated")
		}
		if logoutDevices {
			gone, err = deleteDevicesTx(ctx, tx, userID, `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2 RETURNING device_id, token_hash`, userID, keepDeviceID)
		}
		return err
	})
	if err != nil {
		return err
	}
	s.revokeTokens(ctx, hashesOf(gone))
	s.devicesChanged(ctx, userID, nil, idsOf(gone))
	s.audit(ctx, "password_change", logrus.Fields{"user_id": userID, "device_id": keepDeviceID, "logged_out_devices": strings.Join(idsOf(gone), ",")})
	return nil
}

// Deactivate marks the account deactivated, deletes its devices and tokens
// and clears its profile. Leaving the user's rooms is the caller's job.
func (s *Service) Deactivate(ctx context.Context, userID string) error {
	var gone []removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET deactivated = TRUE WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("deactivate %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return merr.NotFound("Unknown user %s", userID)
		}
		if gone, err = deleteDevicesTx(ctx, tx, userID, `DELETE FROM devices WHERE user_id = $1 RETURNING device_id, token_hash`, userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM profiles WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("clear profile of %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete auth sessions of %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM user_threepids WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete 3pids of %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM openid_tokens WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete openid tokens of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.revokeTokens(ctx, hashesOf(gone))
	s.devicesChanged(ctx, userID, nil, idsOf(gone))
	s.profiles.Remove(userID)
	s.broadcast(ctx, invalidation{Profile: userID})
	s.audit(ctx, "deactivate", logrus.Fields{"user_id": userID, "devices": strings.Join(idsOf(gone), ",")})
	return nil
}

// openSession signs a device in for an account whose credentials were
// checked: it issues the device's tokens (a known device ID gets new
// ones), then, after the commit, revokes the replaced token or announces
// the new device, and caches the token.
func (s *Service) openSession(ctx context.Context, userID, deviceID, displayName, clientAddr string, admin, refresh bool) (Session, error) {
	var sess Session
	var dev Device
	var oldHash string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		sess, dev, oldHash, err = s.issueDevice(ctx, tx, userID, deviceID, displayName, clientAddr, admin, refresh)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	if oldHash != "" {
		s.revokeTokens(ctx, []string{oldHash})
	} else {
		s.devicesChanged(ctx, userID, []string{dev.DeviceID}, nil)
	}
	s.cacheToken(dev)
	return sess, nil
}
