package clientapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestAdminRegistrationTokens: the admin API of tokens, and registration
// that requires one: a use is taken by the stage and counted when the
// account is made; a used-up token is refused.
func TestAdminRegistrationTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := adminServer(t, db, func(c *config.Config) { c.Registration.RequireToken = true })
		tok := e.adminToken
		const base = "/_synapse/admin/v1/registration_tokens"

		r := e.do("POST", base+"/new", tok, map[string]any{"token": "welcome", "uses_allowed": 1})
		e.want(r, 200, "")
		if r.str("token") != "welcome" || r.body["uses_allowed"] != float64(1) || r.body["pending"] != float64(0) || r.body["expiry_time"] != nil {
			t.Fatalf("created %s", r.raw)
		}
		r = e.do("POST", base+"/new", tok, map[string]any{"length": 20})
		e.want(r, 200, "")
		if len(r.str("token")) != 20 || r.body["uses_allowed"] != nil {
			t.Fatalf("random %s", r.raw)
		}
		random := r.str("token")
		e.want(e.do("POST", base+"/new", tok, map[string]any{"token": "welcome"}), 400, "M_INVALID_PARAM")

		// Validity, then registration with the token.
		r = e.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome", "", nil)
		if r.body["valid"] != true {
			t.Fatalf("validity %s", r.raw)
		}
		const reg = "/_matrix/client/v3/register"
		r = e.do("POST", reg, "", map[string]any{"username": "newbie", "password": "newbie-password"})
		e.want(r, 401, "")
		if !strings.Contains(r.raw, `"stages":["m.login.registration_token"]`) {
			t.Fatalf("flows %s", r.raw)
		}
		session := r.str("session")
		// The dummy stage is not offered.
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.dummy", "session": session}})
		e.want(r, 401, "M_UNRECOGNIZED")
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.registration_token", "token": "wrong", "session": session}})
		e.want(r, 401, "M_FORBIDDEN")
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.registration_token", "token": "welcome", "session": session}})
		e.want(r, 200, "")
		if r.str("user_id") != "@newbie:test.local" {
			t.Fatalf("registered %s", r.raw)
		}
		r = e.do("GET", base+"/welcome", tok, nil)
		if r.body["completed"] != float64(1) || r.body["pending"] != float64(0) {
			t.Fatalf("after use %s", r.raw)
		}
		// Used up now.
		r = e.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome", "", nil)
		if r.body["valid"] != false {
			t.Fatalf("validity after use %s", r.raw)
		}
		r = e.do("POST", reg, "", map[string]any{"username": "second", "password": "second-password"})
		session = r.str("session")
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.registration_token", "token": "welcome", "session": session}})
		e.want(r, 401, "M_FORBIDDEN")

		// A failed registration gives the use back: the name is taken
		// between the challenge and the token.
		r = e.do("POST", reg, "", map[string]any{"username": "racer", "password": "racer-password"})
		session = r.str("session")
		if _, err := e.users.CreateAccount(context.Background(), "racer", "x-password", false, "cli"); err != nil {
			t.Fatal(err)
		}
		r = e.do("POST", reg, "", map[string]any{"auth": map[string]string{"type": "m.login.registration_token", "token": random, "session": session}})
		if r.status == 200 {
			t.Fatalf("registered a taken name: %s", r.raw)
		}
		r = e.do("GET", base+"/"+random, tok, nil)
		if r.body["completed"] != float64(0) || r.body["pending"] != float64(0) {
			t.Fatalf("after a failed registration %s", r.raw)
		}

		// Update, list, delete.
		future := time.Now().Add(time.Hour).UnixMilli()
		r = e.do("PUT", base+"/welcome", tok, map[string]any{"uses_allowed": nil, "expiry_time": future})
		e.want(r, 200, "")
		if r.body["uses_allowed"] != nil || r.body["expiry_time"] != float64(future) || r.body["completed"] != float64(1) {
			t.Fatalf("updated %s", r.raw)
		}
		r = e.do("PUT", base+"/welcome", tok, map[string]any{"uses_allowed": 1})
		r = e.do("GET", base+"?valid=false", tok, nil)
		if list, _ := r.body["registration_tokens"].([]any); len(list) != 1 || !strings.Contains(r.raw, `"welcome"`) {
			t.Fatalf("invalid ones %s", r.raw)
		}
		r = e.do("GET", base+"?valid=true", tok, nil)
		if list, _ := r.body["registration_tokens"].([]any); len(list) != 1 || !strings.Contains(r.raw, random) {
			t.Fatalf("valid ones %s", r.raw)
		}
		e.want(e.do("DELETE", base+"/welcome", tok, nil), 200, "")
		e.want(e.do("GET", base+"/welcome", tok, nil), 404, "M_NOT_FOUND")

		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"GET", base + "?valid=perhaps", nil, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"token":"has space"}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"token":"` + strings.Repeat("a", 65) + `"}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"token":""}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"length":0}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"length":65}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"length":"8"}`, 400, "M_BAD_JSON"},
			{"POST", base + "/new", `{"token":"abc","length":16}`, 200, ""},
			{"POST", base + "/new", `{"token":"abcd","length":0}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"uses_allowed":-1}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `{"uses_allowed":1.5}`, 400, "M_BAD_JSON"},
			{"POST", base + "/new", `{"expiry_time":1000}`, 400, "M_INVALID_PARAM"},
			{"POST", base + "/new", `[]`, 400, "M_BAD_JSON"},
			{"PUT", base + "/" + random, `{"uses_allowed":"many"}`, 400, "M_BAD_JSON"},
			{"PUT", base + "/" + random, `{"expiry_time":5}`, 400, "M_INVALID_PARAM"},
			{"PUT", base + "/nope", `{}`, 404, "M_NOT_FOUND"},
			{"GET", base + "/bad%20token", nil, 404, "M_NOT_FOUND"},
			{"DELETE", base + "/nope", nil, 404, "M_NOT_FOUND"},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				e.t = t
				e.want(e.do(tc.method, tc.path, tok, tc.body), tc.status, tc.errcode)
			})
		}
	})
}
