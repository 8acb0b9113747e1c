package config

import (
	"strings"
	"testing"
)

func TestAuthCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Auth)
		want string // key of the problem, "" for none
	}{
		{"default", func(*Auth) {}, ""},
		{"optional", func(a *Auth) { a.TOTP = TOTPOptional }, ""},
		{"required with origins", func(a *Auth) {
			a.TOTP = TOTPRequired
			a.SSOClientOrigins = "https://element.example.com, http://localhost:8080"
		}, ""},
		{"unknown policy", func(a *Auth) { a.TOTP = "yes" }, "auth.totp"},
		{"short key", func(a *Auth) { a.TOTP = TOTPOptional; a.TOTPEncryptionKey = "short" }, "auth.totp_encryption_key"},
		{"origin with path", func(a *Auth) { a.SSOClientOrigins = "https://element.example.com/app" }, "auth.sso_client_origins"},
		{"origin wildcard", func(a *Auth) { a.SSOClientOrigins = "https://*.example.com" }, "auth.sso_client_origins"},
		{"not an origin", func(a *Auth) { a.SSOClientOrigins = "element.example.com" }, "auth.sso_client_origins"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mod(&c.Auth)
			var keys []string
			for _, p := range c.Check() {
				if strings.HasPrefix(p.Key, "auth.") {
					keys = append(keys, p.Key)
					if p.Fix == "" {
						t.Errorf("problem without a fix: %v", p)
					}
				}
			}
			if got := strings.Join(keys, ","); got != tc.want {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}
	c := Default()
	c.Auth.TOTP = TOTPOptional
	if w := strings.Join(c.Warnings(), "\n"); !strings.Contains(w, "totp_encryption_key") {
		t.Fatalf("no warning about unencrypted secrets: %s", w)
	}
}
