package sytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// testOP is a real OpenID provider (zitadel/oidc's example OP, with its
// in-memory storage and login form) on a loopback port. It can swap the
// ID token of its next token response for one it issued earlier to
// another client, as a hostile or broken provider path would.
type testOP struct {
	*httptest.Server
	mu       sync.Mutex
	last     map[string]string // client_id → last ID token issued
	swapNext string            // ID token to send instead, once
}

func startOP(t *testing.T) *testOP {
	t.Helper()
	users := map[string]*storage.User{
		"sub-alice": {ID: "sub-alice", Username: "alice", Password: "alice provider pw", FirstName: "Alice", LastName: "Liddell", Email: "alice@example.com", EmailVerified: true},
		"sub-bob":   {ID: "sub-bob", Username: "bob", Password: "bob provider pw", FirstName: "Bob", LastName: "Builder", Email: "bob@example.com", EmailVerified: true},
	}
	raw, _ := json.Marshal(users)
	file := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := storage.StoreFromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	op := &testOP{last: map[string]string{}}
	op.Server = httptest.NewUnstartedServer(nil)
	issuer := "http://" + op.Listener.Addr().String()
	router := exampleop.SetupServer(issuer, storage.NewStorage(store), nil, false)
	op.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/token") {
			router.ServeHTTP(w, r)
			return
		}
		client, _, _ := r.BasicAuth()
		rec := httptest.NewRecorder()
		router.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var tok map[string]any
		if rec.Code == 200 && json.Unmarshal(body, &tok) == nil {
			op.mu.Lock()
			if id, ok := tok["id_token"].(string); ok {
				op.last[client] = id
				if op.swapNext != "" {
					tok["id_token"] = op.swapNext
					op.swapNext = ""
					body, _ = json.Marshal(tok)
				}
			}
			op.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
	op.Start()
	t.Cleanup(op.Close)
	return op
}

func (op *testOP) issuer() string { return op.URL }

