package clientapi

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/adminapi/regtokens"
	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

// Handler tests of the admin API's user half, through the real router.

type adminEnv struct {
	*utEnv
	audit      *audit.Log
	tokens     *regtokens.Store
	adminToken string
	userToken  string
}

// adminServer starts the client API with the user and admin areas: an
// admin @root and a user @alice, both logged in.
func adminServer(t *testing.T, db *storage.DB, mod ...func(*config.Config)) *adminEnv {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = "test.local"
	cfg.PasswordHashCost = 4
	cfg.Registration.Open = true
	cfg.RateLimits.Enabled = false
	cfg.MaxRequestBytes = 64 << 10
	for _, m := range mod {
		m(&cfg)
	}
	tokens := regtokens.New(db)
	users, err := userapi.New(context.Background(), db, nil, userapi.Options{
		ServerName: cfg.ServerName, PasswordHashCost: cfg.PasswordHashCost,
		RegistrationTokens: tokens, RequireRegistrationToken: cfg.Registration.RequireToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	rooms := &utRooms{}
	al := audit.New(db)
	api := &API{Cfg: cfg, Log: log, Auth: users, Users: users, Leaver: rooms, Propagator: rooms, Limiter: NewLimiter(cfg.RateLimits), Audit: al}
	api.Areas = append(api.BaseAreas(), api.UserAreas()...)
	api.Areas = append(api.Areas, api.AdminUsersArea, api.RegistrationTokensArea(tokens), api.AuditArea(al))
	srv := httptest.NewServer(api.Router())
	t.Cleanup(srv.Close)
	e := &adminEnv{utEnv: &utEnv{t: t, url: srv.URL, users: users, rooms: rooms}, audit: al, tokens: tokens}
	ctx := context.Background()
	if _, err := users.CreateAccount(ctx, "root", "root-password", true, "cli"); err != nil {
		t.Fatal(err)
	}
	if _, err := users.CreateAccount(ctx, "alice", "alice-password", false, "cli"); err != nil {
		t.Fatal(err)
	}
	e.adminToken = e.login("root", "root-password")
	e.userToken = e.login("alice", "alice-password")
	return e
}

func (e *adminEnv) login(user, password string) string {
	e.t.Helper()
	r := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user}, "password": password,
	})
	e.want(r, 200, "")
	return r.str("access_token")
}

// TestAdminAccess: every admin route answers 401 without a token and 403
// to a user who is not an admin, and works for an admin; each call is in
// the audit log.
func TestAdminAccess(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := adminServer(t, db, func(c *config.Config) { c.AdminAPI.LoginAsUser = true })
		if _, err := e.tokens.Create(context.Background(), regtokens.NewToken{Token: "tok1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.users.CreateAccount(context.Background(), "bob", "bob-password", false, "cli"); err != nil {
			t.Fatal(err)
		}
		bobDev := ""
		{
			r := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "bob", "password": "bob-password", "device_id": "BOBDEV"})
			e.want(r, 200, "")
			bobDev = r.str("device_id")
		}
		const v1, v2 = "/_synapse/admin/v1", "/_synapse/admin/v2"
		bob := url.PathEscape("@bob:test.local")
		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			action       string
		}{
			{"GET", v1 + "/server_version", nil, 200, "admin.server_version"},
			{"GET", v2 + "/users", nil, 200, "admin.users.list"},
			{"GET", v2 + "/users/" + bob, nil, 200, "admin.user.get"},
			{"PUT", v2 + "/users/" + bob, map[string]any{"displayname": "Bob B"}, 200, "admin.user.put"},
			{"GET", v1 + "/users/" + bob + "/admin", nil, 200, "admin.user.admin.get"},
			{"PUT", v1 + "/users/" + bob + "/admin", map[string]any{"admin": false}, 200, "admin.user.admin.set"},
			{"GET", v1 + "/whois/" + bob, nil, 200, "admin.user.whois"},
			{"GET", v2 + "/users/" + bob + "/devices", nil, 200, "admin.devices.list"},
			{"GET", v2 + "/users/" + bob + "/devices/" + bobDev, nil, 200, "admin.device.get"},
			{"PUT", v2 + "/users/" + bob + "/devices/" + bobDev, map[string]any{"display_name": "Phone"}, 200, "admin.device.put"},
			{"POST", v1 + "/users/" + bob + "/login", map[string]any{}, 200, "admin.user.login"},
			{"POST", v2 + "/users/" + bob + "/delete_devices", map[string]any{"devices": []string{"NOPE"}}, 200, "admin.devices.delete"},
			{"DELETE", v2 + "/users/" + bob + "/devices/" + bobDev, nil, 200, "admin.device.delete"},
			{"POST", v1 + "/reset_password/" + bob, map[string]any{"new_password": "another-password"}, 200, "admin.user.reset_password"},
			{"GET", v1 + "/registration_tokens", nil, 200, "admin.registration_tokens.list"},
			{"POST", v1 + "/registration_tokens/new", map[string]any{}, 200, "admin.registration_token.create"},
			{"POST", v1 + "/registration_tokens", map[string]any{"length": 8}, 200, "admin.registration_token.create"},
			{"GET", v1 + "/registration_tokens/tok1", nil, 200, "admin.registration_token.get"},
			{"PUT", v1 + "/registration_tokens/tok1", map[string]any{"uses_allowed": 3}, 200, "admin.registration_token.update"},
			{"DELETE", v1 + "/registration_tokens/tok1", nil, 200, "admin.registration_token.delete"},
			{"GET", v1 + "/audit", nil, 200, "admin.audit.query"},
			{"POST", v1 + "/deactivate/" + bob, map[string]any{"erase": true}, 200, "admin.user.deactivate"},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				e.t = t
				e.want(e.do(tc.method, tc.path, "", tc.body), 401, "M_MISSING_TOKEN")
				e.want(e.do(tc.method, tc.path, e.userToken, tc.body), 403, "M_FORBIDDEN")
				r := e.do(tc.method, tc.path, e.adminToken, tc.body)
				e.want(r, tc.status, "")
				got, err := e.audit.Query(context.Background(), audit.Filter{Action: tc.action, Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				// Newest first: the admin's call, alice's refusal, the anonymous one.
				if len(got) < 3 || !got[0].OK || got[0].Actor != "@root:test.local" || got[1].OK || got[1].Actor != "@alice:test.local" ||
					got[1].Detail["errcode"] != "M_FORBIDDEN" || got[2].OK || got[2].Actor != "" || got[0].Addr == "" {
					t.Fatalf("audit of %s: %+v", tc.action, got)
				}
				if strings.Contains(tc.path, bob) && got[0].Target != "@bob:test.local" {
					t.Fatalf("audit target %+v", got[0])
				}
			})
		}
	})
}

