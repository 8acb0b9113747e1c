package userapi

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// auditSink keeps the audit entries recorded.
type auditSink struct {
	mu      sync.Mutex
	entries []auditlog.Entry
}

func (a *auditSink) Record(_ context.Context, e auditlog.Entry) {
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
}

func (a *auditSink) count(action, addr string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, e := range a.entries {
		if e.Action == action && (addr == "" || e.Addr == addr) {
			n++
		}
	}
	return n
}

// TestSlowdownSparesKnownAddresses: failures from addresses an account has
// not signed in from slow the account down for every such address, but
// not for the addresses it signed in from before, which have counters of
// their own.
func TestSlowdownSparesKnownAddresses(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
		sink := &auditSink{}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now; o.Audit = sink })
		s.attempts.now = clk.Now
		mustRegister(t, s, "alice", "right password")
		login := func(addr, pw string) error {
			_, err := s.Login(ctx, LoginRequest{User: "alice", Password: pw, ClientAddr: addr})
			return err
		}
		const home = "198.51.100.10"
		const home6 = "2001:db8:1:2::10"
		wantCode(t, login(home, "right password"), "")
		wantCode(t, login(home6, "right password"), "")

		// Guessing from many addresses: after freeAttempts failures every
		// unknown address waits.
		for i := 0; i < freeAttempts; i++ {
			wantCode(t, login(fmt.Sprintf("203.0.113.%d", i), "guess"), "M_FORBIDDEN")
		}
		for _, tc := range []struct {
			name, addr, pw, code string
		}{
			{"a new guessing address is slowed", "203.0.113.99", "guess", "M_LIMIT_EXCEEDED"},
			{"even with the right password", "203.0.113.98", "right password", "M_LIMIT_EXCEEDED"},
			{"the owner's address is not", home, "right password", ""},
			{"nor another address of the owner's IPv6 /64", "2001:db8:1:2::beef", "right password", ""},
			{"the owner's typo from home is just a failure", home, "typo", "M_FORBIDDEN"},
			{"and the owner signs in again", home, "right password", ""},
		} {
			err := login(tc.addr, tc.pw)
			if tc.code == "" && err != nil || tc.code != "" && !merr.Is(err, tc.code) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.code)
			}
		}
		if n := sink.count(auditlog.LoginRefused, "203.0.113.99"); n != 1 {
			t.Errorf("refusals of 203.0.113.99 audited: %d, want 1", n)
		}
		if n := sink.count(auditlog.LoginFailed, ""); n != freeAttempts+1 {
			t.Errorf("failed logins audited: %d, want %d", n, freeAttempts+1)
		}
		if n := sink.count(auditlog.Login, home); n != 3 {
			t.Errorf("logins from home audited: %d, want 3", n)
		}

		// Failures from a known address slow only that address.
		for i := 0; i < freeAttempts; i++ {
			wantCode(t, login(home, "typo"), "M_FORBIDDEN")
		}
		wantCode(t, login(home, "right password"), "M_LIMIT_EXCEEDED")
		wantCode(t, login(home6, "right password"), "")

		// The slowdown ends; a success from a new address makes it known.
		clk.Add(forgetAfter + time.Minute)
		wantCode(t, login("192.0.2.1", "right password"), "")
		for i := 0; i < freeAttempts+2; i++ {
			_ = login(fmt.Sprintf("203.0.113.%d", 50+i), "guess")
		}
		wantCode(t, login("192.0.2.1", "right password"), "")

		// A known address is forgotten after knownAddrTTL.
		clk.Add(knownAddrTTL + time.Hour)
		for i := 0; i < freeAttempts; i++ {
			_ = login(fmt.Sprintf("203.0.113.%d", 100+i), "guess")
		}
		wantCode(t, login(home, "right password"), "M_LIMIT_EXCEEDED")
	})
}

