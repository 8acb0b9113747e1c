package sytest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/testldap"
)

// TestLDAPLogin: m.login.password against a real OpenLDAP (slapd on
// loopback, StartTLS with a test CA), through the running server: the
// account is made at the first sign-in with the directory's name; wrong
// passwords and filter metacharacters get 403; a stopped directory 503.
func TestLDAPLogin(t *testing.T) {
	dir := testldap.Start(t,
		testldap.Person{UID: "alice", CN: "Alice Liddell", Mail: "alice@example.com", Password: "alice directory pw"},
		testldap.Person{UID: "bob", CN: "Bob Builder", Password: "bob directory pw"})
	env := []string{
		"HAVEN_LDAP_ENABLED=true", "HAVEN_LDAP_URL=" + strings.Replace(dir.URL, "127.0.0.1", "localhost", 1),
		"HAVEN_LDAP_START_TLS=true", "HAVEN_LDAP_CA_FILE=" + dir.CA.File(),
		"HAVEN_LDAP_BIND_DN=" + testldap.ServiceDN, "HAVEN_LDAP_BIND_PASSWORD=" + testldap.ServicePass,
		"HAVEN_LDAP_BASE_DN=" + testldap.People,
	}
	eachDBEnv(t, env, func(t *testing.T, s *server) {
		login := func(user, pw string) apiResp {
			return s.do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw,
			})
		}
		r := login("alice", "alice directory pw").expect(t, 200)
		uid, token := r.str("user_id"), r.str("access_token")
		if !strings.HasPrefix(uid, "@alice:") || token == "" {
			t.Fatalf("login: %s", r)
		}
		s.do(t, "GET", v3+"/account/whoami", token, nil).expect(t, 200)
		p := s.do(t, "GET", v3+"/profile/"+uid+"/displayname", token, nil).expect(t, 200)
		if p.str("displayname") != "Alice Liddell" {
			t.Fatalf("display name: %s", p)
		}
		login("alice", "wrong").expectErr(t, 403, "M_FORBIDDEN")
		login("alice", "").expectErr(t, 400, "M_MISSING_PARAM")
		for _, u := range []string{"*", "alice)(uid=*", "*)(|(uid=*"} {
			login(u, "alice directory pw").expectErr(t, 403, "M_FORBIDDEN")
		}
		login("nobody", "whatever").expectErr(t, 403, "M_FORBIDDEN")
	})
	t.Run("directory down", func(t *testing.T) {
		s := startServer(t, "sqlite", env...)
		dir.Stop()
		// 503 is the answer here; s.do takes any 5xx for a server error.
		body := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"bob directory pw"}`
		res, err := http.Post(s.URL+v3+"/login", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 503 || !strings.Contains(string(raw), `"M_UNKNOWN"`) || !strings.Contains(string(raw), "company directory") {
			t.Fatalf("directory down: %d %s", res.StatusCode, raw)
		}
		if strings.Contains(string(raw), "localhost") || strings.Contains(string(raw), "cn=") || strings.Contains(string(raw), "refused") {
			t.Fatalf("the answer tells the directory's details: %s", raw)
		}
	})
}
