package sytest

import (
	"context"
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
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"golang.org/x/oauth2"
)

// The OAuth 2.0 API (docs/oauth.md) end to end: a client registers, a
// person signs in on Haven's page (password, TOTP) and consents, the
// client (golang.org/x/oauth2) exchanges the code with PKCE, uses,
// refreshes and revokes the tokens.

var oauthFieldRE = regexp.MustCompile(`name="oauth" value="([^"]+)"`)

const (
	scopeAPI    = "urn:matrix:client:api:*"
	scopeDevice = "urn:matrix:client:device:"
	formType    = "application/x-www-form-urlencoded"
)

// callback is a client's loopback redirect URI: it records what the
// browser brought back.
type callback struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []url.Values
}

func newCallback(t *testing.T) *callback {
	c := &callback{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.got = append(c.got, r.URL.Query())
		c.mu.Unlock()
		_, _ = w.Write([]byte("signed in"))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *callback) uri() string { return c.srv.URL + "/callback" }

func (c *callback) last(t *testing.T) url.Values {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got) == 0 {
		t.Fatal("the redirect URI was not reached")
	}
	return c.got[len(c.got)-1]
}

// registerClient registers a native client with the loopback redirect.
func registerClient(t *testing.T, s *server, redirect string) string {
	t.Helper()
	r := s.do(t, "POST", "/_haven/oauth2/registration", "", map[string]any{
		"client_name": "Sytest Client", "client_uri": "https://client.example", "application_type": "native",
		"redirect_uris": []string{redirect, "example.client.app:/callback"}, "token_endpoint_auth_method": "none",
		"grant_types":    []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
		"response_types": []string{"code"}, "contacts": []string{"ops@client.example"},
		"tos_uri": "https://client.example/tos", "policy_uri": "https://elsewhere.example/policy",
	}).expect(t, 201)
	id := r.str("client_id")
	if id == "" || r.str("client_name") != "Sytest Client" || r.str("tos_uri") == "" || r.str("policy_uri") != "" {
		t.Fatalf("registration: %s", r)
	}
	if gt := r.JSON["grant_types"].([]any); len(gt) != 2 {
		t.Fatalf("grant types kept: %v", gt)
	}
	return id
}

func oauthConfig(s *server, clientID, redirect, deviceID string) *oauth2.Config {
	return &oauth2.Config{ClientID: clientID, RedirectURL: redirect, Scopes: []string{scopeAPI, scopeDevice + deviceID},
		Endpoint: oauth2.Endpoint{AuthURL: s.URL + "/_haven/oauth2/authorize", TokenURL: s.URL + "/_haven/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
}

// authorize runs the browser side up to the sign-in form and returns the
// form page and its sealed request.
func (b *browser) openAuthorize(authURL string) (page, string) {
	b.t.Helper()
	r := b.getAbs(authURL)
	if r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/_haven/signin?oauth=") {
		b.t.Fatalf("authorize: %d %s %s", r.Status, r.Header.Get("Location"), r.Body)
	}
	form := b.get(r.Header.Get("Location")).expect(b.t, 200, "Sign in to")
	m := oauthFieldRE.FindStringSubmatch(form.Body)
	if m == nil {
		b.t.Fatalf("no oauth field in the form:\n%s", form.Body)
	}
	return form, m[1]
}

// consent allows (or denies) on the consent page and follows the redirect
// to the client.
func (b *browser) consent(p page, sealed, action string) string {
	b.t.Helper()
	r := b.post("/_haven/oauth2/consent", url.Values{"csrf": {p.csrf(b.t)}, "oauth": {sealed}, "action": {action}})
	if r.Status != http.StatusSeeOther {
		b.t.Fatalf("consent: %d %s", r.Status, r.Body)
	}
	return r.Header.Get("Location")
}

// signInForCode runs the whole browser side for a password (and code, if
// given) and returns the authorization code the client got.
func signInForCode(t *testing.T, s *server, cb *callback, cfg *oauth2.Config, state, verifier, user, password, code string) string {
	t.Helper()
	b := newBrowser(t, s)
	form, sealed := b.openAuthorize(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	cons := b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "oauth": {sealed}, "username": {user}, "password": {password}, "code": {code}}).
		expect(t, 200, "Allow Sytest Client?")
	loc := b.consent(cons, sealed, "allow")
	if !strings.HasPrefix(loc, cb.uri()+"?") {
		t.Fatalf("consent sent the browser to %s", loc)
	}
	b.getAbs(loc)
	got := cb.last(t)
	if got.Get("state") != state || got.Get("code") == "" {
		t.Fatalf("callback got %v", got)
	}
	return got.Get("code")
}

