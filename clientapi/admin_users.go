package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// The user half of the admin API, at the paths of Synapse's admin API so
// that the tools made for it (synadm, synapse-admin) work: the server's
// version, accounts, their devices and sessions. Only server admins may
// call it (authAdmin), and every call is audited (admin_audit.go).

const (
	adminV1 = "/_synapse/admin/v1"
	adminV2 = "/_synapse/admin/v2"
)

// AdminUsersArea is the admin API's accounts and devices.
func (a *API) AdminUsersArea() []Route {
	return []Route{
		{Method: "GET", Path: adminV1 + "/server_version", H: a.adminServerVersion, Auth: authAdmin, AuditOp: "server_version"},
		{Method: "GET", Path: adminV2 + "/users", H: a.adminListUsers, Auth: authAdmin, AuditOp: "users.list"},
		{Method: "GET", Path: adminV2 + "/users/{userId}", H: a.adminGetUser, Auth: authAdmin, AuditOp: "user.get"},
		{Method: "PUT", Path: adminV2 + "/users/{userId}", H: a.adminPutUser, Auth: authAdmin, AuditOp: "user.put"},
		{Method: "POST", Path: adminV1 + "/deactivate/{userId}", H: a.adminDeactivate, Auth: authAdmin, AuditOp: "user.deactivate"},
		{Method: "POST", Path: adminV1 + "/reset_password/{userId}", H: a.adminResetPassword, Auth: authAdmin, AuditOp: "user.reset_password"},
		{Method: "GET", Path: adminV1 + "/users/{userId}/admin", H: a.adminGetAdmin, Auth: authAdmin, AuditOp: "user.admin.get"},
		{Method: "PUT", Path: adminV1 + "/users/{userId}/admin", H: a.adminPutAdmin, Auth: authAdmin, AuditOp: "user.admin.set"},
		{Method: "GET", Path: adminV1 + "/whois/{userId}", H: a.whois, Auth: authAdmin, AuditOp: "user.whois"},
		{Method: "POST", Path: adminV1 + "/users/{userId}/login", H: a.adminLoginAs, Auth: authAdmin, AuditOp: "user.login"},
		{Method: "GET", Path: adminV2 + "/users/{userId}/devices", H: a.adminListDevices, Auth: authAdmin, AuditOp: "devices.list"},
		{Method: "POST", Path: adminV2 + "/users/{userId}/delete_devices", H: a.adminDeleteDevices, Auth: authAdmin, AuditOp: "devices.delete"},
		{Method: "GET", Path: adminV2 + "/users/{userId}/devices/{deviceId}", H: a.adminGetDevice, Auth: authAdmin, AuditOp: "device.get"},
		{Method: "PUT", Path: adminV2 + "/users/{userId}/devices/{deviceId}", H: a.adminPutDevice, Auth: authAdmin, AuditOp: "device.put"},
		{Method: "DELETE", Path: adminV2 + "/users/{userId}/devices/{deviceId}", H: a.adminDeleteDevice, Auth: authAdmin, AuditOp: "device.delete"},
	}
}

// serverVersion is the module version Haven was built as, or its VCS
// revision, or "dev".
func serverVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return "dev"
}

func (a *API) adminServerVersion(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]string{"server_version": "Haven " + serverVersion()})
}

// adminUserParam is the {userId} of an admin path: a user of this server.
func (a *API) adminUserParam(r *http.Request) (string, error) {
	userID := PathParam(r, "userId")
	if !a.Users.IsLocal(userID) {
		return "", merr.InvalidParam("Only users of this server (@name:%s) can be managed here", a.Cfg.ServerName)
	}
	return userID, nil
}

// queryInt reads a whole-number query parameter between lo and hi.
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, merr.InvalidParam("%s must be a whole number between %d and %d", name, lo, hi)
	}
	return n, nil
}

