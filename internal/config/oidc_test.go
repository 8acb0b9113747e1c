package config

import (
	"strings"
	"testing"
)

func TestOIDCProviders(t *testing.T) {
	cfg, probs := Load(writeFile(t, `public_baseurl: https://matrix.example.com
oidc:
  providers:
    - id: keycloak
      name: Company account
      issuer: https://sso.example.com/realms/company
      client_id: haven
      client_secret: s3cret
`), nil)
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	p := cfg.OIDC.Providers[0]
	if p.Scopes != DefaultOIDCScopes || p.LocalpartClaim != "preferred_username" || p.DisplayNameClaim != "name" || !p.CreateAccounts || p.AllowExistingUsers {
		t.Fatalf("defaults: %+v", p)
	}
	if strings.Contains(cfg.Marshal(), "s3cret") {
		t.Fatal("Marshal shows the client secret")
	}

	_, probs = Load(writeFile(t, `oidc:
  providers:
    - id: Bad Id
      issuer: http://sso.example.com
      scopes: [profile]
      ca_file: /nonexistent/ca.pem
      unknown_key: 1
    - id: ok
      issuer: https://sso.example.com
      client_id: a
    - id: ok
      issuer: ""
      client_id: b
`), nil)
	text := probs.Error()
	for _, want := range []string{"oidc.providers[0].id", "oidc.providers[0].issuer", "oidc.providers[0].client_id", "oidc.providers[0].scopes",
		"oidc.providers[0].ca_file", "oidc.providers[0].unknown_key", "oidc.providers[2].id", "oidc.providers[2].issuer", "public_baseurl"} {
		if !strings.Contains(text, want) {
			t.Errorf("no problem for %s in:\n%s", want, text)
		}
	}
}
