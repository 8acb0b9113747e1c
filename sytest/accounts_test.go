package sytest

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

func passwordLogin(user, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
}

// TestAccountsLogin: login flows, the identifier forms clients use, wrong
// credentials, device IDs and whoami.
func TestAccountsLogin(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		s.register(t, "alice")
		flows := s.do(t, "GET", v3+"/login", "", nil).expect(t, 200)
		if !strings.Contains(string(flows.Raw), `"m.login.password"`) {
			t.Errorf("login flows: %s", flows)
		}
		for _, who := range []string{"alice", "@alice:localhost"} {
			r := s.do(t, "POST", v3+"/login", "", passwordLogin(who, "password-alice")).expect(t, 200)
			if r.str("user_id") != "@alice:localhost" || r.str("access_token") == "" || r.str("device_id") == "" {
				t.Errorf("login as %s: %s", who, r)
			}
		}
		// The deprecated top-level "user" field still works.
		s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password-alice"}).expect(t, 200)

		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "wrong")).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/login", "", passwordLogin("nobody", "whatever")).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/login", "", passwordLogin("@alice:elsewhere.org", "password-alice")).expect(t, 403)
		s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}}).expect(t, 400)
		s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.bogus"}).expect(t, 400)

		// A chosen device ID is kept, and logging in on it again reuses it.
		body := passwordLogin("alice", "password-alice")
		body["device_id"] = "MYPHONE"
		body["initial_device_display_name"] = "Alice's phone"
		r1 := s.do(t, "POST", v3+"/login", "", body).expect(t, 200)
		if r1.str("device_id") != "MYPHONE" {
			t.Errorf("chosen device_id: %s", r1)
		}
		who := s.do(t, "GET", v3+"/account/whoami", r1.str("access_token"), nil).expect(t, 200)
		if who.str("device_id") != "MYPHONE" || who.str("user_id") != "@alice:localhost" {
			t.Errorf("whoami: %s", who)
		}
		r2 := s.do(t, "POST", v3+"/login", "", body).expect(t, 200)
		if r2.str("device_id") != "MYPHONE" {
			t.Errorf("second login on the same device: %s", r2)
		}
		// The new login on the same device replaces the old token.
		s.do(t, "GET", v3+"/account/whoami", r1.str("access_token"), nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		s.do(t, "GET", v3+"/account/whoami", r2.str("access_token"), nil).expect(t, 200)
		dev := s.do(t, "GET", v3+"/devices/MYPHONE", r2.str("access_token"), nil).expect(t, 200)
		if dev.str("display_name") != "Alice's phone" {
			t.Errorf("device display name: %s", dev)
		}
	})
}

// TestAccountsDevicesAndLogout: devices, logout, logout/all, deleting a
// device with user-interactive auth.
func TestAccountsDevicesAndLogout(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		a1 := s.register(t, "alice")
		a2 := s.login(t, "alice")
		a3 := s.login(t, "alice")
		devs, err := a1.GetDevicesInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(devs.Devices) != 3 {
			t.Errorf("devices: %+v", devs.Devices)
		}
		if err := a1.SetDeviceInfo(ctx, a2.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "laptop"}); err != nil {
			t.Fatal(err)
		}
		if d, err := a1.GetDeviceInfo(ctx, a2.DeviceID); err != nil || d.DisplayName != "laptop" {
			t.Errorf("renamed device: %+v %v", d, err)
		}
		s.do(t, "GET", v3+"/devices/NOSUCHDEVICE", a1.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")

		// Deleting a device needs UIA: 401 with flows, then the password.
		r := s.do(t, "DELETE", v3+"/devices/"+p(a3.DeviceID), a1.AccessToken, map[string]any{}).expect(t, 401)
		session := r.str("session")
		if session == "" || !strings.Contains(string(r.Raw), "m.login.password") {
			t.Fatalf("UIA challenge: %s", r)
		}
		s.do(t, "DELETE", v3+"/devices/"+p(a3.DeviceID), a1.AccessToken, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong", "session": session,
		}}).expectErr(t, 401, "M_FORBIDDEN")
		s.do(t, "DELETE", v3+"/devices/"+p(a3.DeviceID), a1.AccessToken, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice", "session": session,
		}}).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", a3.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

		// Logout ends one token; logout/all every one.
		if _, err := a2.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		s.do(t, "GET", v3+"/account/whoami", a2.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		s.do(t, "GET", v3+"/account/whoami", a1.AccessToken, nil).expect(t, 200)
		a4 := s.login(t, "alice")
		if _, err := a4.LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{a1, a4} {
			s.do(t, "GET", v3+"/account/whoami", c.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		}
		// A logged-out token cannot keep a long-poll going either.
		s.do(t, "GET", v3+"/sync?timeout=0", a4.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
	})
}