// TestKnownAddressesBounded: an account keeps at most maxKnownAddrs
// networks, the most recent ones.
func TestKnownAddressesBounded(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		mustRegister(t, s, "bob", "right password")
		for i := 0; i < maxKnownAddrs+5; i++ {
			clk.Add(time.Second)
			s.rememberAddr(ctx, "@bob:"+testServer, fmt.Sprintf("10.0.0.%d", i))
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM login_addresses WHERE user_id = $1`, "@bob:"+testServer).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != maxKnownAddrs {
			t.Fatalf("%d networks kept, want %d", n, maxKnownAddrs)
		}
		if k := s.attemptKey(ctx, "@bob:"+testServer, "10.0.0.0"); k.addr != "" {
			t.Errorf("the oldest network is still known (%q)", k)
		}
		if k := s.attemptKey(ctx, "@bob:"+testServer, fmt.Sprintf("10.0.0.%d", maxKnownAddrs+4)); k.addr == "" {
			t.Errorf("the newest network is not known")
		}
	})
}

func TestPasswordPolicy(t *testing.T) {
	p := PasswordPolicy{MinLength: 10, RefuseCommon: true}
	for _, tc := range []struct {
		pw string
		ok bool
	}{
		{"short", false},
		{"correct horse battery staple", true},
		{"a long password", true},
		{"Tr0ub4dor&3x", true},
		{"password123", false},
		{"Password123!", false},
		{"P@ssw0rd2024", false},
		{"qwertyuiop", false},
		{"1234567890", false},
		{"2024-06-01!!", false},
		{"aaaaaaaaaaaa", false},
		{"abababababab", false},
		{"Summer2024!!", false},
		{"iloveyou1234", false},
		{"welcome123!", false},
		{"michelle1990", false},
		{"zxcvbnm12345", false},
		{"gravel kettle orbit", true},
	} {
		err := p.Check(tc.pw)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.pw, err, tc.ok)
		}
		if err != nil && !merr.Is(err, "M_WEAK_PASSWORD") {
			t.Errorf("Check(%q) = %v, want M_WEAK_PASSWORD", tc.pw, err)
		}
	}
	if err := (PasswordPolicy{}).Check("pw"); err != nil {
		t.Errorf("the zero policy refused a password: %v", err)
	}
	if err := (PasswordPolicy{MinLength: 4}).Check("pässwört"); err != nil {
		t.Errorf("length counts characters, not bytes: %v", err)
	}
}

// TestPolicyAppliesToNewPasswords: registration and password changes
// follow the policy; shared-secret registration (an admin tool) does not.
func TestPolicyAppliesToNewPasswords(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil, func(o *Options) { o.PasswordPolicy = PasswordPolicy{MinLength: 10, RefuseCommon: true} })
		_, err := s.Register(ctx, RegisterRequest{Localpart: "carol", Password: "password1", Via: "test"})
		wantCode(t, err, "M_WEAK_PASSWORD")
		_, err = s.HashNewPassword("Password2024")
		wantCode(t, err, "M_WEAK_PASSWORD")
		wantCode(t, s.CheckNewPassword("short"), "M_WEAK_PASSWORD")
		wantCode(t, s.CheckNewPassword("a much longer phrase"), "")
		nonce, err := s.NewRegistrationNonce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.RegisterWithSharedSecret(ctx, SharedSecretRequest{Nonce: nonce, Username: "dave", Password: "pw",
			MAC: SharedSecretMAC(s.opts.SharedSecret, nonce, "dave", "pw", false, nil)})
		wantCode(t, err, "")
	})
}

// TestSlowdownSharedByProcesses: two Haven processes on one database share
// the per-account counter, so spreading guesses over them gains nothing,
// and both still spare the owner's known address.
func TestSlowdownSharedByProcesses(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
		a := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		b := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		mustRegister(t, a, "alice", "right password")
		const home = "198.51.100.10"
		login := func(s *Service, addr, pw string) error {
			_, err := s.Login(ctx, LoginRequest{User: "alice", Password: pw, ClientAddr: addr})
			return err
		}
		wantCode(t, login(b, home, "right password"), "")
		// Guesses alternate between the processes.
		for i := 0; i < freeAttempts; i++ {
			s := a
			if i%2 == 1 {
				s = b
			}
			wantCode(t, login(s, fmt.Sprintf("203.0.113.%d", i), "guess"), "M_FORBIDDEN")
		}
		for name, s := range map[string]*Service{"a": a, "b": b} {
			if err := login(s, "203.0.113.50", "guess"); !merr.Is(err, "M_LIMIT_EXCEEDED") {
				t.Fatalf("process %s lets the guesser in: %v", name, err)
			}
			if err := login(s, home, "right password"); err != nil {
				t.Fatalf("process %s refuses the owner at home: %v", name, err)
			}
		}
		// The slowdown doubles across processes too.
		clk.Add(time.Second)
		wantCode(t, login(a, "203.0.113.60", "guess"), "M_FORBIDDEN")
		err := login(b, "203.0.113.61", "guess")
		me, ok := merr.As(err)
		if !ok || me.Code != "M_LIMIT_EXCEEDED" || me.Extra["retry_after_ms"].(int64) <= 1000 {
			t.Fatalf("second delay seen by the other process: %v", err)
		}
	})
}
