package ldap_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/testldap"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/ldap"
)

func TestMain(m *testing.M) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	logging.SetFallback(l)
	os.Exit(m.Run())
}

const server = "example.com"

var people = []testldap.Person{
	{UID: "alice", CN: "Alice Liddell", Mail: "alice@example.com", Password: "alice's directory password"},
	{UID: "bob", CN: "Bob Builder", Mail: "bob@example.com", Password: "bob's directory password"},
	// Two entries that a filter on cn would both find (ambiguity).
	{UID: "twin1", CN: "Twin", Password: "twin password"},
	{UID: "twin2", CN: "Twin", Password: "twin password"},
}

func ldapConfig(s *testldap.Server) config.LDAP {
	c := config.Default().LDAP
	c.Enabled = true
	c.URL = s.URL
	c.BindDN = testldap.ServiceDN
	c.BindPassword = testldap.ServicePass
	c.BaseDN = testldap.Base
	return c
}

func newDirectory(t *testing.T, c config.LDAP) *ldap.Directory {
	t.Helper()
	d, err := ldap.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAuthenticate: search then bind against a real slapd, over plain
// LDAP, StartTLS and ldaps, with the outcomes userapi tells apart.
func TestAuthenticate(t *testing.T) {
	srv := testldap.Start(t, people...)
	ctx := context.Background()
	plain := ldapConfig(srv)
	startTLS := plain
	startTLS.StartTLS, startTLS.CAFile = true, srv.CA.File()
	ldaps := plain
	ldaps.URL, ldaps.CAFile = srv.TLSURL, srv.CA.File()
	for name, c := range map[string]config.LDAP{"plain": plain, "starttls": startTLS, "ldaps": ldaps} {
		t.Run(name, func(t *testing.T) {
			d := newDirectory(t, c)
			if err := d.Ping(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
			e, err := d.Authenticate(ctx, "alice", "alice's directory password")
			if err != nil {
				t.Fatalf("right password: %v", err)
			}
			if e.Localpart != "alice" || e.DisplayName != "Alice Liddell" || e.Email != "alice@example.com" {
				t.Fatalf("entry = %+v", e)
			}
			if _, err := d.Authenticate(ctx, "ALICE", "alice's directory password"); err != nil {
				t.Fatalf("upper-case name: %v", err)
			}
			for _, tc := range []struct{ user, pw string }{
				{"alice", "wrong"}, {"alice", "bob's directory password"},
			} {
				if _, err := d.Authenticate(ctx, tc.user, tc.pw); !errors.Is(err, userapi.ErrDirectoryRefused) {
					t.Fatalf("%s/%s: %v, want refused", tc.user, tc.pw, err)
				}
			}
			if _, err := d.Authenticate(ctx, "alice", ""); !errors.Is(err, userapi.ErrDirectoryRefused) {
				t.Fatalf("empty password: %v, want refused", err)
			}
			// Filter metacharacters are escaped: they match nothing, and
			// certainly not alice.
			for _, u := range []string{"*", "a*", "alice)(uid=*", "*)(|(uid=*", "alice\\2a", "\x00", "(uid=alice)"} {
				if _, err := d.Authenticate(ctx, u, "alice's directory password"); !errors.Is(err, userapi.ErrNotInDirectory) {
					t.Fatalf("username %q: %v, want not in directory", u, err)
				}
			}
			if _, err := d.Authenticate(ctx, "carol", "whatever"); !errors.Is(err, userapi.ErrNotInDirectory) {
				t.Fatalf("unknown: %v", err)
			}
		})
	}

	t.Run("ambiguous", func(t *testing.T) {
		c := plain
		c.UserFilter = "(&(objectClass=person)(cn={username}))"
		d := newDirectory(t, c)
		if _, err := d.Authenticate(ctx, "twin", "twin password"); !errors.Is(err, userapi.ErrDirectoryRefused) {
			t.Fatalf("two entries: %v, want refused", err)
		}
	})
	t.Run("wrong service password", func(t *testing.T) {
		c := plain
		c.BindPassword = "wrong"
		d := newDirectory(t, c)
		if err := d.Ping(ctx); !errors.Is(err, userapi.ErrDirectoryUnavailable) {
			t.Fatalf("ping: %v", err)
		}
		if _, err := d.Authenticate(ctx, "alice", "alice's directory password"); !errors.Is(err, userapi.ErrDirectoryUnavailable) {
			t.Fatalf("authenticate: %v, want unavailable", err)
		}
	})
	t.Run("anonymous search finds nobody", func(t *testing.T) {
		c := plain
		c.BindDN, c.BindPassword = "", ""
		d := newDirectory(t, c)
		if _, err := d.Authenticate(ctx, "alice", "alice's directory password"); err == nil {
			t.Fatal("anonymous search found alice despite the ACL")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		c := startTLS
		c.CAFile = ""
		d := newDirectory(t, c)
		if err := d.Ping(ctx); !errors.Is(err, userapi.ErrDirectoryUnavailable) {
			t.Fatalf("StartTLS with an unknown CA: %v", err)
		}
		c = ldaps
		c.CAFile = ""
		if err := newDirectory(t, c).Ping(ctx); !errors.Is(err, userapi.ErrDirectoryUnavailable) {
			t.Fatalf("ldaps with an unknown CA: %v", err)
		}
	})
	t.Run("down", func(t *testing.T) {
		down := testldap.Start(t, people...)
		d := newDirectory(t, ldapConfig(down))
		if _, err := d.Authenticate(ctx, "alice", "alice's directory password"); err != nil {
			t.Fatal(err)
		}
		down.Stop()
		if _, err := d.Authenticate(ctx, "alice", "alice's directory password"); !errors.Is(err, userapi.ErrDirectoryUnavailable) {
			t.Fatalf("stopped: %v, want unavailable", err)
		}
	})
}

func TestNewRefusesBadFilter(t *testing.T) {
	c := config.Default().LDAP
	c.URL = "ldap://127.0.0.1:1"
	for _, f := range []string{"(uid=alice)", "(&(uid={username})", "uid={username}"} {
		c.UserFilter = f
		if _, err := ldap.New(c); err == nil {
			t.Errorf("filter %q accepted", f)
		}
	}
}

type auditSink struct {
	mu      sync.Mutex
	entries []auditlog.Entry
}

func (a *auditSink) Record(_ context.Context, e auditlog.Entry) {
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
}

func (a *auditSink) reasons(action string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.entries {
		if e.Action == action {
			r, _ := e.Detail["reason"].(string)
			out = append(out, r)
		}
	}
	return out
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	}
	if !merr.Is(err, code) {
		t.Fatalf("err = %v, want %s", err, code)
	}
}

func newService(t *testing.T, db *storage.DB, dir userapi.DirectoryOptions, sink *auditSink) *userapi.Service {
	t.Helper()
	s, err := userapi.New(context.Background(), db, nil, userapi.Options{ServerName: server, PasswordHashCost: 4,
		Directory: dir, Audit: sink, PasswordPolicy: userapi.PasswordPolicy{MinLength: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestLoginWithDirectory: m.login.password and the sign-in page's
// CheckCredentials against a real slapd, on both databases.
func TestLoginWithDirectory(t *testing.T) {
	srv := testldap.Start(t, people...)
	d := newDirectory(t, ldapConfig(srv))
	ctx := context.Background()
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		sink := &auditSink{}
		s := newService(t, db, userapi.DirectoryOptions{Directory: d, CreateAccounts: true}, sink)
		login := func(user, pw, addr string) (userapi.Session, error) {
			return s.Login(ctx, userapi.LoginRequest{User: user, Password: pw, ClientAddr: addr})
		}

		// Right password: the account is made with the directory's name.
		sess, err := login("Alice", "alice's directory password", "198.51.100.1")
		wantCode(t, err, "")
		if sess.UserID != "@alice:"+server || sess.AccessToken == "" {
			t.Fatalf("session = %+v", sess)
		}
		if name, _, err := s.Profile(ctx, sess.UserID); err != nil || name != "Alice Liddell" {
			t.Fatalf("display name = %q, %v", name, err)
		}
		if got := sink.reasons(auditlog.Login); len(got) != 1 {
			t.Fatalf("login audits = %v", got)
		}
		// Again, by full user ID: the same account.
		sess2, err := login("@alice:"+server, "alice's directory password", "198.51.100.1")
		wantCode(t, err, "")
		if sess2.UserID != sess.UserID {
			t.Fatalf("second login as %s", sess2.UserID)
		}
		// The sign-in page's check.
		uid, admin, err := s.CheckCredentials(ctx, "alice", "alice's directory password", "198.51.100.1")
		if err != nil || uid != "@alice:"+server || admin {
			t.Fatalf("CheckCredentials = %s %v %v", uid, admin, err)
		}

		// Wrong password: M_FORBIDDEN, audited, and the slowdown counts
		// (after three failures from an unknown address, the account waits).
		for i := 0; i < 3; i++ {
			_, err := login("bob", "not bob's password", "203.0.113.9")
			wantCode(t, err, "M_FORBIDDEN")
		}
		_, err = login("bob", "bob's directory password", "203.0.113.9")
		wantCode(t, err, "M_LIMIT_EXCEEDED")
		if n := len(sink.reasons(auditlog.LoginRefused)); n != 1 {
			t.Fatalf("refusals audited = %d", n)
		}
		// Alice, who signed in before from 198.51.100.1, is not slowed by
		// failures from elsewhere.
		for i := 0; i < 4; i++ {
			_, _ = login("alice", "guess", "203.0.113.10")
		}
		_, err = login("alice", "alice's directory password", "198.51.100.1")
		wantCode(t, err, "")

		// Empty password: never an (unauthenticated) bind.
		_, err = login("alice", "", "198.51.100.1")
		wantCode(t, err, "M_FORBIDDEN")
		_, _, err = s.CheckCredentials(ctx, "alice", "", "198.51.100.1")
		wantCode(t, err, "M_FORBIDDEN")

		// Filter metacharacters in the username: refused, nothing made.
		for _, u := range []string{"*", "al*", "alice)(uid=*", "*)(|(objectClass=*"} {
			_, err := login(u, "alice's directory password", "198.51.100.2")
			wantCode(t, err, "M_FORBIDDEN")
		}
		users, total, err := s.ListUsers(ctx, userapi.UserFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if total != 1 || len(users) != 1 {
			t.Fatalf("accounts = %+v, want alice only", users)
		}

		// Not in the directory, without fallback: even a local account's
		// own password does not work.
		if _, err := s.CreateAccount(ctx, "breakglass", "local admin password", true, "cli"); err != nil {
			t.Fatal(err)
		}
		_, err = login("breakglass", "local admin password", "198.51.100.3")
		wantCode(t, err, "M_FORBIDDEN")
	})
}

// TestDirectoryFallbackAndCreation: fallback_local_passwords for accounts
// the directory does not know and while it is down; create_accounts off.
func TestDirectoryFallbackAndCreation(t *testing.T) {
	srv := testldap.Start(t, people...)
	d := newDirectory(t, ldapConfig(srv))
	ctx := context.Background()
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		sink := &auditSink{}
		s := newService(t, db, userapi.DirectoryOptions{Directory: d, FallbackLocalPasswords: true}, sink)
		login := func(user, pw string) (userapi.Session, error) {
			return s.Login(ctx, userapi.LoginRequest{User: user, Password: pw, ClientAddr: "198.51.100.1"})
		}
		if _, err := s.CreateAccount(ctx, "breakglass", "local admin password", true, "cli"); err != nil {
			t.Fatal(err)
		}
		_, err := login("breakglass", "local admin password")
		wantCode(t, err, "")
		_, err = login("breakglass", "wrong local password")
		wantCode(t, err, "M_FORBIDDEN")

		// create_accounts false: a directory user without an account is refused.
		_, err = login("alice", "alice's directory password")
		wantCode(t, err, "M_FORBIDDEN")
		if e, _ := merr.As(err); e == nil || e.Status != http.StatusForbidden {
			t.Fatalf("no account: %v", err)
		}
		if ok, _ := s.AccountExists(ctx, "@alice:"+server); ok {
			t.Fatal("alice's account was made with create_accounts false")
		}
		// Once an admin made it (no password), the directory's password works.
		if _, err := s.Register(ctx, userapi.RegisterRequest{Localpart: "bob", NoPassword: true, InhibitLogin: true, Via: "admin"}); err != nil {
			t.Fatal(err)
		}
		_, err = login("bob", "bob's directory password")
		wantCode(t, err, "")

		// The directory down: the break-glass account signs in with its
		// local password; bob (no local password) gets 503, not 500.
		downDir := newDirectory(t, func() config.LDAP { c := ldapConfig(srv); c.URL = "ldap://127.0.0.1:1"; return c }())
		s2 := newService(t, db, userapi.DirectoryOptions{Directory: downDir, FallbackLocalPasswords: true}, sink)
		_, err = s2.Login(ctx, userapi.LoginRequest{User: "breakglass", Password: "local admin password"})
		wantCode(t, err, "")
		_, err = s2.Login(ctx, userapi.LoginRequest{User: "bob", Password: "bob's directory password"})
		wantCode(t, err, "M_UNKNOWN")
		if e, _ := merr.As(err); e == nil || e.Status != http.StatusServiceUnavailable {
			t.Fatalf("directory down: %v, want 503", err)
		}
		// Without fallback, the break-glass account too.
		s3 := newService(t, db, userapi.DirectoryOptions{Directory: downDir}, sink)
		_, err = s3.Login(ctx, userapi.LoginRequest{User: "breakglass", Password: "local admin password"})
		wantCode(t, err, "M_UNKNOWN")
		_, _, err = s3.CheckCredentials(ctx, "bob", "bob's directory password", "")
		wantCode(t, err, "M_UNKNOWN")
		found := false
		for _, r := range sink.reasons(userapi.AuditDirectoryUnavailable) {
			found = found || r == "directory_unavailable"
		}
		for _, r := range sink.reasons(auditlog.LoginFailed) {
			if r == "directory_unavailable" {
				t.Fatal("an unavailable directory recorded as a failed login (fail2ban would ban the client)")
			}
		}
		if !found {
			t.Fatal("directory_unavailable not audited")
		}
	})
}
