package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/totp"
)

// Handler tests of the user API areas, through the real router.

const utSecret = "shared-secret-for-tests"

// utRooms records what the user API asks of the roomserver.
type utRooms struct {
	mu         sync.Mutex
	left       []string
	propagated []string
	visible    map[string]bool // "viewer>target": profile visible
}

func (r *utRooms) ProfileVisible(ctx context.Context, viewer, target string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return viewer == target || r.visible[viewer+">"+target], nil
}

func (r *utRooms) LeaveAllRooms(ctx context.Context, userID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.left = append(r.left, userID)
	return nil
}

func (r *utRooms) PropagateProfile(ctx context.Context, userID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.propagated = append(r.propagated, userID)
	return nil
}

type utEnv struct {
	t     *testing.T
	url   string
	users *userapi.Service
	rooms *utRooms
}

// utServer starts the client API with the user areas on a fresh database.
func utServer(t *testing.T, db *storage.DB, mod ...func(*config.Config)) *utEnv {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = "test.local"
	cfg.PasswordHashCost = 4
	cfg.Registration.Open = true
	cfg.Registration.SharedSecret = utSecret
	cfg.RateLimits.Enabled = false
	cfg.MaxRequestBytes = 64 << 10
	for _, m := range mod {
		m(&cfg)
	}
	opts := userapi.Options{
		ServerName: cfg.ServerName, PasswordHashCost: cfg.PasswordHashCost, SharedSecret: cfg.Registration.SharedSecret,
		Mail: testMailer(cfg), PublicBaseURL: cfg.PublicBaseURL, EmailTokensPerHour: cfg.Email.TokensPerHour,
	}
	if cfg.Auth.TOTP == config.TOTPRequired { // the policy needs no enrolments then
		opts.SecondFactor = totp.Policy{Mode: totp.Required}
	}
	users, err := userapi.New(context.Background(), db, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	rooms := &utRooms{}
	api := &API{Cfg: cfg, Log: log, Auth: users, Users: users, Leaver: rooms, Propagator: rooms, ProfileVisibility: rooms, Limiter: NewLimiter(cfg.RateLimits)}
	api.Areas = append(api.BaseAreas(), api.UserAreas()...)
	srv := httptest.NewServer(api.Router())
	t.Cleanup(srv.Close)
	return &utEnv{t: t, url: srv.URL, users: users, rooms: rooms}
}

// utResp is a decoded response.
type utResp struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (r utResp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request; body is a string (sent as is) or a value (sent as JSON).
func (e *utEnv) do(method, path, token string, body any) utResp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := utResp{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// want checks a response's status and errcode ("" for none).
func (e *utEnv) want(r utResp, status int, errcode string) {
	e.t.Helper()
	if r.status != status || r.str("errcode") != errcode {
		e.t.Fatalf("got %d %s, want %d %q", r.status, r.raw, status, errcode)
	}
}

// register makes an account through the API and returns its token and device.
func (e *utEnv) register(user, password string) (token, device string) {
	e.t.Helper()
	r := e.do("POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": user, "password": password, "auth": map[string]string{"type": "m.login.dummy"},
	})
	e.want(r, 200, "")
	return r.str("access_token"), r.str("device_id")
}

func TestRegisterEndpoint(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		const reg = "/_matrix/client/v3/register"

		// UIA round trip: the challenge has no errcode, then the dummy stage.
		r := e.do("POST", reg, "", map[string]any{"username": "Alice", "password": "pw", "initial_device_display_name": "Laptop", "device_id": "LAPTOP"})
		e.want(r, 401, "")
		session := r.str("session")
		if session == "" || !strings.Contains(r.raw, `"flows":[{"stages":["m.login.dummy"]}]`) || !strings.Contains(r.raw, `"params":{}`) {
			t.Fatalf("challenge %s", r.raw)
		}
		// The session keeps the first request's parameters: the second's differ in vain.
		r = e.do("POST", reg, "", map[string]any{"username": "bob", "password": "other", "initial_device_display_name": "Phone",
			"device_id": "PHONE", "auth": map[string]string{"type": "m.login.dummy", "session": session}})
		e.want(r, 200, "")
		if r.str("user_id") != "@alice:test.local" || r.str("device_id") != "LAPTOP" || r.str("access_token") == "" || r.str("home_server") != "test.local" {
			t.Fatalf("register response %s", r.raw)
		}
		token := r.str("access_token")
		r = e.do("GET", "/_matrix/client/v3/account/whoami", token, nil)
		e.want(r, 200, "")
		if r.raw != `{"device_id":"LAPTOP","is_guest":false,"user_id":"@alice:test.local"}` {
			t.Fatalf("whoami %s", r.raw)
		}
		r = e.do("GET", "/_matrix/client/v3/devices/LAPTOP", token, nil)
		if r.str("display_name") != "Laptop" {
			t.Fatalf("device %s", r.raw)
		}
		// The session is used up.
		r = e.do("POST", reg, "", map[string]any{"username": "carol", "password": "pw", "auth": map[string]string{"type": "m.login.dummy", "session": session}})
		e.want(r, 400, "M_UNKNOWN")

		// Taken and invalid names, before any auth.
		e.want(e.do("POST", reg, "", map[string]any{"username": "alice", "password": "pw"}), 400, "M_USER_IN_USE")
		e.want(e.do("POST", reg, "", map[string]any{"username": "al ice", "password": "pw"}), 400, "M_INVALID_USERNAME")
		e.want(e.do("GET", "/_matrix/client/v3/register/available?username=ALICE", "", nil), 400, "M_USER_IN_USE")
		e.want(e.do("GET", "/_matrix/client/v3/register/available?username=a*", "", nil), 400, "M_INVALID_USERNAME")
		e.want(e.do("GET", "/_matrix/client/v3/register/available", "", nil), 400, "M_MISSING_PARAM")
		r = e.do("GET", "/_matrix/client/v3/register/available?username=bob", "", nil)
		e.want(r, 200, "")
		if r.raw != `{"available":true}` {
			t.Fatalf("available %s", r.raw)
		}

		// No username: a random one. inhibit_login: no token.
		r = e.do("POST", reg, "", map[string]any{"password": "pw", "inhibit_login": true, "auth": map[string]string{"type": "m.login.dummy"}})
		e.want(r, 200, "")
		if !strings.HasPrefix(r.str("user_id"), "@u") || r.body["access_token"] != nil || r.body["device_id"] != nil {
			t.Fatalf("inhibited registration %s", r.raw)
		}

		// Guests, bad kinds, missing password, bad bodies.
		e.want(e.do("POST", reg+"?kind=guest", "", map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
		e.want(e.do("POST", reg+"?kind=robot", "", map[string]any{}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", reg, "", map[string]any{"username": "dave", "auth": map[string]string{"type": "m.login.dummy"}}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", reg, "", map[string]any{"username": "dave", "password": strings.Repeat("p", 600), "auth": map[string]string{"type": "m.login.dummy"}}), 400, "M_WEAK_PASSWORD")
		e.want(e.do("POST", reg, "", `{"username": `), 400, "M_NOT_JSON")
		e.want(e.do("POST", reg, "", `{"username": 5}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", reg, "", `{"password": "pw", "auth": {"type": 5}}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", reg, "", `[]`), 400, "M_BAD_JSON")
		e.want(e.do("POST", reg, "", `{"username":"`+strings.Repeat("x", 20<<10)+`"}`), 413, "M_TOO_LARGE")
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.password", "password": "x"}, "password": "pw"})
		if r.status != 401 || r.str("errcode") != "M_UNRECOGNIZED" || r.str("session") == "" {
			t.Fatalf("unoffered stage: %s", r.raw)
		}

		// The validity endpoint of registration tokens answers false while none exist.
		r = e.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "", nil)
		e.want(r, 200, "")
		if r.raw != `{"valid":false}` {
			t.Fatalf("token validity %s", r.raw)
		}
	})
}

func TestRegistrationClosed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) { c.Registration.Open = false })
		r := e.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "pw"})
		e.want(r, 403, "M_FORBIDDEN")
		if r.str("error") != "Registration is disabled" {
			t.Fatalf("message %q", r.str("error"))
		}
		e.want(e.do("POST", "/_matrix/client/v3/register?kind=guest", "", nil), 403, "M_GUEST_ACCESS_FORBIDDEN")
		e.want(e.do("GET", "/_matrix/client/v3/register/available?username=bob", "", nil), 403, "M_FORBIDDEN")
		// Shared-secret registration still works.
		r = e.do("GET", "/_synapse/admin/v1/register", "", nil)
		e.want(r, 200, "")
		nonce := r.str("nonce")
		r = e.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonce, "username": "alice", "password": "pw",
			"admin": false, "mac": userapi.SharedSecretMAC(utSecret, nonce, "alice", "pw", false, nil)})
		e.want(r, 200, "")
	})
}

