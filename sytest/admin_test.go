package sytest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

const adminV1, adminV2 = "/_synapse/admin/v1", "/_synapse/admin/v2"

// TestAdminAPIUsers: the admin API's user half through a real server:
// creating an account, its devices, deactivation, registration tokens
// with registration that requires one, and the audit log of the calls.
func TestAdminAPIUsers(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_REGISTRATION_REQUIRE_TOKEN=true"}, func(t *testing.T, s *server) {
		root := s.registerAdmin(t, "root")
		admin := root.AccessToken
		s.do(t, "GET", adminV1+"/server_version", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		if r := s.do(t, "GET", adminV1+"/server_version", admin, nil).expect(t, 200); !strings.HasPrefix(r.str("server_version"), "Haven ") {
			t.Fatalf("version: %s", r)
		}

		// Registration needs a token from an admin.
		tok := s.do(t, "POST", adminV1+"/registration_tokens/new", admin, map[string]any{"uses_allowed": 1}).expect(t, 200).str("token")
		r := s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": "password-alice"}).expect(t, 401)
		mustContain(t, string(r.Raw), "m.login.registration_token")
		r = s.do(t, "POST", v3+"/register", "", map[string]any{"auth": map[string]any{"type": "m.login.registration_token", "token": tok, "session": r.str("session")}}).expect(t, 200)
		alice := r.str("access_token")
		s.do(t, "GET", adminV2+"/users", alice, nil).expectErr(t, 403, "M_FORBIDDEN")

		// An admin makes bob, who logs in; the admin sees and renames his device.
		bobID := id.UserID("@bob:localhost")
		r = s.do(t, "PUT", adminV2+"/users/"+p(bobID), admin, map[string]any{"password": "password-bob", "displayname": "Bob"}).expect(t, 201)
		if r.str("displayname") != "Bob" || r.JSON["deactivated"] != false {
			t.Fatalf("created: %s", r)
		}
		bob := s.login(t, "bob")
		devs := s.do(t, "GET", adminV2+"/users/"+p(bobID)+"/devices", admin, nil).expect(t, 200)
		if devs.JSON["total"] != float64(1) {
			t.Fatalf("devices: %s", devs)
		}
		s.do(t, "PUT", adminV2+"/users/"+p(bobID)+"/devices/"+p(bob.DeviceID), admin, map[string]any{"display_name": "Bob's laptop"}).expect(t, 200)
		if r := s.do(t, "GET", v3+"/devices/"+p(bob.DeviceID), bob.AccessToken, nil).expect(t, 200); r.str("display_name") != "Bob's laptop" {
			t.Fatalf("renamed device: %s", r)
		}
		users := s.do(t, "GET", adminV2+"/users?limit=10", admin, nil).expect(t, 200)
		if users.JSON["total"] != float64(3) {
			t.Fatalf("users: %s", users)
		}

		// Bob joins a room, then is deactivated: he leaves it and his token ends.
		room := createRoom(t, root, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		s.do(t, "POST", adminV1+"/deactivate/"+p(bobID), admin, map[string]any{"erase": true}).expect(t, 200)
		s.do(t, "GET", v3+"/account/whoami", bob.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
		eventually(t, "bob left the room", func() bool {
			r := s.do(t, "GET", v3+"/rooms/"+p(room)+"/state/m.room.member/"+p(bobID), admin, nil)
			return r.Status == 200 && r.str("membership") == "leave"
		})
		if r := s.do(t, "GET", adminV2+"/users/"+p(bobID), admin, nil).expect(t, 200); r.JSON["deactivated"] != true || r.JSON["erased"] != true {
			t.Fatalf("deactivated: %s", r)
		}

		// The audit log has the calls, the refusal included.
		r = s.do(t, "GET", adminV1+"/audit?action=admin.&user="+p(bobID), admin, nil).expect(t, 200)
		mustContain(t, string(r.Raw), `"action":"admin.user.deactivate"`)
		mustContain(t, string(r.Raw), `"action":"admin.user.put"`)
		r = s.do(t, "GET", adminV1+"/audit?action=admin.users.list", admin, nil).expect(t, 200)
		mustContain(t, string(r.Raw), `"actor":"@alice:localhost"`)
		mustContain(t, string(r.Raw), `"ok":false`)
	})
}

// TestAdminSynadm drives the admin API with synadm, the admin command line
// made for Synapse (Debian package synadm): user list and user details.
func TestAdminSynadm(t *testing.T) {
	bin, err := exec.LookPath("synadm")
	if err != nil {
		t.Skip("synadm is not installed (apt-get install synadm)")
	}
	s := startServer(t, "sqlite")
	root := s.registerAdmin(t, "root")
	s.register(t, "alice")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "synadm.yaml")
	conf := map[string]any{"user": root.UserID.String(), "token": root.AccessToken, "base_url": s.URL,
		"admin_path": "/_synapse/admin", "matrix_path": "/_matrix", "timeout": 30, "format": "json",
		"server_discovery": "well-known", "homeserver": "localhost"}
	raw, _ := json.Marshal(conf) // JSON is YAML
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"-c", cfg, "--batch", "-o", "json"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("synadm %v: %v\n%s", args, err, out)
		}
		// synadm may print a line before the JSON.
		text := string(out)
		if i := strings.Index(text, "{"); i > 0 {
			text = text[i:]
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Fatalf("synadm %v: not JSON: %s", args, out)
		}
		return v
	}
	list := run("user", "list")
	if list["total"] != float64(2) || !strings.Contains(jsonText(list), "@alice:localhost") {
		t.Fatalf("user list: %v", list)
	}
	details := run("user", "details", "alice")
	if details["name"] != "@alice:localhost" || details["admin"] != false {
		t.Fatalf("user details: %v", details)
	}
	made := run("regtok", "new", "--token", "from-synadm", "--uses-allowed", "3")
	if made["token"] != "from-synadm" || made["uses_allowed"] != float64(3) {
		t.Fatalf("regtok new: %v", made)
	}
	if got := run("regtok", "details", "from-synadm"); got["completed"] != float64(0) {
		t.Fatalf("regtok details: %v", got)
	}
	if who := run("user", "whois", "alice"); who["user_id"] != "@alice:localhost" {
		t.Fatalf("user whois: %v", who)
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
