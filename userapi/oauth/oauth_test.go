package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestCheckRegistration(t *testing.T) {
	web := `"client_uri":"https://app.example.com","application_type":"web"`
	native := `"client_uri":"https://example.com","application_type":"native"`
	for _, tc := range []struct {
		name, body, want string
	}{
		{"web", `{` + web + `,"redirect_uris":["https://app.example.com/cb","https://x.app.example.com/cb?a=1"]}`, ""},
		{"default type is web", `{"client_uri":"https://app.example.com","redirect_uris":["https://app.example.com/cb"]}`, ""},
		{"native scheme", `{` + native + `,"redirect_uris":["com.example.app:/callback","com.example:/cb"]}`, ""},
		{"native loopback", `{` + native + `,"redirect_uris":["http://127.0.0.1/cb","http://localhost:1234/cb","http://[::1]/cb"]}`, ""},
		{"dev web on localhost", `{"client_uri":"http://localhost:8080","redirect_uris":["http://localhost:8080/cb"]}`, ""},
		{"Element X", `{"client_name":"Element X","client_uri":"https://element.io","application_type":"native","token_endpoint_auth_method":"none",` +
			`"grant_types":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:device_code"],` +
			`"redirect_uris":["io.element.elementx:/oidc/login","io.element.android:/","https://element.io/oidc/login"],` +
			`"logo_uri":"https://element.io/mobile-icon.png","policy_uri":"https://element.io/privacy","tos_uri":"https://element.io/acceptable-use-policy-terms"}`, ""},
		{"not JSON", `{`, ErrInvalidClientMetadata},
		{"trailing data", `{` + web + `,"redirect_uris":["https://app.example.com/cb"]} {}`, ErrInvalidClientMetadata},
		{"wrong type", `{"client_uri":5}`, ErrInvalidClientMetadata},
		{"NUL", "{\"client_uri\":\"https://a.example\x00\"}", ErrInvalidClientMetadata},
		{"http client_uri", `{"client_uri":"http://app.example.com","redirect_uris":["https://app.example.com/cb"]}`, ErrInvalidClientMetadata},
		{"userinfo client_uri", `{"client_uri":"https://u:p@app.example.com","redirect_uris":["https://app.example.com/cb"]}`, ErrInvalidClientMetadata},
		{"secret", `{` + web + `,"token_endpoint_auth_method":"client_secret_post","redirect_uris":["https://app.example.com/cb"]}`, ErrInvalidClientMetadata},
		{"implicit", `{` + web + `,"response_types":["token"],"redirect_uris":["https://app.example.com/cb"]}`, ErrInvalidClientMetadata},
		{"no code grant", `{` + web + `,"grant_types":["refresh_token"],"redirect_uris":["https://app.example.com/cb"]}`, ErrInvalidClientMetadata},
		{"no redirects", `{` + web + `}`, ErrInvalidRedirectURI},
		{"parent host", `{` + web + `,"redirect_uris":["https://example.com/cb"]}`, ErrInvalidRedirectURI},
		{"look-alike host", `{` + web + `,"redirect_uris":["https://evilapp.example.com/cb"]}`, ErrInvalidRedirectURI},
		{"fragment", `{` + web + `,"redirect_uris":["https://app.example.com/cb#f"]}`, ErrInvalidRedirectURI},
		{"web loopback", `{` + web + `,"redirect_uris":["http://127.0.0.1/cb"]}`, ErrInvalidRedirectURI},
		{"web scheme", `{` + web + `,"redirect_uris":["com.example.app:/cb"]}`, ErrInvalidRedirectURI},
		{"scheme with authority", `{` + native + `,"redirect_uris":["com.example.app://cb"]}`, ErrInvalidRedirectURI},
		{"scheme without dot", `{` + native + `,"redirect_uris":["myapp:/cb"]}`, ErrInvalidRedirectURI},
		{"foreign scheme", `{` + native + `,"redirect_uris":["org.other.app:/cb"]}`, ErrInvalidRedirectURI},
		{"http elsewhere", `{` + native + `,"redirect_uris":["http://example.com/cb"]}`, ErrInvalidRedirectURI},
		{"too many", `{` + web + `,"redirect_uris":[` + strings.Repeat(`"https://app.example.com/cb",`, 10) + `"https://app.example.com/cb"]}`, ErrInvalidRedirectURI},
		{"too large", `{` + web + `,"client_name":"` + strings.Repeat("x", MaxRegistrationBytes) + `"}`, ErrInvalidClientMetadata},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkRegistration([]byte(tc.body))
			if got := codeOf(err); got != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseScope(t *testing.T) {
	for _, tc := range []struct {
		scope, device, want string
	}{
		{"urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ", "ABCDEFGHIJ", ""},
		{"openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:a-b.c_d~e", "a-b.c_d~e", ""},
		{"urn:matrix:client:api:* urn:matrix:client:device:X urn:matrix:client:device:X", "X", ""},
		{"urn:matrix:client:api:*", "", ErrInvalidScope},
		{"urn:matrix:client:device:X", "", ErrInvalidScope},
		{"urn:matrix:client:api:* urn:matrix:client:device:", "", ErrInvalidScope},
		{"urn:matrix:client:api:* urn:matrix:client:device:X urn:matrix:client:device:Y", "", ErrInvalidScope},
		{"urn:matrix:client:api:* urn:matrix:client:device:a/b", "", ErrInvalidScope},
		{"urn:matrix:client:api:* urn:matrix:client:device:X urn:synapse:admin:*", "", ErrInvalidScope},
		{"", "", ErrInvalidScope},
	} {
		dev, err := ParseScope(tc.scope)
		if codeOf(err) != tc.want || dev != tc.device {
			t.Errorf("%q: device %q err %v, want %q %q", tc.scope, dev, err, tc.device, tc.want)
		}
	}
}

func TestRedirects(t *testing.T) {
	c := Client{RedirectURIs: []string{"http://127.0.0.1:5000/cb", "https://app.example.com/cb?x=1", "com.example.app:/cb"}}
	for uri, want := range map[string]bool{
		"http://127.0.0.1:5000/cb":           true,
		"http://127.0.0.1:6000/cb":           true, // loopback: any port
		"http://127.0.0.1/cb":                true,
		"http://127.0.0.1:6000/other":        false,
		"http://localhost:5000/cb":           false,
		"https://app.example.com/cb?x=1":     true,
		"https://app.example.com/cb":         false,
		"https://app.example.com:444/cb?x=1": false,
		"com.example.app:/cb":                true,
		"com.example.app:/cb2":               false,
	} {
		if got := c.RedirectAllowed(uri); got != want {
			t.Errorf("RedirectAllowed(%s) = %v", uri, got)
		}
	}
	req := AuthRequest{RedirectURI: "https://app.example.com/cb?x=1", State: "s t", ResponseMode: "query"}
	if got := CodeRedirect(req, "C"); got != "https://app.example.com/cb?code=C&state=s+t&x=1" {
		t.Errorf("query redirect %s", got)
	}
	req.ResponseMode = "fragment"
	if got := ErrorRedirect(req, &Error{Code: ErrAccessDenied, Description: "no"}); got != "https://app.example.com/cb?x=1#error=access_denied&error_description=no&state=s+t" {
		t.Errorf("fragment redirect %s", got)
	}
}

func TestGrants(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Unix(1800000000, 0)
		clock := func() time.Time { return now }
		users, err := userapi.New(ctx, db, nil, userapi.Options{ServerName: "test.local", PasswordHashCost: 4, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		alice, err := users.CreateAccount(ctx, "alice", "pw", false, "test")
		if err != nil {
			t.Fatal(err)
		}
		s := New(db, users, Options{Now: clock})
		c, err := s.Register(ctx, []byte(`{"client_name":"App","client_uri":"https://app.example.com","redirect_uris":["https://app.example.com/cb"]}`))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.Client(ctx, c.ID); err != nil || !ok || got.Name() != "App" {
			t.Fatalf("client %+v %v %v", got, ok, err)
		}
		const verifier = "0123456789012345678901234567890123456789abc"
		q := url.Values{"client_id": {c.ID}, "redirect_uri": {"https://app.example.com/cb"}, "response_type": {"code"},
			"scope": {ScopeAPI + " " + ScopeDevice + "DEV1"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}, "state": {"xyz"}}
		req, _, err := s.Authorize(ctx, q)
		if err != nil || req.DeviceID != "DEV1" || req.ResponseMode != "query" {
			t.Fatalf("authorize %+v %v", req, err)
		}
		exchange := func(code string) (Token, error) {
			return s.Grant(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {c.ID},
				"redirect_uri": {"https://app.example.com/cb"}, "code_verifier": {verifier}}, "127.0.0.1")
		}
		// An expired code.
		code, err := s.IssueCode(ctx, req, alice)
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(CodeLifetime + time.Second)
		if _, err := exchange(code); codeOf(err) != ErrInvalidGrant {
			t.Fatalf("expired code: %v", err)
		}
		// A good one, then used again.
		code, _ = s.IssueCode(ctx, req, alice)
		tok, err := exchange(code)
		if err != nil || tok.ExpiresIn != userapi.DefaultAccessTokenLifetime/1000 || tok.RefreshToken == "" {
			t.Fatalf("exchange %+v %v", tok, err)
		}
		raw, _ := json.Marshal(tok)
		if !strings.Contains(string(raw), `"token_type":"Bearer"`) {
			t.Fatalf("token body %s", raw)
		}
		d, err := users.Authenticate(ctx, tok.AccessToken)
		if err != nil || d.UserID != alice || d.DeviceID != "DEV1" {
			t.Fatalf("device %+v %v", d, err)
		}
		// A second use of the code is refused and ends the session it made.
		if _, err := exchange(code); codeOf(err) != ErrInvalidGrant {
			t.Fatalf("reused code: %v", err)
		}
		if _, err := users.Authenticate(ctx, tok.AccessToken); err == nil {
			t.Fatal("the session of a reused code still works")
		}
		code, _ = s.IssueCode(ctx, req, alice)
		if tok, err = exchange(code); err != nil {
			t.Fatal(err)
		}
		// A code refused (wrong verifier) is gone; trying it again does not
		// end the device's current session.
		code, _ = s.IssueCode(ctx, req, alice)
		if _, err := s.Grant(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {c.ID},
			"redirect_uri": {"https://app.example.com/cb"}, "code_verifier": {verifier + "x"}}, ""); codeOf(err) != ErrInvalidGrant {
			t.Fatalf("wrong verifier: %v", err)
		}
		if _, err := exchange(code); codeOf(err) != ErrInvalidGrant {
			t.Fatalf("refused code again: %v", err)
		}
		if _, err := users.Authenticate(ctx, tok.AccessToken); err != nil {
			t.Fatalf("session ended by a refused code: %v", err)
		}
		// Refresh, then revoke the new refresh token: the device is gone.
		ref, err := s.Grant(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {c.ID}}, "")
		if err != nil || ref.Scope != req.Scope {
			t.Fatalf("refresh %+v %v", ref, err)
		}
		if err := s.Revoke(ctx, url.Values{"token": {ref.RefreshToken}}); err != nil {
			t.Fatal(err)
		}
		if _, err := users.Authenticate(ctx, ref.AccessToken); err == nil {
			t.Fatal("access token still works after revocation")
		}
		if err := s.Revoke(ctx, url.Values{"token": {"unknown"}}); err != nil {
			t.Fatalf("unknown token: %v", err)
		}
		if err := s.Revoke(ctx, url.Values{}); codeOf(err) != ErrInvalidRequest {
			t.Fatalf("no token: %v", err)
		}
	})
}