func TestSharedSecretEndpoint(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		const path = "/_synapse/admin/v1/register"
		nonce := e.do("GET", path, "", nil).str("nonce")
		if len(nonce) < 16 {
			t.Fatalf("nonce %q", nonce)
		}
		// Wrong MAC (signed with another secret).
		r := e.do("POST", path, "", map[string]any{"nonce": nonce, "username": "admin", "password": "pw", "admin": true,
			"mac": userapi.SharedSecretMAC("another secret", nonce, "admin", "pw", true, nil)})
		e.want(r, 403, "M_FORBIDDEN")

		nonce = e.do("GET", path, "", nil).str("nonce")
		r = e.do("POST", path, "", map[string]any{"nonce": nonce, "username": "admin", "password": "pw", "admin": true, "displayname": "Admin",
			"mac": userapi.SharedSecretMAC(utSecret, nonce, "admin", "pw", true, nil)})
		e.want(r, 200, "")
		if r.str("user_id") != "@admin:test.local" || r.str("access_token") == "" || r.str("device_id") == "" {
			t.Fatalf("response %s", r.raw)
		}
		if r = e.do("GET", "/_matrix/client/v3/profile/@admin:test.local", r.str("access_token"), nil); r.str("displayname") != "Admin" {
			t.Fatalf("profile %s", r.raw)
		}
		// Replaying the same request: the nonce is gone.
		r = e.do("POST", path, "", map[string]any{"nonce": nonce, "username": "admin2", "password": "pw", "admin": true,
			"mac": userapi.SharedSecretMAC(utSecret, nonce, "admin2", "pw", true, nil)})
		e.want(r, 400, "M_UNKNOWN")
		e.want(e.do("POST", path, "", `{"nonce": 1}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", path, "", `{}`), 400, "M_MISSING_PARAM")

		off := utServer(t, db, func(c *config.Config) { c.Registration.SharedSecret = "" })
		off.want(off.do("GET", path, "", nil), 400, "M_UNKNOWN")
		off.want(off.do("POST", path, "", `{}`), 400, "M_UNKNOWN")
	})
}

func TestLoginLogoutEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		e.register("alice", "secret pw")
		const login = "/_matrix/client/v3/login"

		r := e.do("GET", login, "", nil)
		if r.raw != `{"flows":[{"type":"m.login.password"}]}` {
			t.Fatalf("flows %s", r.raw)
		}
		bad1 := e.do("POST", login, "", map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "wrong"})
		bad2 := e.do("POST", login, "", map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "mallory"}, "password": "wrong"})
		e.want(bad1, 403, "M_FORBIDDEN")
		if bad1.raw != bad2.raw || bad1.str("error") != "Invalid username or password" {
			t.Fatalf("failed logins differ: %s / %s", bad1.raw, bad2.raw)
		}

		// Identifier with a full ID in upper case, and the legacy user field.
		r = e.do("POST", login, "", map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "@ALICE:test.local"},
			"password": "secret pw", "initial_device_display_name": "Phone", "device_id": "PHONE"})
		e.want(r, 200, "")
		if r.str("user_id") != "@alice:test.local" || r.str("device_id") != "PHONE" || r.str("home_server") != "test.local" {
			t.Fatalf("login %s", r.raw)
		}
		phone := r.str("access_token")
		r = e.do("POST", login, "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret pw"})
		e.want(r, 200, "")
		other := r.str("access_token")

		// device_id reuse replaces that device's token.
		r = e.do("POST", login, "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret pw", "device_id": "PHONE"})
		e.want(r, 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", phone, nil), 401, "M_UNKNOWN_TOKEN")
		phone = r.str("access_token")

		// Bad requests.
		e.want(e.do("POST", login, "", map[string]any{"type": "m.login.token", "token": "x"}), 400, "M_UNKNOWN")
		e.want(e.do("POST", login, "", map[string]any{"password": "x", "user": "alice"}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", login, "", map[string]any{"type": "m.login.password", "password": "x"}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", login, "", map[string]any{"type": "m.login.password", "user": "alice"}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", login, "", map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.thirdparty", "medium": "email"}, "password": "x"}), 400, "M_UNKNOWN")
		e.want(e.do("POST", login, "", `{"type": "m.login.password", "identifier": "alice"}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", login, "", `not json`), 400, "M_NOT_JSON")
		e.want(e.do("POST", login, "", `{"password":"`+strings.Repeat("x", 10<<10)+`"}`), 413, "M_TOO_LARGE")

		// Logout: the token stops working at once; the other device stays.
		e.want(e.do("POST", "/_matrix/client/v3/logout", phone, nil), 200, "")
		r = e.do("GET", "/_matrix/client/v3/account/whoami", phone, nil)
		e.want(r, 401, "M_UNKNOWN_TOKEN")
		if soft, ok := r.body["soft_logout"].(bool); !ok || soft {
			t.Fatalf("soft_logout in %s", r.raw)
		}
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", other, nil), 200, "")
		e.want(e.do("POST", "/_matrix/client/v3/logout/all", other, nil), 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", other, nil), 401, "M_UNKNOWN_TOKEN")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", "", nil), 401, "M_MISSING_TOKEN")
		// The token in the query string works too.
		tok, _ := e.register("bob", "pw")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami?access_token="+tok, "", nil), 200, "")
	})
}

