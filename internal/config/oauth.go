package config

import (
	"net"
	"net/url"
	"strings"
)

// SignInPageOn tells whether Haven's sign-in page is served: with
// two-factor sign-in or company identity providers.
func (c Config) SignInPageOn() bool { return c.Auth.TOTPEnabled() || len(c.OIDC.Providers) > 0 }

// OAuthOn tells whether the OAuth 2.0 API is served: auth.oauth, the
// sign-in page it runs through, and public_baseurl, its issuer.
func (c Config) OAuthOn() bool {
	return c.Auth.OAuth && c.SignInPageOn() && c.PublicBaseURL != ""
}

// OAuthIssuer is the issuer of the OAuth 2.0 API: public_baseurl with a
// trailing slash.
func (c Config) OAuthIssuer() string { return strings.TrimSuffix(c.PublicBaseURL, "/") + "/" }

func (c Config) oauthWarnings() []string {
	if !c.Auth.OAuth || !c.SignInPageOn() {
		return nil
	}
	if c.PublicBaseURL == "" {
		return []string{"auth.oauth is true but public_baseurl is empty: the OAuth 2.0 API (Element X sign-in) is off until public_baseurl is set to the URL clients reach Haven at"}
	}
	if u, err := url.Parse(c.PublicBaseURL); err == nil && u.Scheme == "http" {
		h := u.Hostname()
		if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return []string{"public_baseurl is plain http: the OAuth 2.0 API (auth.oauth) would hand out tokens without TLS; use https"}
		}
	}
	return nil
}
