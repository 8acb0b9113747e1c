// Package ldap checks passwords against a company directory (OpenLDAP,
// Active Directory) for userapi (its Directory interface): search then
// bind. Each check opens its own connection: it binds as the service
// account (config ldap.bind_dn), searches base_dn for the one entry the
// user filter finds, with the username escaped as RFC 4515 asks, then binds
// as that entry with the password given. A password is never sent when it
// is empty (an empty simple bind is an unauthenticated bind, which
// directories answer with success). TLS: ldaps:// or StartTLS, checked
// against ca_file or the system's authorities.
//
// No tables, no goroutines beyond the client library's reader of each
// connection (closed before Authenticate returns), no locks.
package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	ld "github.com/go-ldap/ldap/v3"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/userapi"
)

// Directory is a company directory as configured in config ldap.
type Directory struct {
	cfg     config.LDAP
	tls     *tls.Config
	timeout time.Duration
	attrs   []string
}

// New prepares a directory client; it connects only when asked.
func New(cfg config.LDAP) (*Directory, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		return nil, fmt.Errorf("ldap.url %q is not an ldap:// or ldaps:// URL", cfg.URL)
	}
	if !strings.Contains(cfg.UserFilter, "{username}") {
		return nil, fmt.Errorf("ldap.user_filter %q has no {username}", cfg.UserFilter)
	}
	if _, err := ld.CompileFilter(userFilter(cfg.UserFilter, "x")); err != nil {
		return nil, fmt.Errorf("ldap.user_filter %q: %w", cfg.UserFilter, err)
	}
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // documented as for tests only
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ldap.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ldap.ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	attrs := []string{cfg.LocalpartAttribute}
	for _, a := range []string{cfg.DisplayNameAttribute, cfg.EmailAttribute} {
		if a != "" {
			attrs = append(attrs, a)
		}
	}
	return &Directory{cfg: cfg, tls: tc, timeout: cfg.TimeoutDuration(), attrs: attrs}, nil
}

// userFilter puts the escaped username into the filter template.
func userFilter(template, username string) string {
	return strings.ReplaceAll(template, "{username}", ld.EscapeFilter(username))
}

// unavailable wraps a failure to reach or search the directory.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", userapi.ErrDirectoryUnavailable, op, err)
}

// connect dials the directory, upgrades to TLS when configured and binds
// as the service account. The connection is closed when ctx ends.
func (d *Directory) connect(ctx context.Context) (*ld.Conn, func(), error) {
	dialer := &net.Dialer{Timeout: d.timeout}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d.timeout {
		dialer.Deadline = dl
	}
	conn, err := ld.DialURL(d.cfg.URL, ld.DialWithDialer(dialer), ld.DialWithTLSConfig(d.tls))
	if err != nil {
		return nil, nil, unavailable("connect to "+d.cfg.URL, err)
	}
	conn.SetTimeout(d.timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	closeFn := func() {
		stop()
		conn.Close()
	}
	if d.cfg.StartTLS {
		if err := conn.StartTLS(d.tls); err != nil {
			closeFn()
			return nil, nil, unavailable("StartTLS with "+d.cfg.URL, err)
		}
	}
	if d.cfg.BindDN != "" {
		if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			closeFn()
			return nil, nil, unavailable("bind as the service account "+d.cfg.BindDN, err)
		}
	}
	return conn, closeFn, nil
}

// Ping connects and binds as the service account (haven check-config).
func (d *Directory) Ping(ctx context.Context) error {
	_, closeFn, err := d.connect(ctx)
	if err != nil {
		return err
	}
	closeFn()
	return nil
}

// Authenticate finds username in the directory and checks password by
// binding as the entry found (userapi.Directory).
func (d *Directory) Authenticate(ctx context.Context, username, password string) (userapi.DirectoryEntry, error) {
	if password == "" {
		return userapi.DirectoryEntry{}, fmt.Errorf("%w: empty password", userapi.ErrDirectoryRefused)
	}
	conn, closeFn, err := d.connect(ctx)
	if err != nil {
		return userapi.DirectoryEntry{}, err
	}
	defer closeFn()
	secs := int(d.timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	req := ld.NewSearchRequest(d.cfg.BaseDN, ld.ScopeWholeSubtree, ld.NeverDerefAliases, 2, secs, false,
		userFilter(d.cfg.UserFilter, username), d.attrs, nil)
	res, err := conn.Search(req)
	if err != nil && !ld.IsErrorWithCode(err, ld.LDAPResultSizeLimitExceeded) {
		if ld.IsErrorWithCode(err, ld.LDAPResultNoSuchObject) {
			return userapi.DirectoryEntry{}, unavailable("search "+d.cfg.BaseDN+" (base_dn does not exist)", err)
		}
		return userapi.DirectoryEntry{}, unavailable("search "+d.cfg.BaseDN, err)
	}
	switch {
	case res == nil || len(res.Entries) == 0:
		return userapi.DirectoryEntry{}, userapi.ErrNotInDirectory
	case len(res.Entries) > 1:
		logging.From(ctx).WithField("ldap_filter", req.Filter).Warn("ldap.user_filter finds more than one entry for a username: sign-in refused (make the filter match one person)")
		return userapi.DirectoryEntry{}, fmt.Errorf("%w: more than one entry", userapi.ErrDirectoryRefused)
	}
	e := res.Entries[0]
	if err := conn.Bind(e.DN, password); err != nil {
		var le *ld.Error
		if errors.As(err, &le) && le.ResultCode != ld.ErrorNetwork && le.ResultCode < 200 {
			if le.ResultCode != ld.LDAPResultInvalidCredentials {
				logging.From(ctx).WithField("ldap_result", ld.LDAPResultCodeMap[le.ResultCode]).Info("directory refused a user's bind")
			}
			return userapi.DirectoryEntry{}, fmt.Errorf("%w: %s", userapi.ErrDirectoryRefused, ld.LDAPResultCodeMap[le.ResultCode])
		}
		return userapi.DirectoryEntry{}, unavailable("bind as "+e.DN, err)
	}
	out := userapi.DirectoryEntry{Localpart: e.GetEqualFoldAttributeValue(d.cfg.LocalpartAttribute)}
	if d.cfg.DisplayNameAttribute != "" {
		out.DisplayName = e.GetEqualFoldAttributeValue(d.cfg.DisplayNameAttribute)
	}
	if d.cfg.EmailAttribute != "" {
		out.Email = e.GetEqualFoldAttributeValue(d.cfg.EmailAttribute)
	}
	if out.Localpart == "" {
		logging.From(ctx).WithField("ldap_dn", e.DN).WithField("attribute", d.cfg.LocalpartAttribute).Warn("directory entry has no localpart attribute: sign-in refused")
		return userapi.DirectoryEntry{}, fmt.Errorf("%w: entry has no %s", userapi.ErrDirectoryRefused, d.cfg.LocalpartAttribute)
	}
	return out, nil
}
