package clientapi

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

// Under auth.totp: required, /register makes the account but opens no
// session: a password alone never signs such an account in. The operator's
// shared-secret registration still gets its token.
func TestRegisterUnderRequiredSecondFactor(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db, func(c *config.Config) { c.Auth.TOTP = config.TOTPRequired })
		const reg = "/_matrix/client/v3/register"
		for _, tc := range []struct {
			name string
			body map[string]any
			user string
		}{
			{"named", map[string]any{"username": "alice", "password": "secret pw", "device_id": "LAPTOP"}, "@alice:test.local"},
			{"refresh token asked", map[string]any{"username": "bob", "password": "secret pw", "refresh_token": true}, "@bob:test.local"},
			{"inhibit_login anyway", map[string]any{"username": "carol", "password": "secret pw", "inhibit_login": true}, "@carol:test.local"},
			{"random name", map[string]any{"password": "secret pw"}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.body["auth"] = map[string]string{"type": "m.login.dummy"}
				r := e.do("POST", reg, "", tc.body)
				e.want(r, 200, "")
				for _, k := range []string{"access_token", "device_id", "refresh_token", "expires_in_ms"} {
					if _, ok := r.body[k]; ok {
						t.Fatalf("%s given: %s", k, r.raw)
					}
				}
				user := r.str("user_id")
				if user == "" || (tc.user != "" && user != tc.user) || r.str("home_server") != "test.local" {
					t.Fatalf("response %s", r.raw)
				}
				devs, err := e.users.Devices(context.Background(), user)
				if err != nil || len(devs) != 0 {
					t.Fatalf("devices %v %v", devs, err)
				}
			})
		}
		// The password alone does not sign in either: the sign-in page does.
		r := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "secret pw"})
		e.want(r, 403, "M_FORBIDDEN")

		// The operator's tool keeps its token.
		nonce := e.do("GET", "/_synapse/admin/v1/register", "", nil).str("nonce")
		r = e.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonce, "username": "ops", "password": "pw", "admin": false,
			"mac": userapi.SharedSecretMAC(utSecret, nonce, "ops", "pw", false, nil)})
		e.want(r, 200, "")
		if r.str("access_token") == "" {
			t.Fatalf("shared secret: %s", r.raw)
		}

		// With the second factor off: the session as before.
		off := utServer(t, db)
		if tok, _ := off.register("dave", "secret pw"); tok == "" {
			t.Fatal("no token with the second factor off")
		}
	})
}