// providerSignIn follows a browser through Haven's m.login.sso redirect
// for idp and the provider's login form, and returns the URL the provider
// sends the browser back to (Haven's callback with code and state).
func (b *browser) providerSignIn(idp, redirectURL, user, password string) string {
	b.t.Helper()
	t := b.t
	r := b.get(v3 + "/login/sso/redirect/" + idp + "?redirectUrl=" + url.QueryEscape(redirectURL))
	if r.Status != http.StatusFound {
		t.Fatalf("sso redirect: %d %s", r.Status, r.Body)
	}
	r = b.get(r.Header.Get("Location"))
	if r.Status != http.StatusFound {
		t.Fatalf("start at the provider: %d %s", r.Status, r.Body)
	}
	next := r.Header.Get("Location")
	au, _ := url.Parse(next)
	q := au.Query()
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Fatalf("authorization request without PKCE, nonce or state: %s", next)
	}
	// The provider's authorize endpoint, then its login form.
	loc := b.abs(next, b.follow(next))
	form := b.getAbs(loc)
	id := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(form.Body)
	if id == nil {
		t.Fatalf("provider login form: %d %s", form.Status, form.Body)
	}
	resp, err := b.c.PostForm(b.abs(loc, "/login/username"), url.Values{"id": {id[1]}, "username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	p := readPage(t, resp)
	if p.Status != http.StatusFound {
		t.Fatalf("provider login: %d %s", p.Status, p.Body)
	}
	cb := b.abs(loc, p.Header.Get("Location"))
	back := b.abs(cb, b.follow(cb))
	if !strings.HasPrefix(back, b.s.URL+"/_haven/oidc/callback?") {
		t.Fatalf("the provider sent the browser to %s", back)
	}
	return back
}

func (b *browser) getAbs(u string) page {
	b.t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return readPage(b.t, resp)
}

// follow GETs an absolute URL that must redirect and returns the Location.
func (b *browser) follow(u string) string {
	b.t.Helper()
	p := b.getAbs(u)
	if p.Status != http.StatusFound && p.Status != http.StatusSeeOther {
		b.t.Fatalf("GET %s: %d %s", u, p.Status, p.Body)
	}
	return p.Header.Get("Location")
}

func (b *browser) abs(base, ref string) string {
	bu, _ := url.Parse(base)
	ru, err := url.Parse(ref)
	if err != nil {
		b.t.Fatalf("bad URL %q", ref)
	}
	return bu.ResolveReference(ru).String()
}

// callback opens Haven's callback URL (absolute) in the browser.
func (b *browser) callback(u string) page {
	b.t.Helper()
	return b.getAbs(u)
}

func TestOIDCLogin(t *testing.T) {
	op := startOP(t)
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			s := newServer(t, db, "HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-key-0123456789")
			cb := s.URL + "/_haven/oidc/callback"
			storage.RegisterClients(storage.WebClient("haven", "haven client secret", cb), storage.WebClient("other", "other client secret", cb))
			cfg := fmt.Sprintf(`server_name: localhost
public_baseurl: %[1]s
oidc:
  providers:
    - id: company
      name: Company account
      issuer: %[2]s
      client_id: haven
      client_secret: haven client secret
    - id: closed
      name: Closed
      issuer: %[2]s
      client_id: haven
      client_secret: haven client secret
      create_accounts: false
    - id: other
      issuer: %[2]s
      client_id: other
      client_secret: other client secret
    - id: down
      issuer: http://127.0.0.1:%[3]d
      client_id: haven
`, s.URL, op.issuer(), freePort(t))
			file := filepath.Join(t.TempDir(), "haven.yaml")
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			s.args = []string{"--config", file}
			s.start()

			// The login flows name the providers (Element shows buttons).
			flows := s.do(t, "GET", v3+"/login", "", nil).expect(t, 200)
			raw, _ := json.Marshal(flows.JSON)
			for _, want := range []string{`"type":"m.login.sso"`, `"identity_providers":[{"id":"company","name":"Company account"}`, `"type":"m.login.token"`, `"type":"m.login.password"`} {
				if !bytes.Contains(raw, []byte(want)) {
					t.Fatalf("login flows without %s: %s", want, raw)
				}
			}
			// Haven's own page shows a button per provider.
			b := newBrowser(t, s)
			client := s.URL + "/app/done"
			r := b.get(v3 + "/login/sso/redirect?redirectUrl=" + url.QueryEscape(client))
			b.get(r.Header.Get("Location")).expect(t, 200, "Company account")

			signIn := func(b *browser, idp, user, pw string) string {
				back := b.providerSignIn(idp, client, user, pw)
				p := b.callback(back)
				if p.Status != http.StatusSeeOther {
					t.Fatalf("callback: %d %s", p.Status, p.Body)
				}
				u, _ := url.Parse(p.Header.Get("Location"))
				if !strings.HasPrefix(u.String(), client+"?") || u.Query().Get("loginToken") == "" {
					t.Fatalf("callback sent the browser to %s", u)
				}
				return u.Query().Get("loginToken")
			}

			// First sign-in: the account is made with the display name, and
			// the login token is exchanged through m.login.token.
			lr := loginToken(t, s, signIn(newBrowser(t, s), "company", "alice", "alice provider pw")).expect(t, 200)
			uid, token := lr.str("user_id"), lr.str("access_token")
			if uid != "@alice:localhost" || token == "" {
				t.Fatalf("login: %s", lr)
			}
			if dn := s.do(t, "GET", v3+"/profile/"+uid+"/displayname", token, nil).expect(t, 200).str("displayname"); dn != "Alice Liddell" {
				t.Fatalf("display name %q", dn)
			}
			// Second sign-in: the same account.
			lr = loginToken(t, s, signIn(newBrowser(t, s), "company", "alice", "alice provider pw")).expect(t, 200)
			if lr.str("user_id") != uid {
				t.Fatalf("second sign-in: %s", lr)
			}

			// TOTP still applies after the provider: an account with a second
			// factor gives its code before the client gets its token.
			secret := enrolCLI(t, s, "alice")
			b = newBrowser(t, s)
			cp := b.callback(b.providerSignIn("company", client, "alice", "alice provider pw")).expect(t, 200, "Two-factor code")
			b.post("/_haven/signin/code", url.Values{"csrf": {cp.csrf(t)}, "redirect_url": {client}, "code": {"000000x"}}).expect(t, 403, "wrong")
			done := b.post("/_haven/signin/code", url.Values{"csrf": {cp.csrf(t)}, "redirect_url": {client}, "code": {codeAt(secret, 0)}})
			if done.Status != http.StatusSeeOther || !strings.Contains(done.Header.Get("Location"), "loginToken=") {
				t.Fatalf("code after the provider: %d %v %s", done.Status, done.Header, done.Body)
			}
			tu, _ := url.Parse(done.Header.Get("Location"))
			if loginToken(t, s, tu.Query().Get("loginToken")).expect(t, 200).str("user_id") != uid {
				t.Fatal("the code step signed in another account")
			}
			// Without the provider's sign-in first, the code step is closed.
			nb := newBrowser(t, s)
			form := nb.get("/_haven/signin").expect(t, 200, "Sign in")
			nb.post("/_haven/signin/code", url.Values{"csrf": {form.csrf(t)}, "redirect_url": {client}, "code": {codeAt(secret, 1)}}).expect(t, 403, "expired")

			// create_accounts: false refuses someone without an account.
			b = newBrowser(t, s)
			b.callback(b.providerSignIn("closed", client, "bob", "bob provider pw")).expect(t, 403, "no account on this server")

			// A code used already (or expired) is refused by the provider:
			// a fresh sign-in in the same browser with an old code.
			b = newBrowser(t, s)
			used := b.providerSignIn("company", client, "alice", "alice provider pw")
			b.callback(used).expect(t, 200, "Two-factor code")
			r = b.get(v3 + "/login/sso/redirect/company?redirectUrl=" + url.QueryEscape(client))
			r = b.get(r.Header.Get("Location"))
			fresh, _ := url.Parse(r.Header.Get("Location"))
			old, _ := url.Parse(used)
			replay := s.URL + "/_haven/oidc/callback?" + url.Values{"code": {old.Query().Get("code")}, "state": {fresh.Query().Get("state")}}.Encode()
			b.callback(replay).expect(t, 400, "sign-in code was refused")

			// A wrong state is refused.
			b = newBrowser(t, s)
			back := b.providerSignIn("company", client, "bob", "bob provider pw")
			bu, _ := url.Parse(back)
			q := bu.Query()
			q.Set("state", "forged"+q.Get("state"))
			bu.RawQuery = q.Encode()
			b.callback(bu.String()).expect(t, 400, "was not started in this browser")
			// And a callback in another browser (no cookie) too.
			newBrowser(t, s).callback(back).expect(t, 400, "was not started in this browser")

			// An ID token issued to another client (audience) is refused.
			b = newBrowser(t, s)
			b.callback(b.providerSignIn("other", client, "bob", "bob provider pw"))
			op.mu.Lock()
			op.swapNext = op.last["other"]
			op.mu.Unlock()
			if op.swapNext == "" {
				t.Fatal("no ID token issued to the other client")
			}
			b = newBrowser(t, s)
			b.callback(b.providerSignIn("company", client, "bob", "bob provider pw")).expect(t, 403, "could not be verified")

			// A provider that cannot be reached: an error page, not a 500.
			b = newBrowser(t, s)
			r = b.get(v3 + "/login/sso/redirect/down?redirectUrl=" + url.QueryEscape(client))
			p := b.get(r.Header.Get("Location")).expect(t, 503, "cannot be reached")
			if strings.Contains(p.Body, "127.0.0.1") || strings.Contains(p.Body, "connection refused") {
				t.Fatalf("error page tells internals: %s", p.Body)
			}
			b.get(v3+"/login/sso/redirect/nosuch?redirectUrl="+url.QueryEscape(client)).expect(t, 404, "no such identity provider")

			// The audit log names the provider.
			s.stop()
			cmd := exec.Command(havenBin, "admin", "audit", "--config", file, "--json", "--limit", "100")
			cmd.Dir, cmd.Env = s.dir, s.env
			outb, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("haven admin audit: %v\n%s", err, outb)
			}
			out := strings.ReplaceAll(string(outb), " ", "")
			if !strings.Contains(out, `"via":"oidc:company"`) || !strings.Contains(out, `"no_account"`) || !strings.Contains(out, `"id_token_invalid"`) {
				t.Fatalf("audit log: %s", out)
			}
		})
	}
}