func tokenForm(t *testing.T, s *server, path string, v url.Values) apiResp {
	t.Helper()
	return s.do(t, "POST", path, "", v.Encode(), withHeader("Content-Type", formType))
}

func (r apiResp) expectOAuthErr(t *testing.T, code string) {
	t.Helper()
	if r.Status != 400 || r.str("error") != code {
		t.Fatalf("want 400 %s: %s", code, r)
	}
}

func startOAuthServer(t *testing.T, db string, env ...string) *server {
	s := newServer(t, db, env...)
	s.env = append(s.env, "HAVEN_PUBLIC_BASEURL="+s.URL)
	s.start()
	return s
}

func TestOAuthAPI(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			s := startOAuthServer(t, db, "HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key")
			ctx := context.Background()

			// Metadata, on the stable and the unstable path.
			for _, path := range []string{"/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"} {
				m := s.do(t, "GET", path, "", nil).expect(t, 200)
				if m.str("issuer") != s.URL+"/" || m.str("authorization_endpoint") != s.URL+"/_haven/oauth2/authorize" ||
					m.str("token_endpoint") != s.URL+"/_haven/oauth2/token" || m.str("registration_endpoint") == "" ||
					m.str("revocation_endpoint") == "" || m.str("account_management_uri") != s.URL+"/_haven/account" {
					t.Fatalf("metadata: %s", m)
				}
				for _, k := range []string{"response_types_supported", "grant_types_supported", "response_modes_supported", "code_challenge_methods_supported", "account_management_actions_supported"} {
					if _, ok := m.JSON[k].([]any); !ok {
						t.Fatalf("metadata without %s: %s", k, m)
					}
				}
				if h := m.Header.Get("Access-Control-Allow-Origin"); h != "*" {
					t.Fatalf("metadata without CORS: %q", h)
				}
			}
			if r := s.do(t, "GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", "", nil).expect(t, 200); r.str("issuer") != s.URL+"/" {
				t.Fatalf("auth_issuer: %s", r)
			}
			// Password clients keep their login flows.
			if got := flowTypes(s.do(t, "GET", "/_matrix/client/v3/login", "", nil).expect(t, 200)); got != "m.login.password,m.login.sso,m.login.token" {
				t.Fatalf("flows %s", got)
			}

			alice := s.register(t, "alice")
			cb := newCallback(t)
			clientID := registerClient(t, s, cb.uri())
			const device = "OAUTHDEVICE1"
			cfg := oauthConfig(s, clientID, cb.uri(), device)

			// The full flow with PKCE, password only.
			verifier := oauth2.GenerateVerifier()
			code := signInForCode(t, s, cb, cfg, "state-1", verifier, "alice", "password-alice", "")
			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "Bearer" || tok.Expiry.IsZero() ||
				!strings.Contains(tok.Extra("scope").(string), scopeDevice+device) {
				t.Fatalf("token: %+v scope %v", tok, tok.Extra("scope"))
			}
			who := s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expect(t, 200)
			if who.str("user_id") != string(alice.UserID) || who.str("device_id") != device {
				t.Fatalf("whoami: %s", who)
			}
			s.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", tok.AccessToken, nil).expect(t, 200)
			devs := s.do(t, "GET", "/_matrix/client/v3/devices/"+device, tok.AccessToken, nil).expect(t, 200)
			if devs.str("display_name") != "Sytest Client" {
				t.Fatalf("device: %s", devs)
			}

			// The code is single use; a second use (a stolen code?) ends the
			// session it made.
			if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
				t.Fatalf("second exchange: %v", err)
			}
			s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
			verifier = oauth2.GenerateVerifier()
			code = signInForCode(t, s, cb, cfg, "state-1b", verifier, "alice", "password-alice", "")
			if tok, err = cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err != nil {
				t.Fatalf("exchange: %v", err)
			}

			// Refresh: both tokens rotate; the old refresh token dies once
			// the new pair is used.
			ref := tokenForm(t, s, "/_haven/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {clientID}}).expect(t, 200)
			newAccess, newRefresh := ref.str("access_token"), ref.str("refresh_token")
			if newAccess == "" || newRefresh == "" || newAccess == tok.AccessToken || newRefresh == tok.RefreshToken || ref.str("token_type") != "Bearer" {
				t.Fatalf("refresh: %s", ref)
			}
			s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
			if who := s.do(t, "GET", "/_matrix/client/v3/account/whoami", newAccess, nil).expect(t, 200); who.str("device_id") != device {
				t.Fatalf("whoami after refresh: %s", who)
			}
			tokenForm(t, s, "/_haven/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {clientID}}).
				expectOAuthErr(t, "invalid_grant")
			// Another client cannot use the refresh token.
			other := registerClient(t, s, cb.uri())
			tokenForm(t, s, "/_haven/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {newRefresh}, "client_id": {other}}).
				expectOAuthErr(t, "invalid_grant")
			tokenForm(t, s, "/_haven/oauth2/revoke", url.Values{"token": {newAccess}, "client_id": {other}}).expectOAuthErr(t, "unauthorized_client")

			// Revocation: the device is signed out; unknown tokens are fine.
			tokenForm(t, s, "/_haven/oauth2/revoke", url.Values{"token": {newAccess}, "token_type_hint": {"access_token"}, "client_id": {clientID}}).expect(t, 200)
			s.do(t, "GET", "/_matrix/client/v3/account/whoami", newAccess, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")
			tokenForm(t, s, "/_haven/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {newRefresh}, "client_id": {clientID}}).
				expectOAuthErr(t, "invalid_grant")
			tokenForm(t, s, "/_haven/oauth2/revoke", url.Values{"token": {"hvt_unknown"}, "client_id": {clientID}}).expect(t, 200)

			// Revoking the refresh token signs the device out too.
			verifier = oauth2.GenerateVerifier()
			code = signInForCode(t, s, cb, cfg, "state-2", verifier, "alice", "password-alice", "")
			tok, err = cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			tokenForm(t, s, "/_haven/oauth2/revoke", url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}}).expect(t, 200)
			s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

			// TOTP: once enrolled, the flow asks for the code.
			s.register(t, "bob")
			secret := enrolCLI(t, s, "bob")
			b := newBrowser(t, s)
			verifier = oauth2.GenerateVerifier()
			form, sealed := b.openAuthorize(cfg.AuthCodeURL("state-3", oauth2.S256ChallengeOption(verifier)))
			b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "oauth": {sealed}, "username": {"bob"}, "password": {"password-bob"}}).
				expect(t, 401, "Enter the 6-digit code")
			cons := b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "oauth": {sealed}, "username": {"bob"}, "password": {"password-bob"}, "code": {codeAt(secret, 0)}}).
				expect(t, 200, "Allow Sytest Client?")
			b.getAbs(b.consent(cons, sealed, "allow"))
			tok, err = cfg.Exchange(ctx, cb.last(t).Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange after TOTP: %v", err)
			}
			if who := s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expect(t, 200); !strings.HasPrefix(who.str("user_id"), "@bob:") || who.str("device_id") != device {
				t.Fatalf("whoami bob: %s", who)
			}

			// Account management: the browser signed in above lists bob's
			// sessions and ends one, as a client asks with ?action=.
			acc := b.get("/_haven/account?action=org.matrix.session_end&device_id="+device).expect(t, 200, "sign out the session "+device)
			if !strings.Contains(acc.Body, `name="device_id" value="`+device+`"`) {
				t.Fatalf("account page does not list the device:\n%s", acc.Body)
			}
			if r := b.post("/_haven/account/devices", url.Values{"csrf": {acc.csrf(t)}, "device_id": {device}}); r.Status != http.StatusSeeOther {
				t.Fatalf("end session: %d %s", r.Status, r.Body)
			}
			s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expectErr(t, 401, "M_UNKNOWN_TOKEN")

			oauthNegative(t, s, cb, cfg, clientID)
		})
	}
}