// TestAccountsPasswordAndDeactivate: changing the password and deactivating.
func TestAccountsPasswordAndDeactivate(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		other := s.login(t, "alice")
		auth := func(pw string) map[string]any {
			return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": pw}
		}
		s.do(t, "POST", v3+"/account/password", alice.AccessToken, map[string]any{"new_password": "a-new-password-1"}).expect(t, 401)
		s.do(t, "POST", v3+"/account/password", alice.AccessToken, map[string]any{"new_password": "a-new-password-1", "auth": auth("password-alice")}).expect(t, 200)
		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "password-alice")).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "a-new-password-1")).expect(t, 200)
		// By default other devices are logged out, the current one stays.
		s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", other.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

		// Deactivation: leaves rooms, ends tokens, the name stays taken.
		bob := s.register(t, "bob")
		room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, alice, room.String())
		s.do(t, "POST", v3+"/account/deactivate", alice.AccessToken, map[string]any{"auth": auth("a-new-password-1")}).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		r := s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "a-new-password-1"))
		r.wantOneOf(t, "login of a deactivated account", 403, "M_USER_DEACTIVATED", 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/register/available?username=alice", "", nil).expectErr(t, 400, "M_USER_IN_USE")
		eventually(t, "alice's leave after deactivation", func() bool {
			jm, err := bob.JoinedMembers(ctx, room)
			return err == nil && len(jm.Joined) == 1 && jm.Joined[id.UserID("@alice:localhost")].DisplayName == ""
		})
	})
}

// register runs the flow of upstream sytest's 11register: a first request
// with the parameters, then one with only the dummy stage and the session.
func (s *server) registerInTwoSteps(t *testing.T, params map[string]any, second map[string]any) apiResp {
	t.Helper()
	r := s.do(t, "POST", v3+"/register", "", params).expect(t, 401)
	if second == nil {
		second = map[string]any{}
	}
	second["auth"] = map[string]any{"type": "m.login.dummy", "session": r.str("session")}
	return s.do(t, "POST", v3+"/register", "", second)
}

// TestAccountsRegistrationSession: a registration uses the parameters of its
// session's first request (a later request cannot change them), including
// a non-ASCII password and inhibit_login.
func TestAccountsRegistrationSession(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		const pw = "pässwörd✓ 密码"
		r := s.registerInTwoSteps(t, map[string]any{"username": "alice", "password": pw, "device_id": "XYZZY",
			"initial_device_display_name": "display_name"}, nil).expect(t, 200)
		if r.str("user_id") != "@alice:localhost" || r.str("device_id") != "XYZZY" || r.str("access_token") == "" {
			t.Fatalf("registration: %s", r)
		}
		if d := s.do(t, "GET", v3+"/devices/XYZZY", r.str("access_token"), nil).expect(t, 200); d.str("display_name") != "display_name" {
			t.Errorf("device: %s", d)
		}
		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", pw)).expect(t, 200)
		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "passwörd✓ 密码")).expectErr(t, 403, "M_FORBIDDEN")

		// inhibit_login: no token, no device.
		r = s.registerInTwoSteps(t, map[string]any{"username": "bob", "password": "pw-bob", "inhibit_login": true}, nil).expect(t, 200)
		if r.str("user_id") != "@bob:localhost" || r.JSON["access_token"] != nil || r.JSON["device_id"] != nil {
			t.Errorf("inhibited registration: %s", r)
		}
		bob := s.do(t, "POST", v3+"/login", "", passwordLogin("bob", "pw-bob")).expect(t, 200)
		if devs, _ := s.do(t, "GET", v3+"/devices", bob.str("access_token"), nil).expect(t, 200).JSON["devices"].([]any); len(devs) != 1 {
			t.Errorf("bob's devices after an inhibited registration and one login: %v", devs)
		}

		// The second request of the session cannot change the parameters.
		r = s.registerInTwoSteps(t, map[string]any{"username": "carol", "password": "pw-carol"},
			map[string]any{"username": "mallory", "password": "pw-mallory", "inhibit_login": true}).expect(t, 200)
		if r.str("user_id") != "@carol:localhost" || r.str("access_token") == "" {
			t.Errorf("registration with changed parameters: %s", r)
		}
		s.do(t, "POST", v3+"/login", "", passwordLogin("carol", "pw-carol")).expect(t, 200)
		s.do(t, "GET", v3+"/register/available?username=mallory", "", nil).expect(t, 200)
	})
}

