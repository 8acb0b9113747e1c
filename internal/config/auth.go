package config

import (
	"net/url"
	"strings"
)

// TOTP policies (auth.totp).
const (
	TOTPOff      = "off"
	TOTPOptional = "optional"
	TOTPRequired = "required"
)

// Auth configures how people sign in beyond a plain password.
type Auth struct {
	// TOTP is the two-factor policy: off (the default), optional (users
	// may set up a code; admins must when TOTPAdmins) or required (every
	// local user must). With a policy other than off, Haven's sign-in page
	// serves m.login.sso and m.login.token, and accounts with a second
	// factor can no longer use m.login.password.
	TOTP string `yaml:"totp"`
	// TOTPAdmins makes the second factor required for server admins when
	// TOTP is optional (default true).
	TOTPAdmins bool `yaml:"totp_required_for_admins"`
	// TOTPEncryptionKey encrypts the TOTP secrets at rest (any long random
	// string; keep it outside backups of the database). Changing it makes
	// the stored secrets unreadable.
	TOTPEncryptionKey string `yaml:"totp_encryption_key"`
	// SSOClientOrigins are the client origins (scheme://host[:port]) the
	// sign-in page sends login tokens to without asking; for any other
	// redirectUrl it shows the site and asks the user first.
	SSOClientOrigins List `yaml:"sso_client_origins"`
	// OAuth serves the Matrix OAuth 2.0 API (spec v1.15: auth_metadata,
	// client registration, authorization code grant, revocation) in front
	// of the sign-in page, when the page is on and public_baseurl is set
	// (default true). Element X signs in through it.
	OAuth bool `yaml:"oauth"`
}

// TOTPEnabled tells whether the two-factor sign-in is on.
func (a Auth) TOTPEnabled() bool { return a.TOTP == TOTPOptional || a.TOTP == TOTPRequired }

func (a Auth) check() Problems {
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: key, Value: value, Why: why, Fix: fix})
	}
	switch a.TOTP {
	case TOTPOff, TOTPOptional, TOTPRequired:
	default:
		add("auth.totp", a.TOTP, "must be off, optional or required",
			"use optional to let users set up a second factor (admins must, unless auth.totp_required_for_admins: false), required to make everyone use one, or off")
	}
	if a.TOTPEnabled() && a.TOTPEncryptionKey != "" && len(a.TOTPEncryptionKey) < 16 {
		add("auth.totp_encryption_key", "(hidden)", "is shorter than 16 characters",
			"use a long random string, for example the output of `openssl rand -hex 32`")
	}
	for _, o := range a.SSOClientOrigins.Items() {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || strings.Contains(u.Host, "*") {
			add("auth.sso_client_origins", o, "is not an origin (scheme://host[:port], no path, no wildcard)",
				"write the address of the web client as the browser shows it, for example https://element.example.com")
		}
	}
	return ps
}

func (a Auth) warnings() []string {
	if a.TOTPEnabled() && a.TOTPEncryptionKey == "" {
		return []string{"auth.totp is " + a.TOTP + " but auth.totp_encryption_key is empty: TOTP secrets are stored unencrypted in the database (set a long random key)"}
	}
	return nil
}