// oauthNegative: every wrong request gets its OAuth error, never a 5xx
// (s.do fails the test on one).
func oauthNegative(t *testing.T, s *server, cb *callback, cfg *oauth2.Config, clientID string) {
	// Token endpoint errors, each with a fresh code.
	for _, tc := range []struct {
		name string
		mod  func(v url.Values)
		want string
	}{
		{"wrong verifier", func(v url.Values) { v.Set("code_verifier", oauth2.GenerateVerifier()) }, "invalid_grant"},
		{"short verifier", func(v url.Values) { v.Set("code_verifier", "short") }, "invalid_grant"},
		{"no verifier", func(v url.Values) { v.Del("code_verifier") }, "invalid_request"},
		{"other redirect_uri", func(v url.Values) { v.Set("redirect_uri", cb.srv.URL+"/elsewhere") }, "invalid_grant"},
		{"unknown client", func(v url.Values) { v.Set("client_id", "NOSUCHCLIENT") }, "invalid_client"},
		{"unknown code", func(v url.Values) { v.Set("code", "hva_nope") }, "invalid_grant"},
		{"unsupported grant", func(v url.Values) { v.Set("grant_type", "password") }, "unsupported_grant_type"},
		{"no grant type", func(v url.Values) { v.Del("grant_type") }, "invalid_request"},
		{"grant type twice", func(v url.Values) { v.Add("grant_type", "authorization_code") }, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verifier := oauth2.GenerateVerifier()
			code := signInForCode(t, s, cb, cfg, "neg", verifier, "alice", "password-alice", "")
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb.uri()}, "client_id": {clientID}, "code_verifier": {verifier}}
			tc.mod(v)
			tokenForm(t, s, "/_haven/oauth2/token", v).expectOAuthErr(t, tc.want)
		})
	}
	s.do(t, "POST", "/_haven/oauth2/token", "", map[string]any{"grant_type": "authorization_code"}).expectOAuthErr(t, "invalid_request")

	// Authorization requests that go back to the client with an error.
	verifier := oauth2.GenerateVerifier()
	good := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {cb.uri()}, "scope": {scopeAPI + " " + scopeDevice + "NEGDEV"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	b := newBrowser(t, s)
	for _, tc := range []struct {
		name string
		mod  func(v url.Values)
		want string
	}{
		{"no PKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "invalid_request"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "invalid_request"},
		{"no device scope", func(v url.Values) { v.Set("scope", scopeAPI) }, "invalid_scope"},
		{"no api scope", func(v url.Values) { v.Set("scope", scopeDevice+"NEGDEV") }, "invalid_scope"},
		{"unknown scope", func(v url.Values) { v.Set("scope", scopeAPI+" "+scopeDevice+"NEGDEV urn:synapse:admin:*") }, "invalid_scope"},
		{"bad device id", func(v url.Values) { v.Set("scope", scopeAPI+" "+scopeDevice+"bad/device") }, "invalid_scope"},
		{"two devices", func(v url.Values) { v.Set("scope", scopeAPI+" "+scopeDevice+"A1 "+scopeDevice+"B2") }, "invalid_scope"},
		{"token response", func(v url.Values) { v.Set("response_type", "token") }, "unsupported_response_type"},
		{"prompt none", func(v url.Values) { v.Set("prompt", "none") }, "login_required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := url.Values{}
			for k, vs := range good {
				v[k] = append([]string(nil), vs...)
			}
			tc.mod(v)
			r := b.get("/_haven/oauth2/authorize?" + v.Encode())
			loc, err := url.Parse(r.Header.Get("Location"))
			if r.Status != http.StatusSeeOther || err != nil || !strings.HasPrefix(loc.String(), cb.uri()+"?") {
				t.Fatalf("want a redirect to the client: %d %s", r.Status, r.Header.Get("Location"))
			}
			if loc.Query().Get("error") != tc.want || loc.Query().Get("state") != "st" {
				t.Fatalf("redirect %s, want error %s", loc, tc.want)
			}
		})
	}
	// Unstable scopes (what Element sends) are accepted, and the fragment
	// response mode puts the answer after #.
	v := url.Values{}
	for k, vs := range good {
		v[k] = vs
	}
	v.Set("scope", "openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:UNSTABLE1")
	v.Set("response_mode", "fragment")
	form, sealed := b.openAuthorize(s.URL + "/_haven/oauth2/authorize?" + v.Encode())
	cons := b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "oauth": {sealed}, "username": {"alice"}, "password": {"password-alice"}}).expect(t, 200, "UNSTABLE1")
	// Denied: access_denied, in the fragment.
	if loc := b.consent(cons, sealed, "deny"); !strings.HasPrefix(loc, cb.uri()+"#") || !strings.Contains(loc, "error=access_denied") || !strings.Contains(loc, "state=st") {
		t.Fatalf("deny sent the browser to %s", loc)
	}
	// A sealed request that was changed is refused.
	b.get("/_haven/signin?oauth="+url.QueryEscape(sealed[:len(sealed)-2]+"xx")).expect(t, 400, "expired or was changed")

	// Requests that stop on Haven's error page: the client or the redirect
	// URI cannot be trusted with the answer.
	for name, mod := range map[string]func(v url.Values){
		"unregistered redirect": func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:1/other") },
		"unknown client":        func(v url.Values) { v.Set("client_id", "NOSUCHCLIENT") },
		"no redirect":           func(v url.Values) { v.Del("redirect_uri") },
	} {
		v := url.Values{}
		for k, vs := range good {
			v[k] = append([]string(nil), vs...)
		}
		mod(v)
		r := b.get("/_haven/oauth2/authorize?" + v.Encode())
		if r.Status != 400 || r.Header.Get("Location") != "" {
			t.Fatalf("%s: want the error page, got %d %s", name, r.Status, r.Header.Get("Location"))
		}
	}
	// A loopback redirect URI may change its port (RFC 8252).
	v = url.Values{}
	for k, vs := range good {
		v[k] = vs
	}
	u, _ := url.Parse(cb.uri())
	v.Set("redirect_uri", "http://127.0.0.1:1"+u.Path)
	b.openAuthorize(s.URL + "/_haven/oauth2/authorize?" + v.Encode())

	// Registration errors.
	reg := func(body any) apiResp { return s.do(t, "POST", "/_haven/oauth2/registration", "", body) }
	base := func() map[string]any {
		return map[string]any{"client_uri": "https://client.example", "application_type": "web", "redirect_uris": []string{"https://client.example/cb"}}
	}
	reg(base()).expect(t, 201)
	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"garbage", "{not json", "invalid_client_metadata"},
		{"array", "[1,2]", "invalid_client_metadata"},
		{"oversized", `{"client_uri":"https://client.example","client_name":"` + strings.Repeat("x", 20<<10) + `"}`, "invalid_client_metadata"},
		{"no client_uri", map[string]any{"redirect_uris": []string{"https://client.example/cb"}}, "invalid_client_metadata"},
		{"http client_uri", map[string]any{"client_uri": "http://client.example", "redirect_uris": []string{"https://client.example/cb"}}, "invalid_client_metadata"},
		{"secret auth", func() any { m := base(); m["token_endpoint_auth_method"] = "client_secret_basic"; return m }(), "invalid_client_metadata"},
		{"bad type", func() any { m := base(); m["application_type"] = "desktop"; return m }(), "invalid_client_metadata"},
		{"no redirect", map[string]any{"client_uri": "https://client.example"}, "invalid_redirect_uri"},
		{"other host", func() any { m := base(); m["redirect_uris"] = []string{"https://evil.example/cb"}; return m }(), "invalid_redirect_uri"},
		{"fragment", func() any { m := base(); m["redirect_uris"] = []string{"https://client.example/cb#x"}; return m }(), "invalid_redirect_uri"},
		{"http redirect", func() any { m := base(); m["redirect_uris"] = []string{"http://client.example/cb"}; return m }(), "invalid_redirect_uri"},
		{"web loopback", func() any { m := base(); m["redirect_uris"] = []string{"http://127.0.0.1/cb"}; return m }(), "invalid_redirect_uri"},
		{"web custom scheme", func() any { m := base(); m["redirect_uris"] = []string{"example.client:/cb"}; return m }(), "invalid_redirect_uri"},
		{"native foreign scheme", func() any {
			m := base()
			m["application_type"] = "native"
			m["redirect_uris"] = []string{"com.evil.app:/cb"}
			return m
		}(), "invalid_redirect_uri"},
		{"native javascript", func() any {
			m := base()
			m["application_type"] = "native"
			m["redirect_uris"] = []string{"javascript:alert(1)"}
			return m
		}(), "invalid_redirect_uri"},
	} {
		r := reg(tc.body)
		if r.Status != 400 || r.str("error") != tc.want {
			t.Errorf("%s: want 400 %s: %s", tc.name, tc.want, r)
		}
	}
}

