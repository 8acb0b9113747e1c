package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLDAPCheck(t *testing.T) {
	pem := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pem, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := func() LDAP {
		l := Default().LDAP
		l.Enabled = true
		l.URL = "ldaps://dc1.example.com:636"
		l.BindDN = "cn=haven,ou=services,dc=example,dc=com"
		l.BindPassword = "secret"
		l.BaseDN = "dc=example,dc=com"
		return l
	}
	cases := []struct {
		name string
		mod  func(l *LDAP)
		key  string
	}{
		{"ok", func(l *LDAP) {}, ""},
		{"off with nothing set", func(l *LDAP) { *l = Default().LDAP }, ""},
		{"active directory", func(l *LDAP) {
			l.UserFilter = "(&(objectClass=user)(sAMAccountName={username}))"
			l.LocalpartAttribute, l.DisplayNameAttribute = "sAMAccountName", "displayName"
			l.CAFile = pem
		}, ""},
		{"starttls", func(l *LDAP) { l.URL = "ldap://dc1.example.com"; l.StartTLS = true }, ""},
		{"no url", func(l *LDAP) { l.URL = "" }, "ldap.url"},
		{"http url", func(l *LDAP) { l.URL = "https://dc1.example.com" }, "ldap.url"},
		{"url with path", func(l *LDAP) { l.URL = "ldap://dc1/dc=example" }, "ldap.url"},
		{"ldaps and starttls", func(l *LDAP) { l.StartTLS = true }, "ldap.start_tls"},
		{"missing ca file", func(l *LDAP) { l.CAFile = "/nonexistent/ca.pem" }, "ldap.ca_file"},
		{"not a pem", func(l *LDAP) { l.CAFile = "/etc/hostname" }, "ldap.ca_file"},
		{"dn without password", func(l *LDAP) { l.BindPassword = "" }, "ldap.bind_password"},
		{"password without dn", func(l *LDAP) { l.BindDN = "" }, "ldap.bind_dn"},
		{"no base", func(l *LDAP) { l.BaseDN = " " }, "ldap.base_dn"},
		{"filter without placeholder", func(l *LDAP) { l.UserFilter = "(uid=alice)" }, "ldap.user_filter"},
		{"filter unbalanced", func(l *LDAP) { l.UserFilter = "(&(uid={username})" }, "ldap.user_filter"},
		{"two filters", func(l *LDAP) { l.UserFilter = "(uid={username})(objectClass=person)" }, "ldap.user_filter"},
		{"bare filter", func(l *LDAP) { l.UserFilter = "uid={username}" }, "ldap.user_filter"},
		{"bad attribute", func(l *LDAP) { l.LocalpartAttribute = "uid)(x" }, "ldap.localpart_attribute"},
		{"no localpart attribute", func(l *LDAP) { l.LocalpartAttribute = "" }, "ldap.localpart_attribute"},
		{"bad timeout", func(l *LDAP) { l.Timeout = "forever" }, "ldap.timeout"},
		{"timeout too long", func(l *LDAP) { l.Timeout = "10m" }, "ldap.timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := good()
			tc.mod(&l)
			ps := l.check()
			if tc.key == "" {
				if len(ps) != 0 {
					t.Fatalf("problems: %v", ps)
				}
				return
			}
			if len(ps) != 1 || ps[0].Key != tc.key || ps[0].Fix == "" {
				t.Fatalf("problems = %v, want one for %s", ps, tc.key)
			}
			if strings.Contains(ps.Error(), "secret") {
				t.Fatalf("password printed: %s", ps.Error())
			}
		})
	}
}

func TestLDAPWarnings(t *testing.T) {
	l := Default().LDAP
	l.Enabled, l.URL, l.BaseDN = true, "ldap://dc1.example.com", "dc=example,dc=com"
	w := strings.Join(l.warnings(), "\n")
	if !strings.Contains(w, "unencrypted") || !strings.Contains(w, "anonymously") {
		t.Fatalf("warnings = %s", w)
	}
	l.InsecureSkipVerify = true
	if w := strings.Join(l.warnings(), "\n"); !strings.Contains(w, "tests only") {
		t.Fatalf("warnings = %s", w)
	}
}

func TestLDAPFromEnvironment(t *testing.T) {
	cfg, ps := Load("", []string{"HAVEN_LDAP_ENABLED=true", "HAVEN_LDAP_URL=ldaps://dc1.example.com",
		"HAVEN_LDAP_BIND_DN=cn=haven,dc=example,dc=com", "HAVEN_LDAP_BIND_PASSWORD=pw", "HAVEN_LDAP_BASE_DN=dc=example,dc=com",
		"HAVEN_LDAP_CREATE_ACCOUNTS=false"})
	for _, p := range ps {
		if strings.HasPrefix(p.Key, "ldap") {
			t.Fatalf("problem: %v", p)
		}
	}
	if !cfg.LDAP.Enabled || cfg.LDAP.URL != "ldaps://dc1.example.com" || cfg.LDAP.CreateAccounts || cfg.LDAP.UserFilter != DefaultLDAPUserFilter {
		t.Fatalf("ldap = %+v", cfg.LDAP)
	}
}