// TestAdminUsers: listing, creating, changing, deactivating and
// reactivating accounts, and bad input answered with Matrix errors.
func TestAdminUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := adminServer(t, db)
		ctx := context.Background()
		tok := e.adminToken
		const users = "/_synapse/admin/v2/users"
		carol := users + "/" + url.PathEscape("@carol:test.local")

		// Create (201), then modify (200).
		r := e.do("PUT", carol, tok, map[string]any{"password": "carol-password", "displayname": "Carol", "user_type": "bot", "avatar_url": "mxc://test.local/a"})
		e.want(r, 201, "")
		if r.str("name") != "@carol:test.local" || r.str("displayname") != "Carol" || r.str("user_type") != "bot" || r.body["admin"] != false || r.str("avatar_url") != "mxc://test.local/a" {
			t.Fatalf("created %s", r.raw)
		}
		carolTok := e.login("carol", "carol-password")
		r = e.do("PUT", carol, tok, map[string]any{"admin": true, "user_type": nil, "displayname": "Carol C"})
		e.want(r, 200, "")
		if r.body["admin"] != true || r.body["user_type"] != nil || r.str("displayname") != "Carol C" {
			t.Fatalf("modified %s", r.raw)
		}
		// The admin flag reaches carol's cached token at once.
		e.want(e.do("GET", users, carolTok, nil), 200, "")
		e.want(e.do("PUT", "/_synapse/admin/v1/users/"+url.PathEscape("@carol:test.local")+"/admin", tok, map[string]any{"admin": false}), 200, "")
		e.want(e.do("GET", users, carolTok, nil), 403, "M_FORBIDDEN")
		// A new password logs the other devices out (the default).
		e.want(e.do("PUT", carol, tok, map[string]any{"password": "carol-new-password"}), 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", carolTok, nil), 401, "M_UNKNOWN_TOKEN")
		carolTok = e.login("carol", "carol-new-password")
		// Created without a password: nobody can log in to it.
		e.want(e.do("PUT", users+"/"+url.PathEscape("@dave:test.local"), tok, map[string]any{}), 201, "")

		// The list: pages, filters, order.
		r = e.do("GET", users+"?limit=2", tok, nil)
		e.want(r, 200, "")
		if list, _ := r.body["users"].([]any); len(list) != 2 || r.body["total"] != float64(4) || r.str("next_token") != "2" {
			t.Fatalf("page: %s", r.raw)
		}
		r = e.do("GET", users+"?name=carol%20c", tok, nil)
		if list, _ := r.body["users"].([]any); len(list) != 1 || !strings.Contains(r.raw, `"name":"@carol:test.local"`) {
			t.Fatalf("by display name: %s", r.raw)
		}
		r = e.do("GET", users+"?user_id=ALI", tok, nil)
		if list, _ := r.body["users"].([]any); len(list) != 1 || !strings.Contains(r.raw, "@alice") {
			t.Fatalf("by user ID: %s", r.raw)
		}
		r = e.do("GET", users+"?admins=true", tok, nil)
		if list, _ := r.body["users"].([]any); len(list) != 1 || !strings.Contains(r.raw, "@root") {
			t.Fatalf("admins: %s", r.raw)
		}
		r = e.do("GET", users+"?order_by=name&dir=b&limit=1", tok, nil)
		if !strings.Contains(r.raw, "@root") {
			t.Fatalf("backwards: %s", r.raw)
		}
		r = e.do("GET", users+"?name=%25", tok, nil) // LIKE's wildcard is a plain character
		if list, _ := r.body["users"].([]any); len(list) != 0 {
			t.Fatalf("wildcard: %s", r.raw)
		}

		// Deactivation through the account code: devices gone, rooms left,
		// hidden from the list unless asked for, erased.
		r = e.do("POST", "/_synapse/admin/v1/deactivate/"+url.PathEscape("@carol:test.local"), tok, map[string]any{"erase": true})
		e.want(r, 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", carolTok, nil), 401, "M_UNKNOWN_TOKEN")
		if fmt.Sprint(e.rooms.left) != "[@carol:test.local]" {
			t.Fatalf("rooms left for %v", e.rooms.left)
		}
		r = e.do("GET", carol, tok, nil)
		if r.body["deactivated"] != true || r.body["erased"] != true {
			t.Fatalf("deactivated %s", r.raw)
		}
		r = e.do("GET", users, tok, nil)
		if strings.Contains(r.raw, "@carol") {
			t.Fatalf("deactivated in the default list: %s", r.raw)
		}
		r = e.do("GET", users+"?deactivated=true", tok, nil)
		if !strings.Contains(r.raw, "@carol") {
			t.Fatalf("deactivated=true: %s", r.raw)
		}
		// Reactivation needs a password.
		e.want(e.do("PUT", carol, tok, map[string]any{"deactivated": false}), 400, "M_INVALID_PARAM")
		r = e.do("PUT", carol, tok, map[string]any{"deactivated": false, "password": "back-again"})
		e.want(r, 200, "")
		if r.body["deactivated"] != false || r.body["erased"] != false {
			t.Fatalf("reactivated %s", r.raw)
		}
		e.login("carol", "back-again")
		// Deactivation by PUT, too.
		e.want(e.do("PUT", carol, tok, map[string]any{"deactivated": true}), 200, "")
		if ok, _ := e.users.AccountExists(ctx, "@carol:test.local"); ok {
			t.Fatal("still active")
		}

		// Reset password.
		alice := url.PathEscape("@alice:test.local")
		e.want(e.do("POST", "/_synapse/admin/v1/reset_password/"+alice, tok, map[string]any{"new_password": "alice-2", "logout_devices": false}), 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", e.userToken, nil), 200, "")
		e.login("alice", "alice-2")

		// Whois.
		r = e.do("GET", "/_synapse/admin/v1/whois/"+alice, tok, nil)
		e.want(r, 200, "")
		if r.str("user_id") != "@alice:test.local" || !strings.Contains(r.raw, `"sessions"`) {
			t.Fatalf("whois %s", r.raw)
		}

		// Bad input.
		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"GET", users + "?limit=0", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?limit=x", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?from=-1", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?order_by=password", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?dir=up", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?guests=maybe", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "?name=a%00b", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "/" + url.PathEscape("@nobody:test.local"), nil, 404, "M_NOT_FOUND"},
			{"GET", users + "/" + url.PathEscape("@x:elsewhere"), nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "/notauser", nil, 400, "M_INVALID_PARAM"},
			{"GET", users + "/%40a%00:test.local", nil, 400, "M_INVALID_PARAM"},
			{"PUT", users + "/" + url.PathEscape("@Upper:test.local"), map[string]any{}, 400, "M_INVALID_USERNAME"},
			{"PUT", carol, "{", 400, "M_NOT_JSON"},
			{"PUT", carol, `{"admin":"yes"}`, 400, "M_BAD_JSON"},
			{"PUT", carol, `{"user_type":"wizard"}`, 400, "M_INVALID_PARAM"},
			{"PUT", carol, `{"user_type":5}`, 400, "M_BAD_JSON"},
			{"PUT", carol, `{"displayname":"` + strings.Repeat("x", 300) + `"}`, 400, "M_INVALID_PARAM"},
			{"PUT", users + "/" + url.PathEscape("@root:test.local"), `{"admin":false}`, 400, "M_INVALID_PARAM"},
			{"PUT", users + "/" + url.PathEscape("@root:test.local"), `{"deactivated":true}`, 400, "M_INVALID_PARAM"},
			{"PUT", "/_synapse/admin/v1/users/" + url.PathEscape("@root:test.local") + "/admin", `{"admin":false}`, 400, "M_INVALID_PARAM"},
			{"PUT", "/_synapse/admin/v1/users/" + alice + "/admin", `{}`, 400, "M_MISSING_PARAM"},
			{"POST", "/_synapse/admin/v1/reset_password/" + alice, `{}`, 400, "M_MISSING_PARAM"},
			{"POST", "/_synapse/admin/v1/reset_password/" + alice, `{"new_password":""}`, 400, "M_WEAK_PASSWORD"},
			{"POST", "/_synapse/admin/v1/reset_password/" + carol[len(users)+1:], `{"new_password":"abcdefghijk"}`, 400, "M_INVALID_PARAM"},
			{"POST", "/_synapse/admin/v1/deactivate/" + url.PathEscape("@nobody:test.local"), `{}`, 404, "M_NOT_FOUND"},
			{"POST", "/_synapse/admin/v1/deactivate/" + alice, `{"erase":"yes"}`, 400, "M_BAD_JSON"},
			{"POST", "/_synapse/admin/v1/users/" + alice + "/login", `{}`, 403, "M_FORBIDDEN"}, // off by default
			{"GET", "/_synapse/admin/v1/whois/" + url.PathEscape("@nobody:test.local"), nil, 404, "M_NOT_FOUND"},
			{"GET", users + "/" + alice + "/devices/NOPE", nil, 404, "M_NOT_FOUND"},
			{"GET", users + "/" + url.PathEscape("@nobody:test.local") + "/devices", nil, 404, "M_NOT_FOUND"},
			{"PUT", users + "/" + alice + "/devices/NOPE", `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
			{"PUT", users + "/" + alice + "/devices/NOPE", `{"display_name":"a\u0000b"}`, 400, "M_INVALID_PARAM"},
			{"POST", users + "/" + alice + "/delete_devices", `{}`, 400, "M_MISSING_PARAM"},
			{"POST", users + "/" + alice + "/delete_devices", `{"devices":["a\u0000"]}`, 400, "M_INVALID_PARAM"},
			{"POST", users + "/" + alice + "/delete_devices", `{"devices":"A"}`, 400, "M_BAD_JSON"},
			{"GET", "/_synapse/admin/v1/audit?since=soon", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/_synapse/admin/v1/audit?from=0", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/_synapse/admin/v1/audit?limit=5000", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/_synapse/admin/v1/audit?user=%00", nil, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				e.t = t
				e.want(e.do(tc.method, tc.path, tok, tc.body), tc.status, tc.errcode)
			})
		}
	})
}

// TestAdminLoginAs: with admin_api.login_as_user on, an admin gets a
// working token of another user, one that expires when asked; never of
// themselves or of a deactivated account.
func TestAdminLoginAs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := adminServer(t, db, func(c *config.Config) { c.AdminAPI.LoginAsUser = true })
		const path = "/_synapse/admin/v1/users/%s/login"
		alice := fmt.Sprintf(path, url.PathEscape("@alice:test.local"))
		r := e.do("POST", alice, e.adminToken, map[string]any{})
		e.want(r, 200, "")
		who := e.do("GET", "/_matrix/client/v3/account/whoami", r.str("access_token"), nil)
		e.want(who, 200, "")
		if who.str("user_id") != "@alice:test.local" {
			t.Fatalf("whoami %s", who.raw)
		}
		r = e.do("POST", alice, e.adminToken, map[string]any{"valid_until_ms": 1000})
		e.want(r, 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", r.str("access_token"), nil), 401, "M_UNKNOWN_TOKEN")
		e.want(e.do("POST", alice, e.adminToken, map[string]any{"valid_until_ms": -1}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", fmt.Sprintf(path, url.PathEscape("@root:test.local")), e.adminToken, map[string]any{}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", fmt.Sprintf(path, url.PathEscape("@nobody:test.local")), e.adminToken, map[string]any{}), 404, "M_NOT_FOUND")
		e.want(e.do("POST", "/_synapse/admin/v1/deactivate/"+url.PathEscape("@alice:test.local"), e.adminToken, map[string]any{}), 200, "")
		e.want(e.do("POST", alice, e.adminToken, map[string]any{}), 400, "M_INVALID_PARAM")
	})
}