// queryBool reads a true/false query parameter; nil when absent.
func queryBool(r *http.Request, name string) (*bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "":
		return nil, nil
	case "true", "1":
		b := true
		return &b, nil
	case "false", "0":
		b := false
		return &b, nil
	default:
		return nil, merr.InvalidParam("%s must be true or false", name)
	}
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// adminListUsers: from (an offset), limit, user_id, name, guests,
// deactivated, admins, order_by, dir.
func (a *API) adminListUsers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := queryInt(r, "from", 0, 0, 1<<30)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	f := userapi.UserFilter{From: from, Limit: limit, UserID: q.Get("user_id"), Name: q.Get("name"), OrderBy: q.Get("order_by")}
	for _, p := range []struct {
		name string
		dst  *bool
		def  bool
	}{{"guests", &f.Guests, true}, {"deactivated", &f.Deactivated, false}} {
		b, err := queryBool(r, p.name)
		if err != nil {
			return err
		}
		*p.dst = boolOr(b, p.def)
	}
	if f.Admins, err = queryBool(r, "admins"); err != nil {
		return err
	}
	switch q.Get("dir") {
	case "", "f":
	case "b":
		f.Backwards = true
	default:
		return merr.InvalidParam("dir must be f or b")
	}
	if f.OrderBy != "" && !userapi.ValidUserOrder(f.OrderBy) {
		return merr.InvalidParam("Unknown value for order_by: %s", f.OrderBy)
	}
	if len(f.Name) > 255 || len(f.UserID) > 255 || !storage.StorableText(f.Name) || !storage.StorableText(f.UserID) {
		return merr.InvalidParam("name and user_id must be text of at most 255 bytes")
	}
	users, total, err := a.Users.ListUsers(r.Context(), f)
	if err != nil {
		return err
	}
	body := map[string]any{"users": users, "total": total}
	if int64(from+len(users)) < total {
		body["next_token"] = strconv.Itoa(from + len(users))
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// adminUserBody is a user as GET /v2/users/{userId} shows it: the list's
// fields, the addresses bound to it and the company identities linked to it.
func (a *API) adminUserBody(ctx context.Context, u userapi.AdminUser) (map[string]any, error) {
	raw, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("encode admin user %s: %w", u.Name, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("encode admin user %s: %w", u.Name, err)
	}
	if out["threepids"], err = a.Users.ThreePIDs(ctx, u.Name); err != nil {
		return nil, err
	}
	if out["external_ids"], err = a.Users.ExternalIDs(ctx, u.Name); err != nil {
		return nil, err
	}
	return out, nil
}

func (a *API) adminGetUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	u, err := a.Users.User(r.Context(), userID)
	if err != nil {
		return err
	}
	body, err := a.adminUserBody(r.Context(), u)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// optional is a field that may be absent (Set false), null (Value nil)
// or given.
type optional[T any] struct {
	Set   bool
	Value *T
}

func (o *optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return merr.BadJSON("A field has the wrong type: %s", string(b))
	}
	o.Value = &v
	return nil
}

type putUserBody struct {
	Password      *string          `json:"password"`
	LogoutDevices *bool            `json:"logout_devices"`
	DisplayName   *string          `json:"displayname"`
	AvatarURL     *string          `json:"avatar_url"`
	Admin         *bool            `json:"admin"`
	Deactivated   *bool            `json:"deactivated"`
	UserType      optional[string] `json:"user_type"`
}

// check refuses bad values before anything changes.
func (b *putUserBody) check() error {
	if b.Password != nil {
		if err := userapi.ValidNewPassword(*b.Password); err != nil {
			return err
		}
	}
	if b.DisplayName != nil && len(*b.DisplayName) > userapi.MaxDisplayNameBytes {
		return merr.InvalidParam("displayname is longer than %d bytes", userapi.MaxDisplayNameBytes)
	}
	if b.AvatarURL != nil && len(*b.AvatarURL) > userapi.MaxAvatarURLBytes {
		return merr.InvalidParam("avatar_url is longer than %d bytes", userapi.MaxAvatarURLBytes)
	}
	if b.UserType.Value != nil {
		return userapi.ValidUserType(*b.UserType.Value)
	}
	return nil
}

// adminPutUser creates the account (201) or changes it (200).
func (a *API) adminPutUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	var b putUserBody
	if err := httpx.DecodeJSON(r, &b, maxAuthBody); err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	ctx := withAddr(r)
	u, err := a.Users.User(ctx, userID)
	status := http.StatusOK
	switch {
	case merr.Is(err, "M_NOT_FOUND"):
		if err := a.adminCreateUser(ctx, userID, b); err != nil {
			return err
		}
		status = http.StatusCreated
	case err != nil:
		return err
	default:
		if err := a.adminChangeUser(ctx, DeviceFrom(r).UserID, u, b); err != nil {
			return err
		}
	}
	if u, err = a.Users.User(ctx, userID); err != nil {
		return err
	}
	body, err := a.adminUserBody(ctx, u)
	if err != nil {
		return err
	}
	return httpx.JSON(w, status, body)
}

func (a *API) adminCreateUser(ctx context.Context, userID string, b putUserBody) error {
	lp, _, _ := userapi.SplitUserID(userID)
	req := userapi.RegisterRequest{Localpart: lp, Admin: b.Admin != nil && *b.Admin, InhibitLogin: true, Via: "admin"}
	if b.Password != nil {
		req.Password = *b.Password
	} else {
		req.NoPassword = true
	}
	if b.DisplayName != nil {
		req.DisplayName = *b.DisplayName
	}
	if b.UserType.Value != nil {
		req.UserType = *b.UserType.Value
	}
	if _, err := a.Users.Register(ctx, req); err != nil {
		return err
	}
	if b.AvatarURL != nil && *b.AvatarURL != "" {
		if err := a.Users.SetAvatarURL(ctx, userID, *b.AvatarURL); err != nil {
			return err
		}
	}
	if b.Deactivated != nil && *b.Deactivated {
		return a.deactivateAccount(ctx, userID, false)
	}
	return nil
}

