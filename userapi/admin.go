package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// The accounts as the admin API (/_synapse/admin/) sees and changes them.

// UserTypes are the account types an admin may set besides the regular
// user (no type), as on Synapse.
var UserTypes = []string{"bot", "support"}

// AdminUser is an account as the admin API shows it. CreationTS is in
// seconds, as Synapse has it (admin tools read it so); LastSeenTS, the
// latest use of any of the user's devices, in milliseconds.
type AdminUser struct {
	Name         string  `json:"name"`
	DisplayName  *string `json:"displayname"`
	AvatarURL    *string `json:"avatar_url"`
	IsGuest      bool    `json:"is_guest"`
	Admin        bool    `json:"admin"`
	Deactivated  bool    `json:"deactivated"`
	Erased       bool    `json:"erased"`
	ShadowBanned bool    `json:"shadow_banned"`
	Locked       bool    `json:"locked"`
	UserType     *string `json:"user_type"`
	CreationTS   int64   `json:"creation_ts"`
	LastSeenTS   *int64  `json:"last_seen_ts"`
	AppServiceID *string `json:"appservice_id"`
}

const adminUserColumns = `a.user_id, p.displayname, p.avatar_url, a.is_guest, a.is_admin, a.deactivated, a.erased, a.user_type, a.created_ts,
(SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = a.user_id)`

const adminUserFrom = ` FROM accounts a LEFT JOIN profiles p ON p.user_id = a.user_id`

func scanAdminUser(row interface{ Scan(...any) error }) (AdminUser, error) {
	var u AdminUser
	var dn, av, ut sql.NullString
	var seen sql.NullInt64
	if err := row.Scan(&u.Name, &dn, &av, &u.IsGuest, &u.Admin, &u.Deactivated, &u.Erased, &ut, &u.CreationTS, &seen); err != nil {
		return u, err
	}
	u.CreationTS /= 1000
	if dn.Valid {
		u.DisplayName = &dn.String
	}
	if av.Valid {
		u.AvatarURL = &av.String
	}
	if ut.Valid {
		u.UserType = &ut.String
	}
	if seen.Valid {
		u.LastSeenTS = &seen.Int64
	}
	return u, nil
}

// UserFilter selects and orders accounts for the admin list.
type UserFilter struct {
	From, Limit int
	// UserID keeps users whose ID contains it; Name those whose localpart
	// or display name contains it (case-insensitive both).
	UserID, Name string
	// Guests and Deactivated include those accounts; Admins, when set,
	// keeps only admins (true) or only non-admins (false).
	Guests, Deactivated bool
	Admins              *bool
	// OrderBy is one of the keys of userOrder ("" for name); Backwards
	// reverses the order.
	OrderBy   string
	Backwards bool
}

// userOrder maps the admin API's order_by values to columns. NULLs sort as
// the empty string or 0, the same on both databases.
var userOrder = map[string]string{
	"name":          "a.user_id",
	"is_guest":      "a.is_guest",
	"admin":         "a.is_admin",
	"user_type":     "COALESCE(a.user_type, '')",
	"deactivated":   "a.deactivated",
	"shadow_banned": "a.user_id", // Haven does not shadow-ban
	"locked":        "a.user_id",
	"displayname":   "COALESCE(p.displayname, '')",
	"avatar_url":    "COALESCE(p.avatar_url, '')",
	"creation_ts":   "a.created_ts",
	"last_seen_ts":  "COALESCE((SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = a.user_id), 0)",
}

// ValidUserOrder tells whether order_by names a known order.
func ValidUserOrder(orderBy string) bool {
	_, ok := userOrder[orderBy]
	return ok
}

// likePattern is a LIKE pattern matching s anywhere, lower-cased, with
// LIKE's wildcards escaped (ESCAPE '\').
func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// ListUsers lists accounts for the admin API: a page and the total count
// of those matching f.
func (s *Service) ListUsers(ctx context.Context, f UserFilter) ([]AdminUser, int64, error) {
	order, ok := userOrder[f.OrderBy]
	if f.OrderBy == "" {
		order, ok = userOrder["name"], true
	}
	if !ok {
		return nil, 0, merr.InvalidParam("Unknown value for order_by: %s", f.OrderBy)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Name != "" {
		p := arg(likePattern(f.Name))
		where = append(where, `(LOWER(a.user_id) LIKE `+p+` ESCAPE '\' OR LOWER(COALESCE(p.displayname, '')) LIKE `+p+` ESCAPE '\')`)
	} else if f.UserID != "" {
		where = append(where, `LOWER(a.user_id) LIKE `+arg(likePattern(f.UserID))+` ESCAPE '\'`)
	}
	if !f.Guests {
		where = append(where, "a.is_guest = FALSE")
	}
	if !f.Deactivated {
		where = append(where, "a.deactivated = FALSE")
	}
	if f.Admins != nil {
		where = append(where, "a.is_admin = "+arg(*f.Admins))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int64
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*)`+adminUserFrom+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", err)
	}
	dir := " ASC"
	if f.Backwards {
		dir = " DESC"
	}
	q := `SELECT ` + adminUserColumns + adminUserFrom + cond + ` ORDER BY ` + order + dir + `, a.user_id` + dir +
		` LIMIT ` + arg(f.Limit) + ` OFFSET ` + arg(f.From)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []AdminUser{}
	for rows.Next() {
		u, err := scanAdminUser(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	return out, total, nil
}

// User returns one account for the admin API, deactivated or not
// (M_NOT_FOUND when there is none).
func (s *Service) User(ctx context.Context, userID string) (AdminUser, error) {
	u, err := scanAdminUser(s.db.QueryRow(ctx, `SELECT `+adminUserColumns+adminUserFrom+` WHERE a.user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return u, merr.NotFound("User not found")
	}
	if err != nil {
		return u, fmt.Errorf("select user %s: %w", userID, err)
	}
	return u, nil
}