// TestAccountsUIABodies: a password change keeps the new password of its
// first request; a failed attempt answers 401 with errcode and the whole
// UIA body; a device deletion needs the owner's password and its session
// is bound to the device.
func TestAccountsUIABodies(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		s.register(t, "bob")
		phone := s.login(t, "alice")
		tablet := s.login(t, "alice")
		auth := func(user, pw, session string) map[string]any {
			return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw, "session": session}
		}

		// Password change: the second request carries only the auth.
		r := s.do(t, "POST", v3+"/account/password", alice.AccessToken, map[string]any{"new_password": "nouveau ✓", "logout_devices": false}).expect(t, 401)
		s.do(t, "POST", v3+"/account/password", alice.AccessToken, map[string]any{"auth": auth("alice", "password-alice", r.str("session"))}).expect(t, 200)
		s.do(t, "POST", v3+"/login", "", passwordLogin("alice", "nouveau ✓")).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", phone.AccessToken, nil).expect(t, 200)

		// Deleting a device: a challenge first; Bob's password is refused;
		// the session of one device cannot delete another.
		path := v3 + "/devices/" + p(phone.DeviceID)
		r = s.do(t, "DELETE", path, alice.AccessToken, nil).expect(t, 401)
		session := r.str("session")
		if session == "" || r.JSON["flows"] == nil || r.JSON["errcode"] != nil {
			t.Fatalf("challenge: %s", r)
		}
		s.do(t, "DELETE", path, alice.AccessToken, map[string]any{"auth": auth("bob", "password-bob", session)}).expectErr(t, 401, "M_FORBIDDEN")
		s.do(t, "DELETE", v3+"/devices/"+p(tablet.DeviceID), alice.AccessToken, map[string]any{"auth": auth("alice", "nouveau ✓", session)}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", v3+"/account/whoami", tablet.AccessToken, nil).expect(t, 200)
		s.do(t, "DELETE", path, alice.AccessToken, map[string]any{"auth": auth("alice", "nouveau ✓", session)}).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", phone.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

		// Deactivation with a wrong password: 401, errcode and the UIA body.
		r = s.do(t, "POST", v3+"/account/deactivate", alice.AccessToken, map[string]any{"auth": auth("alice", "wrong", "")}).expectErr(t, 401, "M_FORBIDDEN")
		completed, ok := r.JSON["completed"].([]any)
		flows, _ := r.JSON["flows"].([]any)
		if _, hasParams := r.JSON["params"].(map[string]any); !ok || len(completed) != 0 || len(flows) != 1 || r.str("session") == "" || !hasParams {
			t.Errorf("failed deactivation: %s", r)
		}
		s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil).expect(t, 200)
	})
}