func (a *API) adminChangeUser(ctx context.Context, self string, u userapi.AdminUser, b putUserBody) error {
	userID := u.Name
	if b.Admin != nil && !*b.Admin && userID == self {
		return merr.InvalidParam("You may not demote yourself")
	}
	reactivate := b.Deactivated != nil && !*b.Deactivated && u.Deactivated
	deactivate := b.Deactivated != nil && *b.Deactivated && !u.Deactivated
	if reactivate && (b.Password == nil || *b.Password == "") {
		return merr.InvalidParam("Reactivating an account needs a password")
	}
	if deactivate && userID == self {
		return merr.InvalidParam("You may not deactivate yourself here")
	}
	if b.Admin != nil && *b.Admin != u.Admin {
		if err := a.Users.SetAdmin(ctx, userID, *b.Admin); err != nil {
			return err
		}
	}
	if b.UserType.Set {
		t := ""
		if b.UserType.Value != nil {
			t = *b.UserType.Value
		}
		if err := a.Users.SetUserType(ctx, userID, t); err != nil {
			return err
		}
	}
	if deactivate {
		return a.deactivateAccount(ctx, userID, false)
	}
	if u.Deactivated && !reactivate {
		return nil // a deactivated account has no profile or password to change
	}
	if b.Password != nil {
		hash, err := a.Users.HashNewPassword(*b.Password)
		if err != nil {
			return err
		}
		if reactivate {
			err = a.Users.Reactivate(ctx, userID, hash)
		} else {
			err = a.Users.ChangePassword(ctx, userID, "", hash, boolOr(b.LogoutDevices, true))
		}
		if err != nil {
			return err
		}
	}
	changed := false
	if b.DisplayName != nil {
		if err := a.Users.SetDisplayName(ctx, userID, *b.DisplayName); err != nil {
			return err
		}
		changed = true
	}
	if b.AvatarURL != nil {
		if err := a.Users.SetAvatarURL(ctx, userID, *b.AvatarURL); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		a.propagateProfile(ctx, userID)
	}
	return nil
}

// deactivateAccount deactivates an account (erasing it if asked) and has
// it leave its rooms through the roomserver: the one way both the user's
// own deactivation and the admin API's take.
func (a *API) deactivateAccount(ctx context.Context, userID string, erase bool) error {
	if err := a.Users.Deactivate(ctx, userID); err != nil {
		return err
	}
	if erase {
		if err := a.Users.Erase(ctx, userID); err != nil {
			return err
		}
	}
	if a.Leaver != nil {
		if err := a.Leaver.LeaveAllRooms(ctx, userID); err != nil {
			// The account is deactivated already; the rooms can be left later
			// (an admin can retry), so the caller still hears success.
			logging.From(ctx).WithError(err).WithField("user_id", userID).Error("deactivated account could not leave all its rooms")
		}
	}
	return nil
}

