package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
)

// OIDC is sign-in through the company's identity providers (Keycloak,
// Entra ID, Google, Dex …) with OpenID Connect: each provider is a button
// on Haven's sign-in page and an identity provider of m.login.sso.
type OIDC struct {
	Providers []OIDCProvider `yaml:"providers"`
}

// OIDCProvider is one identity provider.
type OIDCProvider struct {
	// ID names the provider in URLs and in the account links (a-z, 0-9,
	// '-', '_'); changing it unlinks every account.
	ID string `yaml:"id"`
	// Name is shown on the button (default: the id).
	Name string `yaml:"name"`
	// Issuer is the provider's issuer URL; its
	// /.well-known/openid-configuration is read at start.
	Issuer       string `yaml:"issuer"`
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	// Scopes asked for (default openid, profile, email).
	Scopes List `yaml:"scopes"`
	// The claims that give the Matrix localpart, the display name and the
	// email address (from the ID token, else from the userinfo endpoint).
	LocalpartClaim   string `yaml:"localpart_claim"`
	DisplayNameClaim string `yaml:"displayname_claim"`
	EmailClaim       string `yaml:"email_claim"`
	// CreateAccounts makes the Matrix account at the first sign-in;
	// without it only people who already have a linked account get in.
	CreateAccounts bool `yaml:"create_accounts"`
	// AllowExistingUsers links an existing account, not yet linked, to the
	// person whose localpart claim names it (on their first sign-in).
	AllowExistingUsers bool `yaml:"allow_existing_users"`
	// CAFile is a PEM file of the certificate authorities trusted for the
	// provider (default: the system's).
	CAFile string `yaml:"ca_file"`
}

// OIDC provider defaults.
const (
	DefaultOIDCScopes           = "openid,profile,email"
	DefaultOIDCLocalpartClaim   = "preferred_username"
	DefaultOIDCDisplayNameClaim = "name"
	DefaultOIDCEmailClaim       = "email"
)

func (p *OIDCProvider) setDefaults() {
	p.Scopes = DefaultOIDCScopes
	p.LocalpartClaim = DefaultOIDCLocalpartClaim
	p.DisplayNameClaim = DefaultOIDCDisplayNameClaim
	p.EmailClaim = DefaultOIDCEmailClaim
	p.CreateAccounts = true
}

// DisplayName is the button's text.
func (p OIDCProvider) DisplayName() string {
	if p.Name != "" {
		return p.Name
	}
	return p.ID
}

var oidcIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

func (o OIDC) check(publicBaseURL string) Problems {
	var ps Problems
	seen := map[string]bool{}
	for i, p := range o.Providers {
		prefix := fmt.Sprintf("oidc.providers[%d].", i)
		add := func(key, value, why, fix string) {
			ps = append(ps, Problem{Key: prefix + key, Value: value, Why: why, Fix: fix})
		}
		switch {
		case !oidcIDPattern.MatchString(p.ID):
			add("id", p.ID, "must be 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit", "write a short name such as keycloak, entra or google")
		case seen[p.ID]:
			add("id", p.ID, "is used by another provider", "give every provider its own id")
		}
		seen[p.ID] = true
		u, err := url.Parse(p.Issuer)
		switch {
		case p.Issuer == "":
			add("issuer", "", "is empty", "write the provider's issuer URL, for example https://sso.example.com/realms/company (Keycloak), https://login.microsoftonline.com/TENANT-ID/v2.0 (Entra ID) or https://accounts.google.com")
		case err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			add("issuer", p.Issuer, "is not a URL of a host", "write the issuer exactly as the provider's /.well-known/openid-configuration names it")
		case u.Scheme == "http" && !loopbackURL(p.Issuer):
			add("issuer", p.Issuer, "is plain http://: anyone on the path could sign in as anyone", "use the provider's https:// address")
		case u.Scheme != "https" && u.Scheme != "http":
			add("issuer", p.Issuer, "is not an https:// URL", "write the provider's https:// issuer URL")
		}
		if strings.TrimSpace(p.ClientID) == "" {
			add("client_id", "", "is empty", "register Haven as a client (application) at the provider and write its client ID here")
		}
		if !slices.Contains(p.Scopes.Items(), "openid") {
			add("scopes", string(p.Scopes), "does not include openid", "add openid (the default is openid, profile, email)")
		}
		for _, c := range []struct{ key, v string }{{"localpart_claim", p.LocalpartClaim}, {"displayname_claim", p.DisplayNameClaim}, {"email_claim", p.EmailClaim}} {
			if c.v == "" && c.key != "localpart_claim" {
				continue
			}
			if strings.TrimSpace(c.v) == "" || len(c.v) > 100 || strings.ContainsAny(c.v, " \t\"'") {
				add(c.key, c.v, "is not a claim name", "write a claim the provider puts in the ID token or userinfo, such as preferred_username, email, name or upn")
			}
		}
		if p.CAFile != "" {
			if b, err := os.ReadFile(p.CAFile); err != nil {
				add("ca_file", p.CAFile, "cannot be read: "+err.Error(), "give the path of a PEM file with the provider's certificate authority, readable by Haven's user")
			} else if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
				add("ca_file", p.CAFile, "holds no PEM certificate", "export the certificate authority as PEM (Base-64 encoded X.509, starting with -----BEGIN CERTIFICATE-----)")
			}
		}
	}
	if len(o.Providers) > 0 && publicBaseURL == "" {
		ps = append(ps, Problem{Key: "public_baseurl", Value: "", Why: "is empty while oidc.providers are set (the providers send people back to it)",
			Fix: "write the URL people reach Haven at, for example https://matrix.example.com, and register https://matrix.example.com/_haven/oidc/callback at each provider"})
	}
	return ps
}

func (o OIDC) warnings() []string {
	var w []string
	for _, p := range o.Providers {
		if p.AllowExistingUsers {
			w = append(w, "oidc provider "+p.ID+": allow_existing_users links existing accounts by the "+p.LocalpartClaim+
				" claim; make sure people cannot choose or change that claim at the provider, or one could take another's account")
		}
	}
	return w
}
