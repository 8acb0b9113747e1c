package clientapi

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/mailer"
	"github.com/haven-chat/haven/internal/mailer/smtptest"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

// testMailer is the mailer of utServer: nil without email configured.
func testMailer(cfg config.Config) userapi.MailSender {
	if m := mailer.New(cfg.Email); m != nil {
		return m
	}
	return nil
}

const testBaseURL = "https://chat.example.test"

// emailServer is utServer with email through a test SMTP server on loopback.
func emailServer(t *testing.T, db *storage.DB) (*utEnv, *smtptest.Server) {
	smtp := smtptest.Start(t, nil)
	e := utServer(t, db, func(c *config.Config) {
		c.PublicBaseURL = testBaseURL
		c.Email = config.Email{SMTPHost: smtp.Host, SMTPPort: smtp.Port, SMTPTLS: "none", From: "Haven <chat@example.test>",
			NotificationDelay: "10m", TokensPerHour: 5}
	})
	return e, smtp
}

var linkRE = regexp.MustCompile(`https://chat\.example\.test\S+`)
var codeRE = regexp.MustCompile(`code, it is: (\S+)`)

// mailLink returns the path and query of the confirmation link of the
// last email to addr, and its code.
func mailLink(t *testing.T, smtp *smtptest.Server, addr string, n int) (string, string) {
	t.Helper()
	var m smtptest.Mail
	smtp.WaitFor(t, "email to "+addr, func(smtptest.Mail) bool { return len(smtp.Mails()) >= n })
	m = smtp.Mails()[n-1]
	if len(m.To) != 1 || m.To[0] != addr {
		t.Fatalf("email %d to %v, want %s", n, m.To, addr)
	}
	link := linkRE.FindString(m.Text)
	code := codeRE.FindStringSubmatch(m.Text)
	if link == "" || code == nil || !strings.Contains(m.HTML, "code>"+code[1]+"</code>") {
		t.Fatalf("no link or code in %q / %q", m.Text, m.HTML)
	}
	return strings.TrimPrefix(link, testBaseURL), code[1]
}

func (e *utEnv) form(path string, vals url.Values) (int, string) {
	e.t.Helper()
	res, err := http.PostForm(e.url+path, vals)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return res.StatusCode, b.String()
}

