package sytest

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/userapi/totp"
)

// browser is a cookie-keeping HTTP client that does not follow redirects,
// as a test of the sign-in page needs to see them.
type browser struct {
	t *testing.T
	s *server
	c *http.Client
}

func newBrowser(t *testing.T, s *server) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, s: s, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

func (b *browser) get(path string) page {
	b.t.Helper()
	resp, err := b.c.Get(b.s.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	return readPage(b.t, resp)
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	resp, err := b.c.PostForm(b.s.URL+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	return readPage(b.t, resp)
}

func readPage(t *testing.T, resp *http.Response) page {
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

var (
	csrfRE   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	secretRE = regexp.MustCompile(`<code class="secret">([A-Z2-7 ]+)</code>`)
	codesRE  = regexp.MustCompile(`<li>([a-z2-9]{5}-[a-z2-9]{5})</li>`)
	hrefRE   = regexp.MustCompile(`class="button" href="([^"]+)"`)
)

func (p page) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no CSRF token in page %d:\n%s", p.Status, p.Body)
	}
	return m[1]
}

func (p page) expect(t *testing.T, status int, contains string) page {
	t.Helper()
	if p.Status != status || !strings.Contains(html.UnescapeString(p.Body), contains) {
		t.Fatalf("want %d with %q, got %d:\n%s", status, contains, p.Status, p.Body)
	}
	if p.Header.Get("Content-Type") == "text/html; charset=utf-8" && !strings.Contains(p.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("page without its CSP: %v", p.Header)
	}
	return p
}

// signIn opens the page for a client's redirectUrl and submits the form.
func (b *browser) signIn(redirectURL, user, password, code string) page {
	b.t.Helper()
	r := b.get("/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(redirectURL))
	if r.Status != http.StatusFound {
		b.t.Fatalf("sso redirect: %d %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	form := b.get(loc).expect(b.t, 200, "Sign in to")
	return b.post("/_haven/signin", url.Values{"csrf": {form.csrf(b.t)}, "redirect_url": {redirectURL},
		"username": {user}, "password": {password}, "code": {code}})
}

func codeAt(secret []byte, d int64) string {
	return totp.Code(secret, totp.Step(time.Now())+d, totp.Digits)
}

// enrolCLI runs `haven admin totp-enroll` against the server's database.
func enrolCLI(t *testing.T, s *server, user string) []byte {
	t.Helper()
	cmd := exec.Command(havenBin, "admin", "totp-enroll", "--user", user)
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("totp-enroll: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if !regexp.MustCompile(`^otpauth://totp/[^\s?]+\?[^\s]+\n$`).MatchString(out) {
		t.Fatalf("totp-enroll printed %q", out)
	}
	u, err := url.Parse(strings.TrimSpace(out))
	if err != nil || u.Query().Get("issuer") != "localhost" || u.Query().Get("digits") != "6" || u.Query().Get("period") != "30" || u.Query().Get("algorithm") != "SHA1" {
		t.Fatalf("totp-enroll URI %s (%v)", out, err)
	}
	secret, err := totp.DecodeSecret(u.Query().Get("secret"))
	if err != nil || len(secret) != totp.SecretSize {
		t.Fatalf("secret of %s: %v", out, err)
	}
	return secret
}

func loginToken(t *testing.T, s *server, token string) apiResp {
	return s.do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": token})
}

func flowTypes(r apiResp) string {
	var out []string
	for _, f := range r.JSON["flows"].([]any) {
		out = append(out, f.(map[string]any)["type"].(string))
	}
	return strings.Join(out, ",")
}

func TestTOTPSignInPage(t *testing.T) {
	const trusted = "http://client.example/app/"
	eachDBEnv(t, []string{"HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_SSO_CLIENT_ORIGINS=http://client.example",
		"HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key"}, func(t *testing.T, s *server) {
		if got := flowTypes(s.do(t, "GET", "/_matrix/client/v3/login", "", nil).expect(t, 200)); got != "m.login.password,m.login.sso,m.login.token" {
			t.Fatalf("flows %s", got)
		}
		alice := s.register(t, "alice")
		// Without a second factor the password still works (optional policy).
		s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("alice", "password-alice")).expect(t, 200)
		secret := enrolCLI(t, s, "alice")
		r := s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("alice", "password-alice")).expectErr(t, 403, "M_FORBIDDEN")
		if !strings.Contains(r.str("error"), "single sign-on") {
			t.Fatalf("refusal does not say what to do: %s", r)
		}
		// A wrong password still reads as a wrong password.
		s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("alice", "wrong")).expectErr(t, 403, "M_FORBIDDEN")

		b := newBrowser(t, s)
		// Redirect validation.
		for _, bad := range []string{"", "javascript:alert(1)", "/relative", "data:text/html,x", "http://user:pw@client.example/"} {
			if r := b.get("/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(bad)); r.Status != 400 {
				t.Fatalf("redirectUrl %q: %d", bad, r.Status)
			}
		}
		// CSRF: a post without the cookie's token is refused.
		b.post("/_haven/signin", url.Values{"redirect_url": {trusted}, "username": {"alice"}, "password": {"password-alice"}, "code": {codeAt(secret, 0)}}).
			expect(t, 403, "did not come from this site")

		b.signIn(trusted, "alice", "password-alice", "").expect(t, 401, "Enter the 6-digit code")
		b.signIn(trusted, "alice", "wrong password", codeAt(secret, 0)).expect(t, 403, "Wrong username or password")
		wrong := "000000"
		if wrong == codeAt(secret, 0) || wrong == codeAt(secret, 1) || wrong == codeAt(secret, -1) {
			wrong = "999999"
		}
		b.signIn(trusted, "alice", "password-alice", wrong).expect(t, 403, "The two-factor code is wrong")

		// Right code, trusted client: straight back with a login token.
		code := codeAt(secret, 0)
		r2 := b.signIn(trusted, "alice", "password-alice", code)
		if r2.Status != http.StatusSeeOther {
			t.Fatalf("sign-in: %d %s", r2.Status, r2.Body)
		}
		loc, _ := url.Parse(r2.Header.Get("Location"))
		if !strings.HasPrefix(loc.String(), trusted+"?loginToken=") {
			t.Fatalf("redirected to %s", loc)
		}
		token := loc.Query().Get("loginToken")
		// The same code again is refused.
		b.signIn(trusted, "alice", "password-alice", code).expect(t, 403, "already been used")

		// m.login.token: once.
		got := loginToken(t, s, token).expect(t, 200)
		if got.str("user_id") != string(alice.UserID) || got.str("access_token") == "" {
			t.Fatalf("token login: %s", got)
		}
		s.do(t, "GET", "/_matrix/client/v3/account/whoami", got.str("access_token"), nil).expect(t, 200)
		loginToken(t, s, token).expectErr(t, 403, "M_FORBIDDEN")
		loginToken(t, s, "hvl_made-up").expectErr(t, 403, "M_FORBIDDEN")

		// The account page: sign in for it with the next code, make recovery codes.
		form := b.get("/_haven/signin").expect(t, 200, "Sign in to")
		acc := b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "username": {"alice"}, "password": {"password-alice"}, "code": {codeAt(secret, 1)}})
		if acc.Status != http.StatusSeeOther || acc.Header.Get("Location") != "/_haven/account" {
			t.Fatalf("account sign-in: %d %v %s", acc.Status, acc.Header, acc.Body)
		}
		ap := b.get("/_haven/account").expect(t, 200, "Recovery codes left: 0")
		codes := codesRE.FindAllStringSubmatch(b.post("/_haven/account/totp", url.Values{"csrf": {ap.csrf(t)}, "action": {"recovery"}}).
			expect(t, 200, "Your recovery codes").Body, -1)
		if len(codes) != totp.RecoveryCodeCount {
			t.Fatalf("%d recovery codes", len(codes))
		}

		// A recovery code, for a client that is not trusted: the page names
		// the site and asks first.
		cp := b.signIn("https://other.example/cb", "alice", "password-alice", codes[0][1]).expect(t, 200, "Continue to other.example?")
		link := hrefRE.FindStringSubmatch(cp.Body)
		if link == nil {
			t.Fatalf("no link: %s", cp.Body)
		}
		lu, _ := url.Parse(html.UnescapeString(link[1]))
		if lu.Host != "other.example" || lu.Query().Get("loginToken") == "" {
			t.Fatalf("link %s", lu)
		}
		loginToken(t, s, lu.Query().Get("loginToken")).expect(t, 200)
		b.signIn(trusted, "alice", "password-alice", codes[0][1]).expect(t, 403, "The two-factor code is wrong")

		// Deleting a device asks for the second factor: the m.login.sso
		// stage, completed on the page, then the request with the session.
		del := s.do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{"devices": []string{got.str("device_id")}}).expect(t, 401)
		if fmt.Sprint(del.JSON["flows"]) != "[map[stages:[m.login.sso]]]" {
			t.Fatalf("UIA flows %v", del.JSON["flows"])
		}
		session := del.str("session")
		fb := b.get("/_matrix/client/v3/auth/m.login.sso/fallback/web?session=" + url.QueryEscape(session))
		if fb.Status != http.StatusFound {
			t.Fatalf("fallback: %d", fb.Status)
		}
		fp := b.get(fb.Header.Get("Location")).expect(t, 200, "Confirm it is you")
		// Before the page, the session alone is not enough.
		s.do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{"devices": []string{got.str("device_id")}, "auth": map[string]any{"session": session}}).expect(t, 401)
		b.post("/_haven/signin", url.Values{"csrf": {fp.csrf(t)}, "uia_session": {session}, "username": {"someone-else"}, "password": {"password-alice"}, "code": {codes[1][1]}}).
			expect(t, 200, "Confirmed")
		s.do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{"devices": []string{got.str("device_id")}, "auth": map[string]any{"session": session}}).expect(t, 200)
		s.do(t, "GET", "/_matrix/client/v3/account/whoami", got.str("access_token"), nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

		// An admin reset through the admin API: the password works again.
		admin := s.registerAdmin(t, "root")
		s.do(t, "DELETE", "/_synapse/admin/v1/users/"+url.PathEscape(string(alice.UserID))+"/totp", alice.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "DELETE", "/_synapse/admin/v1/users/"+url.PathEscape(string(alice.UserID))+"/totp", admin.AccessToken, nil).expect(t, 200)
		s.do(t, "DELETE", "/_synapse/admin/v1/users/"+url.PathEscape(string(alice.UserID))+"/totp", admin.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("alice", "password-alice")).expect(t, 200)
		// Admins must use a second factor (totp_required_for_admins).
		s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("root", "password-root")).expectErr(t, 403, "M_FORBIDDEN")
		// Audited.
		au := s.do(t, "GET", "/_synapse/admin/v1/audit?action=totp.changed", admin.AccessToken, nil)
		if au.Status == 200 && !strings.Contains(string(au.Raw), "totp.changed") {
			t.Fatalf("audit: %s", au)
		}
	})
}