func TestLoginRateLimit(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) {
			c.RateLimits.Enabled = true
			c.RateLimits.LoginPerMinute = 1
		})
		e.register("alice", "pw")
		body := map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"}
		e.want(e.do("POST", "/_matrix/client/v3/login", "", body), 200, "")
		r := e.do("POST", "/_matrix/client/v3/login", "", body)
		e.want(r, 429, "M_LIMIT_EXCEEDED")
		if ms, ok := r.body["retry_after_ms"].(float64); !ok || ms <= 0 || ms > 60_001 {
			t.Fatalf("retry_after_ms in %s", r.raw)
		}
		if r.header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After header")
		}
		// No trusted proxies: a forged X-Forwarded-For from this loopback
		// client does not make it someone else.
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", e.url+"/_matrix/client/v3/login", bytes.NewReader(raw))
		req.Header.Set("X-Forwarded-For", "198.51.100.77")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 429 {
			t.Fatalf("a forged X-Forwarded-For escaped the rate limit: %d", res.StatusCode)
		}
	})
}

// TestRegisterRateLimitCountsRegistrations: with the default limit, a
// client's whole registration (two plain challenges, then the request that
// creates the account) goes through; the limit still stops the next ones.
func TestRegisterRateLimitCountsRegistrations(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) {
			c.RateLimits.Enabled = true
			c.RateLimits.RegisterPerMinute = 5
		})
		const reg = "/_matrix/client/r0/register"
		flow := func(user string) (status int) {
			r := e.do("POST", reg, "", map[string]any{})
			if r.status != 401 {
				return r.status
			}
			r = e.do("POST", reg, "", map[string]any{"username": user, "password": "pw", "auth": map[string]any{"session": r.str("session")}})
			if r.status != 401 {
				return r.status
			}
			r = e.do("POST", reg, "", map[string]any{"username": user, "password": "pw", "auth": map[string]any{"type": "m.login.dummy", "session": r.str("session")}})
			return r.status
		}
		if got := flow("first"); got != 200 {
			t.Fatalf("first registration: %d", got)
		}
		limited := false
		for i := 0; i < 3 && !limited; i++ {
			limited = flow(fmt.Sprint("next", i)) == 429
		}
		if !limited {
			t.Fatal("three more registrations at once were not limited")
		}
	})
}