// TestEmailAddressAndPasswordReset: binding an email address (requestToken,
// the link's confirmation page, /account/3pid/add with UIA) and resetting a
// forgotten password with it (requestToken, the code, /account/password
// with m.login.email.identity), through a real SMTP conversation.
func TestEmailAddressAndPasswordReset(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e, smtp := emailServer(t, db)
		alice, _ := e.register("alice", "old pw")
		const acc = "/_matrix/client/v3/account/3pid"
		if r := e.do("GET", "/_matrix/client/v3/capabilities", alice, nil); !strings.Contains(r.raw, `"m.3pid_changes":{"enabled":true}`) {
			t.Fatalf("capabilities %s", r.raw)
		}

		// Adding an address.
		e.want(e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "cs1", "email": "not an address", "send_attempt": 1}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "bad secret!", "email": "alice@example.test", "send_attempt": 1}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "cs1", "email": "alice@example.test"}), 400, "M_MISSING_PARAM")
		r := e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "cs1", "email": "alice@example.test", "send_attempt": 1})
		e.want(r, 200, "")
		sid := r.str("sid")
		if sid == "" || r.str("submit_url") != testBaseURL+userapi.SubmitTokenPath {
			t.Fatalf("requestToken %s", r.raw)
		}
		link, _ := mailLink(t, smtp, "alice@example.test", 1)
		// The same attempt again: the same session, no second email.
		if r = e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "cs1", "email": "alice@example.test", "send_attempt": 1}); r.str("sid") != sid {
			t.Fatalf("repeated attempt %s", r.raw)
		}
		add := map[string]any{"sid": sid, "client_secret": "cs1", "auth": map[string]any{"type": "m.login.password", "user": "alice", "password": "old pw"}}
		e.want(e.do("POST", acc+"/add", alice, add), 400, "M_SESSION_NOT_VALIDATED")
		if n := len(smtp.Mails()); n != 1 {
			t.Fatalf("%d emails", n)
		}

		// The link opens a page that asks to confirm (a mail scanner
		// following it confirms nothing); the form confirms.
		res, err := http.Get(e.url + link)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("confirmation page %d %s", res.StatusCode, res.Header.Get("Content-Type"))
		}
		u, _ := url.Parse(link)
		if status, body := e.form(userapi.SubmitTokenPath, url.Values{"sid": {sid}, "client_secret": {"cs1"}, "token": {"WRONG"}}); status != 400 || !strings.Contains(body, `id="failed"`) {
			t.Fatalf("wrong token: %d %s", status, body)
		}
		if status, body := e.form(userapi.SubmitTokenPath, u.Query()); status != 200 || !strings.Contains(body, `id="done"`) {
			t.Fatalf("confirm: %d %s", status, body)
		}
		// UIA first, then the address is bound.
		e.want(e.do("POST", acc+"/add", alice, map[string]any{"sid": sid, "client_secret": "cs1"}), 401, "")
		e.want(e.do("POST", acc+"/add", alice, add), 200, "")
		if r = e.do("GET", acc, alice, nil); !strings.Contains(r.raw, `"medium":"email","address":"alice@example.test"`) {
			t.Fatalf("3pids %s", r.raw)
		}
		e.want(e.do("POST", acc+"/email/requestToken", "", map[string]any{"client_secret": "cs9", "email": "Alice@Example.test", "send_attempt": 1}), 400, "M_THREEPID_IN_USE")

		// A forgotten password.
		const reset = "/_matrix/client/v3/account/password/email/requestToken"
		e.want(e.do("POST", reset, "", map[string]any{"client_secret": "cs2", "email": "nobody@example.test", "send_attempt": 1}), 400, "M_THREEPID_NOT_FOUND")
		r = e.do("POST", reset, "", map[string]any{"client_secret": "cs2", "email": "ALICE@example.test", "send_attempt": 1})
		e.want(r, 200, "")
		sid2 := r.str("sid")
		_, code := mailLink(t, smtp, "alice@example.test", 2)
		if m := smtp.Mails()[1]; !strings.Contains(m.Subject, "Reset your password") {
			t.Fatalf("subject %q", m.Subject)
		}
		creds := map[string]any{"sid": sid2, "client_secret": "cs2"}
		pw := map[string]any{"new_password": "new pw", "auth": map[string]any{"type": userapi.StageEmailIdentity, "threepid_creds": creds}}
		e.want(e.do("POST", "/_matrix/client/v3/account/password", "", pw), 401, "M_SESSION_NOT_VALIDATED")
		e.want(e.do("POST", userapi.SubmitTokenPath, "", map[string]any{"sid": sid2, "client_secret": "cs2", "token": "nope"}), 400, "M_INVALID_PARAM")
		e.want(e.do("POST", userapi.SubmitTokenPath, "", map[string]any{"sid": sid2, "client_secret": "cs2", "token": strings.ToLower(code)}), 200, "")
		// An "add" session cannot reset a password.
		e.want(e.do("POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "x",
			"auth": map[string]any{"type": userapi.StageEmailIdentity, "threepid_creds": map[string]any{"sid": sid, "client_secret": "cs1"}}}), 401, "M_NO_VALID_SESSION")
		e.want(e.do("POST", "/_matrix/client/v3/account/password", "", pw), 200, "")
		e.want(e.do("GET", "/_matrix/client/v3/account/whoami", alice, nil), 401, "M_UNKNOWN_TOKEN")
		e.want(e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "new pw"}), 200, "")
		// The link sets a password once.
		e.want(e.do("POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "again",
			"auth": map[string]any{"type": userapi.StageEmailIdentity, "threepidCreds": creds}}), 401, "M_NO_VALID_SESSION")

		// Validation emails to one address are limited (5 an hour here).
		for i := 2; i <= 4; i++ {
			e.want(e.do("POST", reset, "", map[string]any{"client_secret": "cs3", "email": "alice@example.test", "send_attempt": i}), 200, "")
		}
		e.want(e.do("POST", reset, "", map[string]any{"client_secret": "cs3", "email": "alice@example.test", "send_attempt": 5}), 429, "M_LIMIT_EXCEEDED")

		// Deleting the address.
		tok := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "new pw"}).str("access_token")
		e.want(e.do("POST", acc+"/delete", tok, map[string]any{"medium": "email", "address": "alice@example.test"}), 200, "")
		if r = e.do("GET", acc, tok, nil); r.raw != `{"threepids":[]}` {
			t.Fatalf("3pids after delete %s", r.raw)
		}
	})
}

