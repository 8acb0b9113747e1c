package main

import (
	"context"
	"errors"
	"strings"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/userapi/ldap"
)

// ldapProblems tries the company directory for check-config: connect,
// TLS, and a bind as the service account. Only when the static check of
// the ldap section passed (cfg has no problems under ldap.).
func ldapProblems(ctx context.Context, cfg config.Config, static config.Problems) config.Problems {
	if !cfg.LDAP.Enabled {
		return nil
	}
	for _, p := range static {
		if strings.HasPrefix(p.Key, "ldap.") {
			return nil
		}
	}
	d, err := ldap.New(cfg.LDAP)
	if err == nil {
		err = d.Ping(ctx)
	}
	if err == nil {
		return nil
	}
	why := err.Error()
	fix := "check that the directory runs and that this machine reaches it (firewall: 389 for ldap://, 636 for ldaps://)"
	switch {
	case strings.Contains(why, "bind as the service account"):
		fix = "check ldap.bind_dn and ldap.bind_password: the service account's DN and password as the directory knows them"
	case strings.Contains(why, "certificate"), strings.Contains(why, "TLS"):
		fix = "set ldap.ca_file to the PEM file of the certificate authority that signed the directory's certificate, and use the host name the certificate names in ldap.url"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(why, "timeout"), strings.Contains(why, "timed out"):
		fix = "the directory did not answer within ldap.timeout: check the address and the firewall"
	}
	return config.Problems{{Key: "ldap.url", Value: cfg.LDAP.URL, Why: "the directory cannot be used: " + why, Fix: fix}}
}