func TestLoginAccountBackoff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		e.register("alice", "pw")
		wrong := map[string]any{"type": "m.login.password", "user": "alice", "password": "guess"}
		for i := 0; i < 3; i++ {
			e.want(e.do("POST", "/_matrix/client/v3/login", "", wrong), 403, "M_FORBIDDEN")
		}
		r := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"})
		e.want(r, 429, "M_LIMIT_EXCEEDED")
		if _, ok := r.body["retry_after_ms"].(float64); !ok {
			t.Fatalf("no retry_after_ms: %s", r.raw)
		}
	})
}

func TestPasswordChangeAndDeactivate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		token, device := e.register("alice", "old pw")
		second := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "old pw"}).str("access_token")
		const pw = "/_matrix/client/v3/account/password"

		e.want(e.do("POST", pw, token, map[string]any{}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", pw, token, `{"new_password": true}`), 400, "M_BAD_JSON")
		r := e.do("POST", pw, token, map[string]any{"new_password": "new pw"})
		e.want(r, 401, "")
		session := r.str("session")
		if !strings.Contains(r.raw, `"stages":["m.login.password"]`) {
			t.Fatalf("challenge %s", r.raw)
		}
		r = e.do("POST", pw, token, map[string]any{"new_password": "new pw", "auth": map[string]any{"type": "m.login.password", "session": session,
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "wrong"}})
		e.want(r, 401, "M_FORBIDDEN")
		if r.str("session") != session || !strings.Contains(r.raw, `"flows"`) {
			t.Fatalf("failed attempt %s", r.raw)
		}
		r = e.do("POST", pw, token, map[string]any{"new_password": "new pw", "auth": map[string]any{"type": "m.login.password", "session": session,
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "old pw"}})
		e.want(r, 200, "")
		// logout_devices defaults to true and keeps the current device.
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", token, nil), 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", second, nil), 401, "M_UNKNOWN_TOKEN")
		e.want(e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "new pw"}), 200, "")

		// Deactivation.
		const deact = "/_matrix/client/v3/account/deactivate"
		e.want(e.do("POST", deact, token, map[string]any{}), 401, "")
		r = e.do("POST", deact, token, map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "alice", "password": "new pw"}})
		e.want(r, 200, "")
		if r.raw != `{"id_server_unbind_result":"no-support"}` {
			t.Fatalf("deactivate %s", r.raw)
		}
		if fmt.Sprint(e.rooms.left) != "[@alice:test.local]" {
			t.Fatalf("rooms left for %v", e.rooms.left)
		}
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", token, nil), 401, "M_UNKNOWN_TOKEN")
		e.want(e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "new pw"}), 403, "M_USER_DEACTIVATED")
		watcher, _ := e.register("watcher", "pw")
		e.want(e.do("GET", "/_matrix/client/v3/profile/@alice:test.local", watcher, nil), 404, "M_NOT_FOUND")
		_ = device
	})
}

func TestDeviceEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) { c.TrustedProxies = "127.0.0.1,::1" })
		token, device := e.register("alice", "pw")
		second := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw", "device_id": "SECOND"}).str("access_token")
		e.register("bob", "bobpw")

		r := e.do("GET", "/_matrix/client/v3/devices", token, nil)
		e.want(r, 200, "")
		devs, _ := r.body["devices"].([]any)
		if len(devs) != 2 {
			t.Fatalf("devices %s", r.raw)
		}
		e.want(e.do("PUT", "/_matrix/client/v3/devices/SECOND", token, map[string]string{"display_name": "Tablet"}), 200, "")
		if r = e.do("GET", "/_matrix/client/v3/devices/SECOND", token, nil); r.str("display_name") != "Tablet" || r.str("device_id") != "SECOND" {
			t.Fatalf("device %s", r.raw)
		}
		e.want(e.do("PUT", "/_matrix/client/v3/devices/SECOND", token, map[string]string{}), 200, "")
		e.want(e.do("PUT", "/_matrix/client/v3/devices/NOPE", token, map[string]string{"display_name": "x"}), 404, "M_NOT_FOUND")
		e.want(e.do("PUT", "/_matrix/client/v3/devices/NOPE", token, map[string]string{}), 404, "M_NOT_FOUND")
		e.want(e.do("PUT", "/_matrix/client/v3/devices/SECOND", token, `{"display_name": 1}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", "/_matrix/client/v3/devices/SECOND", token, map[string]string{"display_name": strings.Repeat("x", 101)}), 413, "M_TOO_LARGE")
		e.want(e.do("GET", "/_matrix/client/v3/devices/NOPE", token, nil), 404, "M_NOT_FOUND")

		// DELETE with UIA: challenge, Bob's password refused, Alice's accepted.
		r = e.do("DELETE", "/_matrix/client/v3/devices/SECOND", token, nil)
		e.want(r, 401, "")
		session := r.str("session")
		r = e.do("DELETE", "/_matrix/client/v3/devices/SECOND", token, map[string]any{"auth": map[string]any{"type": "m.login.password", "session": session, "user": "bob", "password": "bobpw"}})
		e.want(r, 401, "M_FORBIDDEN")
		r = e.do("DELETE", "/_matrix/client/v3/devices/SECOND", token, map[string]any{"auth": map[string]any{"type": "m.login.password", "session": session, "user": "alice", "password": "pw"}})
		e.want(r, 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", second, nil), 401, "M_UNKNOWN_TOKEN")

		// POST /delete_devices.
		third := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"})
		e.want(e.do("POST", "/_matrix/client/v3/delete_devices", token, map[string]any{}), 400, "M_MISSING_PARAM")
		e.want(e.do("POST", "/_matrix/client/v3/delete_devices", token, `{"devices": "x"}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", "/_matrix/client/v3/delete_devices", token, map[string]any{"devices": []string{third.str("device_id")}}), 401, "")
		r = e.do("POST", "/_matrix/client/v3/delete_devices", token, map[string]any{"devices": []string{third.str("device_id"), "UNKNOWN"},
			"auth": map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "@alice:test.local"}, "password": "pw"}})
		e.want(r, 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", third.str("access_token"), nil), 401, "M_UNKNOWN_TOKEN")
		r = e.do("GET", "/_matrix/client/v3/devices", token, nil)
		if devs, _ := r.body["devices"].([]any); len(devs) != 1 || !strings.Contains(r.raw, device) {
			t.Fatalf("devices left %s", r.raw)
		}

		// Last seen: noted by the auth hook on a token's first use in an
		// interval, written off the request path.
		fresh := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw", "device_id": "FRESH"}).str("access_token")
		req, _ := http.NewRequest("GET", e.url+"/_matrix/client/v3/account/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+fresh)
		req.Header.Set("X-Forwarded-For", "198.51.100.9")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if err := e.users.FlushSeen(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r = e.do("GET", "/_matrix/client/v3/devices/FRESH", token, nil); r.str("last_seen_ip") != "198.51.100.9" || r.body["last_seen_ts"] == nil {
			t.Fatalf("last seen %s", r.raw)
		}
	})
}

