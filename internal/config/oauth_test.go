package config

import (
	"strings"
	"testing"
)

func TestOAuthOn(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		on   bool
		warn string
	}{
		{"default: no sign-in page", func(*Config) {}, false, ""},
		{"totp without public_baseurl", func(c *Config) { c.Auth.TOTP = TOTPOptional }, false, "public_baseurl is empty"},
		{"totp with https", func(c *Config) { c.Auth.TOTP = TOTPOptional; c.PublicBaseURL = "https://matrix.example.com" }, true, ""},
		{"totp on loopback http", func(c *Config) { c.Auth.TOTP = TOTPRequired; c.PublicBaseURL = "http://127.0.0.1:8008" }, true, ""},
		{"totp on plain http", func(c *Config) { c.Auth.TOTP = TOTPRequired; c.PublicBaseURL = "http://matrix.example.com" }, true, "plain http"},
		{"turned off", func(c *Config) {
			c.Auth.TOTP = TOTPOptional
			c.PublicBaseURL = "https://matrix.example.com"
			c.Auth.OAuth = false
		}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mod(&c)
			if got := c.OAuthOn(); got != tc.on {
				t.Fatalf("OAuthOn %v, want %v", got, tc.on)
			}
			w := strings.Join(c.oauthWarnings(), "\n")
			if (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
				t.Fatalf("warnings %q, want %q", w, tc.warn)
			}
		})
	}
	if got := (Config{PublicBaseURL: "https://m.example.com"}).OAuthIssuer(); got != "https://m.example.com/" {
		t.Fatalf("issuer %s", got)
	}
}