// SetAdmin grants or takes away the server admin flag; the user's cached
// tokens are dropped so that their next request sees the change.
func (s *Service) SetAdmin(ctx context.Context, userID string, admin bool) error {
	res, err := s.db.Exec(ctx, `UPDATE accounts SET is_admin = $2 WHERE user_id = $1`, userID, admin)
	if err != nil {
		return fmt.Errorf("set admin flag of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return merr.NotFound("User not found")
	}
	s.audit(ctx, "admin_flag", logrus.Fields{"user_id": userID, "admin": fmt.Sprint(admin)})
	return s.InvalidateUser(ctx, userID)
}

// ValidUserType checks an account type ("" for a regular user).
func ValidUserType(t string) error {
	if t == "" {
		return nil
	}
	for _, v := range UserTypes {
		if t == v {
			return nil
		}
	}
	return merr.InvalidParam("Invalid user type %q: use null, %s", t, strings.Join(UserTypes, " or "))
}

// SetUserType sets the account's type ("" for a regular user).
func (s *Service) SetUserType(ctx context.Context, userID, userType string) error {
	if err := ValidUserType(userType); err != nil {
		return err
	}
	res, err := s.db.Exec(ctx, `UPDATE accounts SET user_type = $2 WHERE user_id = $1`, userID, nullable(userType))
	if err != nil {
		return fmt.Errorf("set user type of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return merr.NotFound("User not found")
	}
	return nil
}

// Erase marks a deactivated account as erased (Deactivate has removed its
// profile, devices and sessions). The mark stays until the account is
// reactivated.
func (s *Service) Erase(ctx context.Context, userID string) error {
	res, err := s.db.Exec(ctx, `UPDATE accounts SET erased = TRUE WHERE user_id = $1 AND deactivated = TRUE`, userID)
	if err != nil {
		return fmt.Errorf("erase %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return merr.NotFound("User not found or not deactivated")
	}
	s.audit(ctx, "erase", logrus.Fields{"user_id": userID})
	return nil
}

// Reactivate lets a deactivated account in again with a new password,
// given as its hash (HashNewPassword); its display name becomes its
// localpart again.
func (s *Service) Reactivate(ctx context.Context, userID, hash string) error {
	if err := validHash(hash); err != nil {
		return err
	}
	lp, _, _ := SplitUserID(userID)
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET deactivated = FALSE, erased = FALSE, password_hash = $2 WHERE user_id = $1 AND deactivated = TRUE`, userID, hash)
		if err != nil {
			return fmt.Errorf("reactivate %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return merr.NotFound("User not found or not deactivated")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, NULL)
ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = NULL`, userID, lp); err != nil {
			return fmt.Errorf("restore profile of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.profiles.Remove(userID)
	s.broadcast(ctx, invalidation{Profile: userID})
	s.audit(ctx, "reactivate", logrus.Fields{"user_id": userID})
	return nil
}

// LoginAs gives an admin a new device and access token of userID (the
// admin API's login as a user). validUntilMS, when not 0, is when the
// token expires (Unix ms).
func (s *Service) LoginAs(ctx context.Context, userID, adminID string, validUntilMS int64) (Session, error) {
	a, err := selectAccount(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return Session{}, merr.NotFound("User not found")
	}
	if err != nil {
		return Session{}, err
	}
	if a.deactivated {
		return Session{}, merr.InvalidParam("The user is deactivated")
	}
	var sess Session
	var dev Device
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		sess, dev, _, err = s.issueDevice(ctx, tx, userID, "", "Admin login", "", a.admin, false)
		if err != nil || validUntilMS == 0 {
			return err
		}
		dev.ExpiresTS = validUntilMS
		if _, err := tx.Exec(ctx, `UPDATE devices SET token_expires_ts = $3 WHERE user_id = $1 AND device_id = $2`, userID, dev.DeviceID, validUntilMS); err != nil {
			return fmt.Errorf("set expiry of device %s %s: %w", userID, dev.DeviceID, err)
		}
		return nil
	})
	if err != nil {
		return Session{}, err
	}
	s.devicesChanged(ctx, userID, []string{dev.DeviceID}, nil)
	s.cacheToken(dev)
	s.audit(ctx, "login_as", logrus.Fields{"user_id": userID, "device_id": dev.DeviceID, "admin": adminID})
	return sess, nil
}