func TestCapabilitiesEndpoint(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) { c.DefaultRoomVersion = "10" })
		token, _ := e.register("alice", "pw")
		r := e.do("GET", "/_matrix/client/v3/capabilities", token, nil)
		e.want(r, 200, "")
		var caps struct {
			Capabilities struct {
				RoomVersions struct {
					Default   string            `json:"default"`
					Available map[string]string `json:"available"`
				} `json:"m.room_versions"`
				ChangePassword struct{ Enabled bool } `json:"m.change_password"`
				SetDisplayName struct{ Enabled bool } `json:"m.set_displayname"`
				SetAvatarURL   struct{ Enabled bool } `json:"m.set_avatar_url"`
				ThreePID       struct{ Enabled bool } `json:"m.3pid_changes"`
				LoginToken     struct{ Enabled bool } `json:"m.get_login_token"`
			} `json:"capabilities"`
		}
		if err := json.Unmarshal([]byte(r.raw), &caps); err != nil {
			t.Fatal(err)
		}
		c := caps.Capabilities
		if c.RoomVersions.Default != "10" || !c.ChangePassword.Enabled || !c.SetDisplayName.Enabled || !c.SetAvatarURL.Enabled || c.ThreePID.Enabled || c.LoginToken.Enabled {
			t.Fatalf("capabilities %s", r.raw)
		}
		for v := 1; v <= 12; v++ {
			if c.RoomVersions.Available[fmt.Sprint(v)] != "stable" {
				t.Fatalf("room version %d missing: %s", v, r.raw)
			}
		}
		e.want(e.do("GET", "/_matrix/client/v3/capabilities", "", nil), 401, "M_MISSING_TOKEN")
	})
}