// TestOIDCEmailTOTPOff: with two-factor sign-in off (auth.totp: off) the
// company sign-in alone gives a session, and the provider's email address
// is the account's verified email threepid.
func TestOIDCEmailTOTPOff(t *testing.T) {
	op := startOP(t)
	s := newServer(t, "sqlite")
	cb := s.URL + "/_haven/oidc/callback"
	storage.RegisterClients(storage.WebClient("haven-totpoff", "haven totpoff secret", cb))
	cfg := fmt.Sprintf("server_name: localhost\npublic_baseurl: %s\nauth:\n  totp: \"off\"\noidc:\n  providers:\n    - id: company\n      name: Company account\n      issuer: %s\n      client_id: haven-totpoff\n      client_secret: haven totpoff secret\n", s.URL, op.issuer())
	file := filepath.Join(t.TempDir(), "haven.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{"--config", file}
	s.start()

	client := s.URL + "/app/done"
	b := newBrowser(t, s)
	p := b.callback(b.providerSignIn("company", client, "bob", "bob provider pw"))
	if p.Status != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", p.Status, p.Body)
	}
	u, _ := url.Parse(p.Header.Get("Location"))
	if !strings.HasPrefix(u.String(), client+"?") || u.Query().Get("loginToken") == "" {
		t.Fatalf("callback sent the browser to %s", u)
	}
	lr := loginToken(t, s, u.Query().Get("loginToken")).expect(t, 200)
	if lr.str("user_id") != "@bob:localhost" {
		t.Fatalf("login: %s", lr)
	}
	tp := s.do(t, "GET", v3+"/account/3pid", lr.str("access_token"), nil).expect(t, 200)
	raw, _ := json.Marshal(tp.JSON["threepids"])
	if !bytes.Contains(raw, []byte(`"address":"bob@example.com"`)) || !bytes.Contains(raw, []byte(`"medium":"email"`)) || bytes.Contains(raw, []byte(`"validated_at":0`)) {
		t.Fatalf("threepids: %s", tp)
	}
	// An admin sees the address and the company identity on bob's account.
	root := s.registerAdmin(t, "root")
	au := s.do(t, "GET", adminV2+"/users/"+url.PathEscape("@bob:localhost"), root.AccessToken, nil).expect(t, 200)
	if raw, _ := json.Marshal(au.JSON["threepids"]); !bytes.Contains(raw, []byte(`"address":"bob@example.com"`)) {
		t.Fatalf("admin view of bob's threepids: %s", au)
	}
	if raw, _ := json.Marshal(au.JSON["external_ids"]); !bytes.Contains(raw, []byte(`"auth_provider":"company"`)) {
		t.Fatalf("admin view of bob's external ids: %s", au)
	}

	// bob has no Haven password: replacing his cross-signing keys offers
	// m.login.sso, which signs in at the provider again.
	token := lr.str("access_token")
	key := func(pub string) map[string]any {
		return map[string]any{"user_id": "@bob:localhost", "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + pub: pub}}
	}
	s.do(t, "POST", v3+"/keys/device_signing/upload", token, map[string]any{"master_key": key(newTestKey(t).pub)}).expect(t, 200)
	replace := map[string]any{"master_key": key(newTestKey(t).pub)}
	ch := s.do(t, "POST", v3+"/keys/device_signing/upload", token, replace).expect(t, 401)
	if got := flowTypesUIA(ch); got != "m.login.sso" {
		t.Fatalf("flows %s: %s", got, ch)
	}
	sess := ch.str("session")
	r := b.get(v3 + "/auth/m.login.sso/fallback/web?session=" + url.QueryEscape(sess))
	page := b.get(r.Header.Get("Location")).expect(t, 200, "Company account")
	m := hrefRE.FindStringSubmatch(page.Body)
	if m == nil {
		t.Fatalf("no provider button:\n%s", page.Body)
	}
	r = b.get(html.UnescapeString(m[1]))
	if r.Status != http.StatusFound {
		t.Fatalf("start at the provider: %d %s", r.Status, r.Body)
	}
	next := r.Header.Get("Location")
	loc := b.abs(next, b.follow(next))
	login := b.getAbs(loc)
	idm := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(login.Body)
	if idm == nil {
		t.Fatalf("provider login form: %d %s", login.Status, login.Body)
	}
	resp, err := b.c.PostForm(b.abs(loc, "/login/username"), url.Values{"id": {idm[1]}, "username": {"bob"}, "password": {"bob provider pw"}})
	if err != nil {
		t.Fatal(err)
	}
	pr := readPage(t, resp)
	back := b.abs(loc, pr.Header.Get("Location"))
	back = b.abs(back, b.follow(back))
	b.callback(back).expect(t, 200, "Confirmed")
	replace["auth"] = map[string]any{"session": sess}
	s.do(t, "POST", v3+"/keys/device_signing/upload", token, replace).expect(t, 200)
}
