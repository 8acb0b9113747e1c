package config

import (
	"net/url"
	"os"
	"strings"
	"time"
)

// LDAP checks m.login.password (and the sign-in page) against the
// company directory (OpenLDAP, Active Directory): Haven searches the
// directory for the username with the service account, then binds as the
// entry found with the password given.
type LDAP struct {
	Enabled bool `yaml:"enabled"`
	// URL is ldap://host[:389] or ldaps://host[:636].
	URL string `yaml:"url"`
	// StartTLS upgrades an ldap:// connection to TLS before anything is sent.
	StartTLS bool `yaml:"start_tls"`
	// CAFile is a PEM file of the certificate authorities trusted for the
	// directory's certificate (default: the system's).
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify accepts any certificate: for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// BindDN and BindPassword are the service account that searches the
	// directory (empty: an anonymous search).
	BindDN       string `yaml:"bind_dn"`
	BindPassword string `yaml:"bind_password"`
	// BaseDN is where the search starts (the whole subtree below it).
	BaseDN string `yaml:"base_dn"`
	// UserFilter finds one person; {username} stands for the localpart
	// typed at sign-in, escaped as RFC 4515 asks.
	UserFilter string `yaml:"user_filter"`
	// Attributes name the entry's attributes that give the Matrix localpart,
	// the display name and the email address.
	LocalpartAttribute   string `yaml:"localpart_attribute"`
	DisplayNameAttribute string `yaml:"displayname_attribute"`
	EmailAttribute       string `yaml:"email_attribute"`
	// CreateAccounts makes the Matrix account on the first successful
	// sign-in; without it only people who already have an account get in.
	CreateAccounts bool `yaml:"create_accounts"`
	// UpdateDisplayName sets the display name from the directory at every
	// sign-in (otherwise only when the account is made).
	UpdateDisplayName bool `yaml:"update_display_name"`
	// FallbackLocalPasswords lets accounts the directory does not know
	// (or all accounts with a local password while it cannot be reached)
	// sign in with their Haven password: a break-glass admin.
	FallbackLocalPasswords bool `yaml:"fallback_local_passwords"`
	// Timeout bounds connecting and each request to the directory.
	Timeout string `yaml:"timeout"`
}

// LDAP defaults.
const (
	DefaultLDAPUserFilter = "(&(objectClass=person)(uid={username}))"
	DefaultLDAPTimeout    = "5s"
)

// TimeoutDuration is Timeout as a duration (the default when unparsable).
func (l LDAP) TimeoutDuration() time.Duration {
	d, err := time.ParseDuration(l.Timeout)
	if err != nil || d <= 0 {
		d, _ = time.ParseDuration(DefaultLDAPTimeout)
	}
	return d
}

func (l LDAP) check() Problems {
	if !l.Enabled {
		return nil
	}
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: "ldap." + key, Value: value, Why: why, Fix: fix})
	}
	u, err := url.Parse(l.URL)
	switch {
	case l.URL == "":
		add("url", "", "is empty", "write the directory's address, for example ldaps://ldap.example.com:636 or ldap://dc1.example.com:389 with start_tls: true")
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
		add("url", l.URL, "is not an ldap:// or ldaps:// URL of a host", "write ldap://host:389 or ldaps://host:636 (no path, no user)")
	case u.Scheme == "ldaps" && l.StartTLS:
		add("start_tls", "true", "cannot be used with an ldaps:// URL (the connection is TLS from the start)", "set start_tls: false, or use an ldap:// URL")
	}
	if l.CAFile != "" {
		if b, err := os.ReadFile(l.CAFile); err != nil {
			add("ca_file", l.CAFile, "cannot be read: "+err.Error(), "give the path of a PEM file with the directory's certificate authority, readable by Haven's user")
		} else if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
			add("ca_file", l.CAFile, "holds no PEM certificate", "export the certificate authority as PEM (Base-64 encoded X.509, starting with -----BEGIN CERTIFICATE-----)")
		}
	}
	if l.BindDN != "" && l.BindPassword == "" {
		add("bind_password", "", "is empty while bind_dn is set (an empty password is an unauthenticated bind, which finds nothing)",
			"set the service account's password, for example through the environment variable HAVEN_LDAP_BIND_PASSWORD")
	}
	if l.BindDN == "" && l.BindPassword != "" {
		add("bind_dn", "", "is empty while bind_password is set", "write the service account's DN, for example cn=haven,ou=services,dc=example,dc=com")
	}
	if strings.TrimSpace(l.BaseDN) == "" {
		add("base_dn", "", "is empty", "write where people are found, for example ou=people,dc=example,dc=com (Active Directory: cn=Users,dc=example,dc=com)")
	}
	if why := checkLDAPFilter(l.UserFilter); why != "" {
		add("user_filter", l.UserFilter, why, "write one filter in parentheses with {username} where the typed name goes, for example "+
			DefaultLDAPUserFilter+" or, for Active Directory, (&(objectClass=user)(sAMAccountName={username}))")
	}
	for _, a := range []struct{ key, v string }{{"localpart_attribute", l.LocalpartAttribute}, {"displayname_attribute", l.DisplayNameAttribute}, {"email_attribute", l.EmailAttribute}} {
		if a.v == "" && a.key != "localpart_attribute" {
			continue
		}
		if !validLDAPAttr(a.v) {
			add(a.key, a.v, "is not an attribute name", "write a name such as uid, sAMAccountName, cn, displayName or mail")
		}
	}
	if d, err := time.ParseDuration(l.Timeout); err != nil || d < 100*time.Millisecond || d > 2*time.Minute {
		add("timeout", l.Timeout, "must be a duration between 100ms and 2m", "use "+DefaultLDAPTimeout)
	}
	return ps
}

func (l LDAP) warnings() []string {
	if !l.Enabled {
		return nil
	}
	var w []string
	if l.InsecureSkipVerify {
		w = append(w, "ldap.insecure_skip_verify is true: the directory's certificate is not checked and anyone on the path can read passwords (for tests only; set ca_file instead)")
	} else if strings.HasPrefix(l.URL, "ldap://") && !l.StartTLS && !loopbackURL(l.URL) {
		w = append(w, "ldap.url is plain ldap:// without start_tls: passwords cross the network unencrypted (use ldaps:// or start_tls: true)")
	}
	if l.BindDN == "" {
		w = append(w, "ldap.bind_dn is empty: Haven searches the directory anonymously, which most directories refuse")
	}
	return w
}

func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

// validLDAPAttr accepts an attribute description (RFC 4512: a letter then
// letters, digits and hyphens) or a numeric OID.
func validLDAPAttr(a string) bool {
	if a == "" || len(a) > 100 {
		return false
	}
	if a[0] >= '0' && a[0] <= '9' {
		return strings.Trim(a, "0123456789.") == ""
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == ';') {
			return false
		}
	}
	return true
}

// checkLDAPFilter checks the shape of a user filter (userapi/ldap compiles
// it fully at start): {username} present, parentheses balanced.
func checkLDAPFilter(f string) string {
	if !strings.Contains(f, "{username}") {
		return "has no {username}"
	}
	if !strings.HasPrefix(f, "(") || !strings.HasSuffix(f, ")") {
		return "is not enclosed in parentheses"
	}
	depth := 0
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return "has unbalanced parentheses"
			}
		case '\\':
			i += 2
		}
		if depth == 0 && i < len(f)-1 {
			return "is more than one filter (wrap them in (&...) or (|...))"
		}
	}
	if depth != 0 {
		return "has unbalanced parentheses"
	}
	return ""
}
