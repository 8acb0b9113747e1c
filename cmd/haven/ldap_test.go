package main

import (
	"context"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/testldap"
)

// TestCheckConfigBindsToDirectory: check-config binds with the service
// account and names the key and the fix when that fails, never the password.
func TestCheckConfigBindsToDirectory(t *testing.T) {
	srv := testldap.Start(t)
	cfg := config.Default()
	cfg.LDAP.Enabled = true
	cfg.LDAP.URL = srv.URL
	cfg.LDAP.StartTLS = true
	cfg.LDAP.CAFile = srv.CA.File()
	cfg.LDAP.BindDN = testldap.ServiceDN
	cfg.LDAP.BindPassword = testldap.ServicePass
	cfg.LDAP.BaseDN = testldap.Base
	ctx := context.Background()
	if ps := ldapProblems(ctx, cfg, cfg.Check()); len(ps) != 0 {
		t.Fatalf("working directory: %v", ps)
	}
	cases := []struct {
		name string
		mod  func(c *config.LDAP)
		want string
	}{
		{"wrong password", func(c *config.LDAP) { c.BindPassword = "wrong-secret-xyz" }, "bind_password"},
		{"unknown CA", func(c *config.LDAP) { c.CAFile = "" }, "ca_file"},
		{"nothing listening", func(c *config.LDAP) { c.URL = "ldap://127.0.0.1:1" }, "firewall"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mod(&c.LDAP)
			ps := ldapProblems(ctx, c, c.Check())
			if len(ps) != 1 || !strings.Contains(ps[0].Fix, tc.want) {
				t.Fatalf("problems = %v, want a fix naming %s", ps, tc.want)
			}
			if strings.Contains(ps.Error(), "wrong-secret-xyz") || strings.Contains(ps.Error(), testldap.ServicePass) {
				t.Fatalf("a password is printed: %s", ps.Error())
			}
		})
	}
}