// TestAccountsOpenID: a user gets an OpenID token for themselves only, and a
// third party learns the user's ID from it on the federation API's
// userinfo endpoint, which answers though federation is off.
func TestAccountsOpenID(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		path := v3 + "/user/" + p(alice.UserID) + "/openid/request_token"
		r := s.do(t, "POST", path, alice.AccessToken, map[string]any{}).expect(t, 200)
		token := r.str("access_token")
		if token == "" || r.str("token_type") != "Bearer" || r.str("matrix_server_name") != "localhost" || r.JSON["expires_in"] != float64(3600) {
			t.Fatalf("openid token: %s", r)
		}
		s.do(t, "POST", path, bob.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "POST", path, "", map[string]any{}).expectErr(t, 401, "M_MISSING_TOKEN")

		const userinfo = "/_matrix/federation/v1/openid/userinfo?access_token="
		if r = s.do(t, "GET", userinfo+url.QueryEscape(token), "", nil).expect(t, 200); string(r.Raw) != `{"sub":"@alice:localhost"}` {
			t.Errorf("userinfo: %s", r)
		}
		s.do(t, "GET", userinfo+"hvo_not-a-token", "", nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		s.do(t, "GET", userinfo+url.QueryEscape(alice.AccessToken), "", nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		s.do(t, "GET", "/_matrix/federation/v1/openid/userinfo", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")

		// Deactivation ends it.
		s.do(t, "POST", v3+"/account/deactivate", alice.AccessToken, map[string]any{"auth": map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice"}}).expect(t, 200)
		s.do(t, "GET", userinfo+url.QueryEscape(token), "", nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
	})
}

// TestAccountsThreePIDs: without email configured, accounts have no
// third-party identifiers, and the endpoints that would change them say
// why instead of 404 (with email: closed_test.go).
func TestAccountsThreePIDs(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		tok := s.register(t, "alice").AccessToken
		if r := s.do(t, "GET", v3+"/account/3pid", tok, nil).expect(t, 200); string(r.Raw) != `{"threepids":[]}` {
			t.Errorf("3pids: %s", r)
		}
		s.do(t, "GET", v3+"/account/3pid", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		creds := map[string]any{"client_secret": "secret", "sid": "1", "id_server": "id.example.org", "id_access_token": "x"}
		for _, path := range []string{"/account/3pid/add", "/account/3pid", "/account/3pid/delete"} {
			body := map[string]any{"three_pid_creds": creds, "medium": "email", "address": "alice@example.org"}
			s.do(t, "POST", v3+path, tok, body).expectErr(t, 400, "M_FORBIDDEN")
		}
		s.do(t, "POST", v3+"/account/3pid/bind", tok, creds).expectErr(t, 400, "M_SERVER_NOT_TRUSTED")
		r := s.do(t, "POST", v3+"/account/3pid/unbind", tok, map[string]any{"medium": "email", "address": "alice@example.org"}).expect(t, 200)
		if r.str("id_server_unbind_result") != "no-support" {
			t.Errorf("unbind: %s", r)
		}
		for _, path := range []string{"/account/3pid/email/requestToken", "/account/3pid/msisdn/requestToken", "/register/email/requestToken",
			"/account/password/email/requestToken"} {
			s.do(t, "POST", v3+path, "", map[string]any{"client_secret": "secret", "email": "alice@example.org", "send_attempt": 1}).
				expectErr(t, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		}
	})
}

// TestAccountsWhois: a user can look themselves up, a server admin anyone;
// each device is a session with its last connection.
func TestAccountsWhois(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		phone := s.login(t, "alice")
		bob := s.register(t, "bob")
		admin := s.registerAdmin(t, "admin")
		path := v3 + "/admin/whois/" + p(alice.UserID)
		for _, tok := range []string{alice.AccessToken, admin.AccessToken} {
			r := s.do(t, "GET", path, tok, nil).expect(t, 200)
			var body struct {
				UserID  string `json:"user_id"`
				Devices map[string]struct {
					Sessions []struct {
						Connections []struct {
							IP       string `json:"ip"`
							LastSeen int64  `json:"last_seen"`
						} `json:"connections"`
					} `json:"sessions"`
				} `json:"devices"`
			}
			if err := json.Unmarshal(r.Raw, &body); err != nil || body.UserID != alice.UserID.String() || len(body.Devices) != 2 {
				t.Fatalf("whois: %s", r)
			}
			for _, d := range []id.DeviceID{alice.DeviceID, phone.DeviceID} {
				dev := body.Devices[d.String()]
				if len(dev.Sessions) != 1 || len(dev.Sessions[0].Connections) != 1 || dev.Sessions[0].Connections[0].IP != "127.0.0.1" ||
					dev.Sessions[0].Connections[0].LastSeen == 0 {
					t.Errorf("whois of device %s: %s", d, r)
				}
			}
		}
		s.do(t, "GET", path, bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", path, "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "GET", "/_matrix/client/r0/admin/whois/"+p(alice.UserID), admin.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", v3+"/admin/whois/"+p("@nobody:localhost"), admin.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/admin/whois/"+p("@someone:elsewhere.example"), admin.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
	})
}

// TestWhoisUserAgentUpdated: a request with another User-Agent (the app
// was updated) reaches whois once the last-seen batch is written (here at
// the shutdown, which writes it).
func TestWhoisUserAgentUpdated(t *testing.T) {
	s := startServer(t, "sqlite")
	alice := s.register(t, "alice")
	admin := s.registerAdmin(t, "admin")
	s.do(t, "GET", v3+"/account/whoami", alice.AccessToken, nil, withHeader("User-Agent", "HavenTestApp/2.0")).expect(t, 200)
	s.restart()
	r := s.do(t, "GET", v3+"/admin/whois/"+p(alice.UserID), admin.AccessToken, nil).expect(t, 200)
	if !strings.Contains(string(r.Raw), `"user_agent":"HavenTestApp/2.0"`) {
		t.Fatalf("whois without the new user agent: %s", r)
	}
}