// TestEmailOff: without email configured, nothing is sent and a password
// change needs a token.
func TestEmailOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		e.want(e.do("POST", "/_matrix/client/v3/account/password/email/requestToken", "", map[string]any{"client_secret": "cs", "email": "a@example.test", "send_attempt": 1}), 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		e.want(e.do("POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "x"}), 401, "M_MISSING_TOKEN")
		tok, _ := e.register("alice", "pw")
		e.want(e.do("POST", "/_matrix/client/v3/account/3pid/add", tok, map[string]any{}), 400, "M_FORBIDDEN")
		e.want(e.do("GET", userapi.SubmitTokenPath, "", nil), 404, "M_UNRECOGNIZED")
	})
}

// TestEmailEndpointsHostile: malformed and hostile bodies get Matrix
// errors, never a 500, and send nothing.
func TestEmailEndpointsHostile(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e, smtp := emailServer(t, db)
		tok, _ := e.register("alice", "pw")
		bodies := []any{"", "null", "[]", `{"client_secret": 5}`, `{"email": {"a": 1}}`, "{", strings.Repeat("x", 70000),
			map[string]any{"client_secret": strings.Repeat("a", 300), "email": "a@b.c", "send_attempt": 1},
			map[string]any{"client_secret": "ok", "email": "a@b.c\r\nBcc: evil@x.y", "send_attempt": 1},
			map[string]any{"client_secret": "ok", "email": "Name <a@b.c>", "send_attempt": 1},
			map[string]any{"sid": "x", "client_secret": "y", "token": "z"},
			map[string]any{"sid": strings.Repeat("s", 5000), "client_secret": "y", "token": "z", "auth": "nope"},
			map[string]any{"medium": "email"},
			map[string]any{"new_password": "x", "auth": map[string]any{"type": userapi.StageEmailIdentity, "threepid_creds": "bad"}},
			map[string]any{"new_password": "x", "auth": map[string]any{"type": userapi.StageEmailIdentity, "threepid_creds": map[string]any{"sid": "nope", "client_secret": "x"}}},
		}
		paths := []string{"/_matrix/client/v3/account/3pid/email/requestToken", "/_matrix/client/v3/account/password/email/requestToken",
			"/_matrix/client/v3/account/3pid/add", "/_matrix/client/v3/account/3pid/delete", userapi.SubmitTokenPath, "/_matrix/client/v3/account/password"}
		for _, path := range paths {
			for _, token := range []string{"", tok} {
				for _, b := range bodies {
					if r := e.do("POST", path, token, b); r.status >= 500 || r.status == 200 && path != "/_matrix/client/v3/account/3pid/delete" {
						t.Errorf("POST %s %v: %d %s", path, b, r.status, r.raw)
					}
				}
			}
		}
		if status, _ := e.form(userapi.SubmitTokenPath, url.Values{"sid": {"<script>"}}); status != 400 {
			t.Errorf("form without a session: %d", status)
		}
		res, err := http.Get(e.url + userapi.SubmitTokenPath + "?sid=%22%3E%3Cscript%3E")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if n := len(smtp.Mails()); n != 0 {
			t.Errorf("%d emails sent", n)
		}
	})
}