// With auth.totp: required, an account without a second factor sets one
// up before it reaches the consent page: the OAuth flow cannot go around
// the policy.
func TestOAuthTOTPRequired(t *testing.T) {
	s := startOAuthServer(t, "sqlite", "HAVEN_AUTH_TOTP=required", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key")
	s.register(t, "carol")
	cb := newCallback(t)
	cfg := oauthConfig(s, registerClient(t, s, cb.uri()), cb.uri(), "CAROLDEV")
	b := newBrowser(t, s)
	form, sealed := b.openAuthorize(cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	r := b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "oauth": {sealed}, "username": {"carol"}, "password": {"password-carol"}}).
		expect(t, 200, "Set up two-factor sign-in")
	if strings.Contains(r.Body, "Allow Sytest Client") || !strings.Contains(r.Body, `name="oauth" value="`+sealed+`"`) {
		t.Fatalf("enrol page skips the set-up or drops the request:\n%s", r.Body)
	}
	// Without finishing the set-up there is no consent.
	b.post("/_haven/oauth2/consent", url.Values{"csrf": {r.csrf(t)}, "oauth": {sealed}, "action": {"allow"}}).expect(t, 403, "expired")
}

// Signing in at a company identity provider (oidc.providers, no TOTP)
// also ends on the consent page and gives the client a code.
func TestOAuthWithCompanySignIn(t *testing.T) {
	op := startOP(t)
	s := newServer(t, "sqlite")
	oidcCB := s.URL + "/_haven/oidc/callback"
	storage.RegisterClients(storage.WebClient("haven-oauth", "haven oauth secret", oidcCB))
	cfgFile := filepath.Join(t.TempDir(), "haven.yaml")
	conf := fmt.Sprintf("server_name: localhost\npublic_baseurl: %s\noidc:\n  providers:\n    - id: company\n      name: Company account\n      issuer: %s\n      client_id: haven-oauth\n      client_secret: haven oauth secret\n", s.URL, op.issuer())
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{"--config", cfgFile}
	s.start()

	cb := newCallback(t)
	cfg := oauthConfig(s, registerClient(t, s, cb.uri()), cb.uri(), "COMPANYDEV")
	verifier := oauth2.GenerateVerifier()
	b := newBrowser(t, s)
	form, _ := b.openAuthorize(cfg.AuthCodeURL("company-state", oauth2.S256ChallengeOption(verifier)))
	m := hrefRE.FindStringSubmatch(form.Body)
	if m == nil || !strings.HasPrefix(html.UnescapeString(m[1]), "/_haven/signin/oidc/company?oauth=") {
		t.Fatalf("no provider button carrying the request:\n%s", form.Body)
	}
	r := b.get(html.UnescapeString(m[1]))
	if r.Status != http.StatusFound {
		t.Fatalf("start at the provider: %d %s", r.Status, r.Body)
	}
	next := r.Header.Get("Location")
	loc := b.abs(next, b.follow(next))
	login := b.getAbs(loc)
	id := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(login.Body)
	if id == nil {
		t.Fatalf("provider login form: %d %s", login.Status, login.Body)
	}
	resp, err := b.c.PostForm(b.abs(loc, "/login/username"), url.Values{"id": {id[1]}, "username": {"alice"}, "password": {"alice provider pw"}})
	if err != nil {
		t.Fatal(err)
	}
	p := readPage(t, resp)
	back := b.abs(loc, p.Header.Get("Location"))
	back = b.abs(back, b.follow(back))
	cons := b.callback(back).expect(t, 200, "Allow Sytest Client?")
	sealed := oauthFieldRE.FindStringSubmatch(cons.Body)[1]
	b.getAbs(b.consent(cons, sealed, "allow"))
	tok, err := cfg.Exchange(context.Background(), cb.last(t).Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if who := s.do(t, "GET", "/_matrix/client/v3/account/whoami", tok.AccessToken, nil).expect(t, 200); who.str("user_id") != "@alice:localhost" || who.str("device_id") != "COMPANYDEV" {
		t.Fatalf("whoami: %s", who)
	}
}

// TestOAuthJSSDK: matrix-js-sdk's own OAuth 2.0 client (registerClient,
// generateAuthorizationCodeGrantUrl, completeAuthorizationCodeGrant,
// performRefreshTokenGrant, revokeToken) against Haven: sytest/js/oauth.mjs.
func TestOAuthJSSDK(t *testing.T) {
	jsDir := jsSDKDir(t)
	s := startOAuthServer(t, "sqlite", "HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key")
	s.register(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "oauth.mjs", s.URL, "alice", "password-alice")
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node oauth.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// Without public_baseurl (or without the sign-in page) the OAuth 2.0 API
// is off: auth_metadata is 404 M_UNRECOGNIZED, which tells clients to use
// the login API, and the login API is as before.
func TestOAuthOff(t *testing.T) {
	s := startServer(t, "sqlite", "HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key")
	for _, path := range []string{"/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer"} {
		s.do(t, "GET", path, "", nil).expectErr(t, 404, "M_UNRECOGNIZED")
	}
	s.do(t, "POST", "/_haven/oauth2/registration", "", map[string]any{}).expectErr(t, 404, "M_UNRECOGNIZED")
	if got := flowTypes(s.do(t, "GET", "/_matrix/client/v3/login", "", nil).expect(t, 200)); got != "m.login.password,m.login.sso,m.login.token" {
		t.Fatalf("flows %s", got)
	}
	s.mu.Lock()
	logs := s.logs.String()
	s.mu.Unlock()
	if !strings.Contains(logs, "public_baseurl is empty") {
		t.Fatalf("no warning about the OAuth API being off:\n%s", logs)
	}
}
