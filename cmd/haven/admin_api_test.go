package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// e2eRunIn runs the binary with input on its standard input.
func e2eRunIn(t *testing.T, dir string, env []string, input string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, havenBin, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader(input)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("haven %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// e2eSend sends a request with a body and decodes the JSON answer.
func e2eSend(t *testing.T, method, rawURL, token, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, rawURL, raw)
	}
	return resp.StatusCode, out
}

// TestAdminAPICommands runs every command family of "haven admin" that
// works through the admin API against a running server, on SQLite and
// PostgreSQL, in table and --json form: with a token made from the
// configuration (gone afterwards) and with --url and --token; a
// non-admin's token is refused.
func TestAdminAPICommands(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			dir := t.TempDir()
			addr := e2eFreeAddr(t)
			base := "http://" + addr
			env := e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_SERVER_NAME=corp.test")
			if d == storage.Postgres {
				env = append(env, "HAVEN_DATABASE="+storagetest.NewSchema(t))
			}
			p := e2eServe(t, dir, addr, env)
			const rootPW, bobPW = "root passphrase 4711", "bob passphrase 0815"
			if _, stderr, code := e2eRun(t, dir, env, "create-user", "--user", "root", "--admin", "--password", rootPW); code != 0 {
				t.Fatalf("create-user root: %s", stderr)
			}
			var tokens []string // printed nowhere
			run := func(wantCode int, input string, args ...string) (string, string) {
				t.Helper()
				stdout, stderr, code := e2eRunIn(t, dir, env, input, append([]string{"admin"}, args...)...)
				if code != wantCode {
					t.Fatalf("haven admin %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", strings.Join(args, " "), code, wantCode, stdout, stderr, p.stderr)
				}
				for _, tok := range tokens {
					if strings.Contains(stdout+stderr, tok) {
						t.Fatalf("haven admin %s printed an access token", strings.Join(args, " "))
					}
				}
				return stdout, stderr
			}
			admin := func(wantCode int, input string, args ...string) string {
				t.Helper()
				stdout, stderr := run(wantCode, input, args...)
				return stdout + stderr
			}
			// jsonOf runs a command with --json and decodes its answer.
			jsonOf := func(args ...string) map[string]any {
				t.Helper()
				out, _ := run(0, "", append(args, "--json")...)
				var m map[string]any
				if err := json.Unmarshal([]byte(out), &m); err != nil {
					t.Fatalf("haven admin %s --json: %v\n%s", strings.Join(args, " "), err, out)
				}
				return m
			}
			has := func(out string, wants ...string) {
				t.Helper()
				for _, w := range wants {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q:\n%s", w, out)
					}
				}
			}

			// Users.
			has(admin(0, bobPW+"\n", "users", "create", "bob", "--displayname", "Bob Builder"), "created @bob:corp.test", "Bob Builder")
			has(admin(1, bobPW+"\n", "users", "create", "bob"), "M_USER_IN_USE")
			has(admin(1, "short\n", "users", "create", "carol"), "M_WEAK_PASSWORD")
			has(admin(0, "", "users", "list"), "USER ID", "@bob:corp.test", "Bob Builder", "@root:corp.test", "(2 users)")
			if m := jsonOf("users", "list", "--name", "bob"); m["total"] != 1.0 {
				t.Errorf("users list --name bob --json: %v", m)
			}
			has(admin(0, "", "users", "show", "@bob:corp.test"), "display name:", "Bob Builder", "admin:")
			if m := jsonOf("users", "show", "bob"); m["name"] != "@bob:corp.test" || m["admin"] != false {
				t.Errorf("users show --json: %v", m)
			}
			has(admin(0, "", "users", "set-admin", "bob", "true"), "@bob:corp.test is a server admin")
			jsonOf("users", "set-admin", "bob", "false")
			if m := jsonOf("users", "show", "bob"); m["admin"] != false {
				t.Errorf("bob is still an admin: %v", m)
			}

			// Bob signs in and makes a room with an upload.
			status, login := e2ePost(t, base+"/_matrix/client/v3/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": bobPW})
			bobToken, _ := login["access_token"].(string)
			bobDevice, _ := login["device_id"].(string)
			if status != 200 || bobToken == "" {
				t.Fatalf("bob's login: %d %v", status, login)
			}
			tokens = append(tokens, bobToken)
			status, created := e2ePost(t, base+"/_matrix/client/v3/createRoom", bobToken, map[string]any{"name": "Sales", "room_alias_name": "sales"})
			roomID, _ := created["room_id"].(string)
			if status != 200 || roomID == "" {
				t.Fatalf("createRoom: %d %v", status, created)
			}
			status, up := e2eSend(t, "POST", base+"/_matrix/media/v3/upload?filename=notes.txt", bobToken, "text/plain", []byte("quarterly numbers"))
			mxc, _ := up["content_uri"].(string)
			if status != 200 || !strings.HasPrefix(mxc, "mxc://corp.test/") {
				t.Fatalf("upload: %d %v", status, up)
			}

			has(admin(0, "", "users", "devices", "bob"), "DEVICE", bobDevice)
			if m := jsonOf("users", "devices", "bob"); m["total"] != 1.0 {
				t.Errorf("users devices --json: %v", m)
			}
			has(admin(0, "", "users", "whois", "bob"), "@bob:corp.test", bobDevice)
			if m := jsonOf("users", "whois", "bob"); m["user_id"] != "@bob:corp.test" {
				t.Errorf("users whois --json: %v", m)
			}

			// A non-admin's token is refused, with the errcode; an admin's
			// token works from anywhere with --url.
			has(admin(1, "", "users", "list", "--url", base, "--token", bobToken), "M_FORBIDDEN")
			status, login = e2ePost(t, base+"/_matrix/client/v3/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "root"}, "password": rootPW})
			rootToken, _ := login["access_token"].(string)
			rootDevice, _ := login["device_id"].(string)
			if status != 200 || rootToken == "" {
				t.Fatalf("root's login: %d %v", status, login)
			}
			tokens = append(tokens, rootToken)
			envWithToken := append(append([]string{}, env...), "HAVEN_ADMIN_TOKEN="+rootToken)
			stdout, stderr, code := e2eRun(t, t.TempDir(), envWithToken, "admin", "users", "list", "--url", base+"/")
			if code != 0 || !strings.Contains(stdout, "@bob:corp.test") || strings.Contains(stdout+stderr, rootToken) {
				t.Errorf("users list with HAVEN_ADMIN_TOKEN and --url: exit %d\n%s%s", code, stdout, stderr)
			}
			has(admin(1, "", "users", "list", "--url", base, "--token", "not-a-token"), "M_UNKNOWN_TOKEN")

			// Rooms.
			has(admin(0, "", "rooms", "list"), "ROOM ID", roomID, "Sales", "#sales:corp.test", "(1 rooms)")
			if m := jsonOf("rooms", "list", "--search", "sal", "--order-by", "joined_members"); m["total_rooms"] != 1.0 {
				t.Errorf("rooms list --json: %v", m)
			}
			has(admin(0, "", "rooms", "show", "#sales:corp.test"), "room ID:", roomID, "creator:", "@bob:corp.test")
			if m := jsonOf("rooms", "show", roomID); m["room_id"] != roomID || m["joined_members"] != 1.0 {
				t.Errorf("rooms show --json: %v", m)
			}
			has(admin(0, "", "rooms", "members", roomID), "@bob:corp.test", "(1 joined members)")
			if m := jsonOf("rooms", "members", roomID); m["total"] != 1.0 {
				t.Errorf("rooms members --json: %v", m)
			}
			has(admin(0, "", "rooms", "block", roomID, "true"), "is blocked")
			if m := jsonOf("rooms", "block", roomID, "false"); m["block"] != false {
				t.Errorf("rooms block false --json: %v", m)
			}
			has(admin(0, "", "rooms", "purge-history", roomID, "--before", "1m"), "purged", "complete")
			if m := jsonOf("rooms", "purge-history", roomID, "--before", "2026-01-01", "--delete-local"); m["status"] != "complete" {
				t.Errorf("rooms purge-history --json: %v", m)
			}
			has(admin(2, "", "rooms", "purge-history", roomID), "--before is required")

			// Media.
			media := strings.TrimPrefix(mxc, "mxc://")
			has(admin(0, "", "media", "list", "bob"), mxc, "text/plain", "notes.txt", "(1 files)")
			if m := jsonOf("media", "list", "bob"); m["total"] != 1.0 {
				t.Errorf("media list --json: %v", m)
			}
			has(admin(0, "", "media", "quarantine", media), "quarantined")
			if code, _, _, _ := e2eGet(base + "/_matrix/client/v1/media/download/" + media); code == 200 {
				t.Errorf("quarantined media still served")
			}
			if m := jsonOf("media", "delete", mxc); m["total"] != 1.0 {
				t.Errorf("media delete --json: %v", m)
			}
			has(admin(2, "", "media", "delete", "nonsense"), "not SERVER/MEDIA_ID")

			// Registration tokens.
			out := admin(0, "", "tokens", "create", "--uses", "3", "--expires", "7d")
			has(out, "TOKEN", "USES ALLOWED")
			m := jsonOf("tokens", "create")
			regToken, _ := m["token"].(string)
			if regToken == "" || m["uses_allowed"] != nil {
				t.Fatalf("tokens create --json: %v", m)
			}
			has(admin(0, "", "tokens", "list"), regToken, "unlimited", "never")
			if m := jsonOf("tokens", "list"); len(m["registration_tokens"].([]any)) != 2 {
				t.Errorf("tokens list --json: %v", m)
			}
			has(admin(0, "", "tokens", "delete", regToken), "deleted")
			has(admin(1, "", "tokens", "delete", regToken), "M_NOT_FOUND")

			// Statistics.
			has(admin(0, "", "stats"), "users:", "rooms:", "database:", "DAY (UTC)")
			if m := jsonOf("stats", "--days", "3"); m["total_users"] != 2.0 || len(m["messages_per_day"].([]any)) != 3 {
				t.Errorf("stats --json: %v", m)
			}

			// The end of an account and a room.
			has(admin(0, "", "users", "delete-device", "bob", bobDevice), "deleted")
			has(admin(0, "another passphrase 42\n", "users", "reset-password", "bob", "--logout-devices"), "password of @bob:corp.test changed")
			has(admin(0, "", "rooms", "shutdown", roomID, "--block", "--purge", "--message", "Closed by the admins"),
				"shutting down", "complete", "shut down", "removed users:", "notice room:")
			has(admin(0, "", "users", "deactivate", "bob", "--erase"), "deactivated and erased")
			if m := jsonOf("users", "show", "bob"); m["deactivated"] != true || m["erased"] != true {
				t.Errorf("bob after deactivate: %v", m)
			}
			has(admin(0, "", "users", "list", "--deactivated"), "@bob:corp.test")

			// Acting as someone who is not an admin; bad flags.
			has(admin(1, "", "users", "list", "--as", "bob"), "not a server admin")
			has(admin(2, "", "users", "list", "--bogus"), "bogus")
			has(admin(2, "", "users", "show"), "expected USER")
			has(admin(2, "", "users", "set-admin", "bob", "maybe"), "true or false")

			// The tokens the commands made are gone: root has only the
			// device of its own login; the audit log has the made ones.
			status, devs := e2eSend(t, "GET", base+"/_synapse/admin/v2/users/@root:corp.test/devices", rootToken, "application/json", nil)
			if list, _ := devs["devices"].([]any); status != 200 || len(list) != 1 || list[0].(map[string]any)["device_id"] != rootDevice {
				t.Errorf("root's devices after the commands: %d %v", status, devs)
			}
			has(admin(0, "", "audit", "--event", "login.as", "--limit", "1"), "login.as", "@root:corp.test")
			has(admin(0, "", "audit", "--event", "admin.user.deactivate"), "@bob:corp.test")
			if code := p.stop(t); code != 0 {
				t.Errorf("server exit %d", code)
			}
		})
	}
}