func TestTOTPRequired(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_AUTH_TOTP=required", "HAVEN_AUTH_SSO_CLIENT_ORIGINS=http://client.example"}, func(t *testing.T, s *server) {
		if got := flowTypes(s.do(t, "GET", "/_matrix/client/v3/login", "", nil).expect(t, 200)); got != "m.login.sso,m.login.token" {
			t.Fatalf("flows %s", got)
		}
		s.register(t, "bob")
		r := s.do(t, "POST", "/_matrix/client/v3/login", "", passwordLogin("bob", "password-bob")).expectErr(t, 403, "M_FORBIDDEN")
		if !strings.Contains(r.str("error"), "SSO") {
			t.Fatalf("refusal: %s", r)
		}
		// First sign-in: the set-up comes before the token.
		b := newBrowser(t, s)
		ep := b.signIn("http://client.example/", "bob", "password-bob", "").expect(t, 200, "Set up two-factor sign-in")
		if !strings.Contains(ep.Body, "<svg") {
			t.Fatal("no QR code on the set-up page")
		}
		m := secretRE.FindStringSubmatch(ep.Body)
		if m == nil {
			t.Fatalf("no secret: %s", ep.Body)
		}
		secret, err := totp.DecodeSecret(m[1])
		if err != nil {
			t.Fatal(err)
		}
		// Finishing without the set-up is refused.
		b.post("/_haven/signin/finish", url.Values{"csrf": {ep.csrf(t)}, "redirect_url": {"http://client.example/"}}).expect(t, 403, "expired")
		cp := b.post("/_haven/signin/enrol", url.Values{"csrf": {ep.csrf(t)}, "redirect_url": {"http://client.example/"}, "code": {codeAt(secret, 0)}}).
			expect(t, 200, "Your recovery codes")
		if n := len(codesRE.FindAllString(cp.Body, -1)); n != totp.RecoveryCodeCount {
			t.Fatalf("%d recovery codes", n)
		}
		fin := b.post("/_haven/signin/finish", url.Values{"csrf": {cp.csrf(t)}, "redirect_url": {"http://client.example/"}})
		loc, _ := url.Parse(fin.Header.Get("Location"))
		if fin.Status != http.StatusSeeOther || loc.Host != "client.example" {
			t.Fatalf("finish: %d %v", fin.Status, fin.Header)
		}
		loginToken(t, s, loc.Query().Get("loginToken")).expect(t, 200)
		// From now on the code is asked for.
		newBrowser(t, s).signIn("http://client.example/", "bob", "password-bob", "").expect(t, 401, "Enter the 6-digit code")
	})
}