func (a *API) adminDeactivate(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	var b struct {
		Erase bool `json:"erase"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	ctx := withAddr(r)
	if _, err := a.Users.User(ctx, userID); err != nil {
		return err
	}
	if err := a.deactivateAccount(ctx, userID, b.Erase); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "success"})
}

func (a *API) adminResetPassword(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	var b struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	if b.NewPassword == nil {
		return merr.MissingParam("Missing new_password")
	}
	ctx := withAddr(r)
	u, err := a.Users.User(ctx, userID)
	if err != nil {
		return err
	}
	if u.Deactivated {
		return merr.InvalidParam("The account is deactivated: reactivate it with PUT /_synapse/admin/v2/users/{userId}")
	}
	hash, err := a.Users.HashNewPassword(*b.NewPassword)
	if err != nil {
		return err
	}
	if err := a.Users.ChangePassword(ctx, userID, "", hash, boolOr(b.LogoutDevices, true)); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) adminGetAdmin(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	u, err := a.Users.User(r.Context(), userID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"admin": u.Admin})
}

func (a *API) adminPutAdmin(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	var b struct {
		Admin *bool `json:"admin"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	if b.Admin == nil {
		return merr.MissingParam("Missing admin")
	}
	if !*b.Admin && userID == DeviceFrom(r).UserID {
		return merr.InvalidParam("You may not demote yourself")
	}
	if err := a.Users.SetAdmin(withAddr(r), userID, *b.Admin); err != nil {
		return err
	}
	return httpx.OK(w)
}

// adminLoginAs gives the admin an access token of the user, when
// admin_api.login_as_user allows it.
func (a *API) adminLoginAs(w http.ResponseWriter, r *http.Request) error {
	if !a.Cfg.AdminAPI.LoginAsUser {
		return merr.Forbidden("Logging in as another user is disabled (admin_api.login_as_user)")
	}
	userID, err := a.adminUserParam(r)
	if err != nil {
		return err
	}
	var b struct {
		ValidUntilMS int64 `json:"valid_until_ms"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	if b.ValidUntilMS < 0 {
		return merr.InvalidParam("valid_until_ms must be a time in Unix milliseconds")
	}
	admin := DeviceFrom(r).UserID
	if userID == admin {
		return merr.InvalidParam("Use /login to log in as yourself")
	}
	sess, err := a.Users.LoginAs(withAddr(r), userID, admin, b.ValidUntilMS)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"access_token": sess.AccessToken})
}

// Devices.

// adminDevice is a device as the admin API shows it.
type adminDevice struct {
	userapi.DeviceInfo
	UserID string `json:"user_id"`
	// LastSeenUserAgent is the client's User-Agent at the device's
	// sign-in or a later request (null when none was recorded).
	LastSeenUserAgent *string `json:"last_seen_user_agent"`
}

// withUserAgent fills the device's user agent from agents.
func (d adminDevice) withUserAgent(agents map[string]string) adminDevice {
	if ua, ok := agents[d.DeviceID]; ok {
		d.LastSeenUserAgent = &ua
	}
	return d
}

// adminDeviceUser is the {userId} of a device path, an existing account.
func (a *API) adminDeviceUser(r *http.Request) (string, error) {
	userID, err := a.adminUserParam(r)
	if err != nil {
		return "", err
	}
	if _, err := a.Users.User(r.Context(), userID); err != nil {
		return "", err
	}
	return userID, nil
}

func (a *API) adminListDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminDeviceUser(r)
	if err != nil {
		return err
	}
	devs, err := a.Users.Devices(r.Context(), userID)
	if err != nil {
		return err
	}
	agents, err := a.Users.DeviceUserAgents(r.Context(), userID)
	if err != nil {
		return err
	}
	out := make([]adminDevice, len(devs))
	for i, d := range devs {
		out[i] = adminDevice{DeviceInfo: d, UserID: userID}.withUserAgent(agents)
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"devices": out, "total": len(out)})
}

func (a *API) adminGetDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminDeviceUser(r)
	if err != nil {
		return err
	}
	d, err := a.Users.DeviceByID(r.Context(), userID, PathParam(r, "deviceId"))
	if err != nil {
		return err
	}
	agents, err := a.Users.DeviceUserAgents(r.Context(), userID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, adminDevice{DeviceInfo: d, UserID: userID}.withUserAgent(agents))
}

func (a *API) adminPutDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminDeviceUser(r)
	if err != nil {
		return err
	}
	var b struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	deviceID := PathParam(r, "deviceId")
	if b.DisplayName != nil && !storage.StorableText(*b.DisplayName) {
		return merr.InvalidParam("display_name must not contain NUL")
	}
	if b.DisplayName == nil {
		if _, err := a.Users.DeviceByID(r.Context(), userID, deviceID); err != nil {
			return err
		}
		return httpx.OK(w)
	}
	if err := a.Users.SetDeviceName(r.Context(), userID, deviceID, *b.DisplayName); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) adminDeleteDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminDeviceUser(r)
	if err != nil {
		return err
	}
	if err := a.Users.DeleteDevices(withAddr(r), userID, []string{PathParam(r, "deviceId")}); err != nil {
		return err
	}
	return httpx.OK(w)
}

// maxDeleteDevices bounds one delete_devices call.
const maxDeleteDevices = 1000

func (a *API) adminDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := a.adminDeviceUser(r)
	if err != nil {
		return err
	}
	var b struct {
		Devices []string `json:"devices"`
	}
	if err := httpx.DecodeJSON(r, &b, maxAuthBody); err != nil {
		return err
	}
	if b.Devices == nil {
		return merr.MissingParam("Missing devices")
	}
	if len(b.Devices) > maxDeleteDevices {
		return merr.InvalidParam("At most %d devices at a time", maxDeleteDevices)
	}
	for _, d := range b.Devices {
		if len(d) > userapi.MaxDeviceIDBytes || !storage.StorableText(d) {
			return merr.InvalidParam("devices holds an ID that is not a device ID")
		}
	}
	if err := a.Users.DeleteDevices(withAddr(r), userID, b.Devices); err != nil {
		return err
	}
	return httpx.OK(w)
}