// TestBadBodiesNeverFail sends malformed bodies to every endpoint that
// takes one: the answer is always a 4xx Matrix error, never a 500.
func TestBadBodiesNeverFail(t *testing.T) {
	db := storagetest.Open(t, storage.SQLite)
	e := utServer(t, db)
	token, _ := e.register("alice", "pw")
	endpoints := []struct{ method, path string }{
		{"POST", "/_matrix/client/v3/login"},
		{"POST", "/_matrix/client/v3/register"},
		{"POST", "/_matrix/client/v3/account/password"},
		{"POST", "/_matrix/client/v3/account/deactivate"},
		{"POST", "/_matrix/client/v3/delete_devices"},
		{"DELETE", "/_matrix/client/v3/devices/X"},
		{"PUT", "/_matrix/client/v3/devices/X"},
		{"PUT", "/_matrix/client/v3/profile/@alice:test.local/displayname"},
		{"PUT", "/_matrix/client/v3/profile/@alice:test.local/avatar_url"},
		{"PUT", "/_matrix/client/v3/user/@alice:test.local/account_data/m.x"},
		{"PUT", "/_matrix/client/v3/user/@alice:test.local/rooms/!r:test.local/account_data/m.x"},
		{"POST", "/_matrix/client/v3/user/@alice:test.local/filter"},
		{"PUT", "/_matrix/client/v3/pushrules/global/content/r1"},
		{"PUT", "/_matrix/client/v3/pushrules/global/override/r1"},
		{"PUT", "/_matrix/client/v3/pushrules/global/content/r1/enabled"},
		{"PUT", "/_matrix/client/v3/pushrules/global/content/r1/actions"},
		{"POST", "/_synapse/admin/v1/register"},
	}
	bodies := []string{``, `{`, `[]`, `"x"`, `null`, `1`, `{"auth": 1}`, `{"auth": {"session": []}}`, `{"auth": {"type": "m.login.password", "identifier": 3}}`,
		`{"devices": [1]}`, `{"displayname": {}}`, `{"avatar_url": 1}`, `{"actions": {}}`, `{"actions": [null]}`, `{"actions": ["notify"], "conditions": "x"}`,
		`{"actions": ["notify"], "conditions": [null]}`, `{"enabled": "yes"}`, `{"nonce": "x", "mac": "y", "username": "u", "password": "p"}`,
		`{"new_password": ["x"]}`, `{"type": "m.login.password", "user": {}}`, "\x00\xff"}
	for _, ep := range endpoints {
		for _, b := range bodies {
			r := e.do(ep.method, ep.path, token, b)
			if r.status >= 500 || r.str("errcode") == "" && r.status != 200 && r.status != 401 {
				t.Errorf("%s %s with %q: %d %s", ep.method, ep.path, b, r.status, r.raw)
			}
		}
	}
}
