package userapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestRegisterLoginAuthenticate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		sess := mustRegister(t, s, "alice", "correct horse")
		if sess.UserID != "@alice:test.local" || sess.DeviceID == "" || sess.AccessToken == "" {
			t.Fatalf("session %+v", sess)
		}
		dev, err := s.Authenticate(ctx, sess.AccessToken)
		wantCode(t, err, "")
		if dev.UserID != sess.UserID || dev.DeviceID != sess.DeviceID || dev.IsAdmin || dev.SessionID != HashToken(sess.AccessToken) {
			t.Fatalf("device %+v", dev)
		}
		// The token itself is never stored.
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM devices WHERE token_hash = $1`, sess.AccessToken).Scan(&n); err != nil || n != 0 {
			t.Fatalf("raw token stored: %d %v", n, err)
		}

		_, err = s.Register(ctx, RegisterRequest{Localpart: "alice", Password: "x"})
		wantCode(t, err, "M_USER_IN_USE")
		_, err = s.CheckUsernameAvailable(ctx, "ALICE")
		wantCode(t, err, "M_USER_IN_USE")
		lp, err := s.CheckUsernameAvailable(ctx, "Bob")
		wantCode(t, err, "")
		if lp != "bob" {
			t.Fatalf("localpart %q", lp)
		}
		_, err = s.CheckUsernameAvailable(ctx, "b b")
		wantCode(t, err, "M_INVALID_USERNAME")

		// Random localpart, admin, no login.
		id, err := s.CreateAccount(ctx, "", "pw", true, "test")
		wantCode(t, err, "")
		if !strings.HasPrefix(id, "@u") {
			t.Fatalf("random user %q", id)
		}
		if ok, _ := s.AccountExists(ctx, id); !ok {
			t.Fatal("created account does not exist")
		}
		if devs, _ := s.Devices(ctx, id); len(devs) != 0 {
			t.Fatalf("inhibited login made devices %v", devs)
		}

		// Login: localpart, full ID, any case; same error for unknown user and wrong password.
		for _, user := range []string{"alice", "ALICE", "@alice:test.local", "@Alice:TEST.local"} {
			l, err := s.Login(ctx, LoginRequest{User: user, Password: "correct horse", DeviceDisplayName: "phone"})
			wantCode(t, err, "")
			if l.UserID != "@alice:test.local" {
				t.Fatalf("login as %s gave %s", user, l.UserID)
			}
		}
		_, err1 := s.Login(ctx, LoginRequest{User: "alice", Password: "wrong"})
		_, err2 := s.Login(ctx, LoginRequest{User: "nobody", Password: "wrong"})
		wantCode(t, err1, "M_FORBIDDEN")
		wantCode(t, err2, "M_FORBIDDEN")
		if err1.Error() != err2.Error() {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
		_, err = s.Login(ctx, LoginRequest{User: "@alice:elsewhere.org", Password: "correct horse"})
		wantCode(t, err, "M_FORBIDDEN")

		_, err = s.Authenticate(ctx, "hvt_not-a-token")
		wantCode(t, err, "M_UNKNOWN_TOKEN")
	})
}

func TestAuthenticateServedFromMemory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		sess := mustRegister(t, s, "alice", "pw")
		if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
		_, err := s.Authenticate(ctx, "bogus")
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		// With the database gone, known and known-bad tokens still answer.
		db.Close()
		for i := 0; i < 3; i++ {
			if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
				t.Fatalf("cached token needed the database: %v", err)
			}
			_, err := s.Authenticate(ctx, "bogus")
			wantCode(t, err, "M_UNKNOWN_TOKEN")
		}
	})
}

func TestTokenInvalidation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		// A second process on the same database and bus.
		other := newTestService(t, db, bus)

		a := mustRegister(t, s, "alice", "pw")
		devA, _ := s.Authenticate(ctx, a.AccessToken)
		if _, err := other.Authenticate(ctx, a.AccessToken); err != nil {
			t.Fatal(err)
		}
		if err := s.Logout(ctx, devA); err != nil {
			t.Fatal(err)
		}
		for name, svc := range map[string]*Service{"same process": s, "other process": other} {
			_, err := svc.Authenticate(ctx, a.AccessToken)
			wantCode(t, err, "M_UNKNOWN_TOKEN")
			if soft, _ := errExtra(err, "soft_logout"); soft != false {
				t.Fatalf("%s: soft_logout %v", name, soft)
			}
		}

		// Reusing a device ID replaces that device's token.
		l1, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw", DeviceID: "PHONE", DeviceDisplayName: "Phone"})
		wantCode(t, err, "")
		if _, err := other.Authenticate(ctx, l1.AccessToken); err != nil {
			t.Fatal(err)
		}
		l2, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw", DeviceID: "PHONE", DeviceDisplayName: "ignored"})
		wantCode(t, err, "")
		if l2.DeviceID != "PHONE" || l2.AccessToken == l1.AccessToken {
			t.Fatalf("reuse gave %+v", l2)
		}
		_, err = other.Authenticate(ctx, l1.AccessToken)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		d, err := s.Authenticate(ctx, l2.AccessToken)
		wantCode(t, err, "")
		if d.DisplayName != "Phone" {
			t.Fatalf("display name %q changed on reuse", d.DisplayName)
		}
		devs, _ := s.Devices(ctx, "@alice:test.local")
		if len(devs) != 1 {
			t.Fatalf("devices %+v", devs)
		}

		// Logout everywhere.
		l3, _ := s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		if err := s.LogoutAll(ctx, "@alice:test.local"); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{l2.AccessToken, l3.AccessToken} {
			for _, svc := range []*Service{s, other} {
				_, err := svc.Authenticate(ctx, tok)
				wantCode(t, err, "M_UNKNOWN_TOKEN")
			}
		}
	})
}

func errExtra(err error, key string) (any, bool) {
	me, ok := merr.As(err)
	if !ok {
		return nil, false
	}
	v, ok := me.Extra[key]
	return v, ok
}

func TestLoginBackoff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		mustRegister(t, s, "alice", "pw")
		for i := 0; i < freeAttempts; i++ {
			_, err := s.Login(ctx, LoginRequest{User: "alice", Password: "nope"})
			wantCode(t, err, "M_FORBIDDEN")
		}
		// Now even the right password has to wait.
		_, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		wantCode(t, err, "M_LIMIT_EXCEEDED")
		if ms, _ := errExtra(err, "retry_after_ms"); ms.(int64) <= 0 {
			t.Fatalf("retry_after_ms %v", ms)
		}
		// Unknown users are locked out alike: no enumeration.
		for i := 0; i < freeAttempts; i++ {
			_, _ = s.Login(ctx, LoginRequest{User: "ghost", Password: "x"})
		}
		_, err = s.Login(ctx, LoginRequest{User: "ghost", Password: "x"})
		wantCode(t, err, "M_LIMIT_EXCEEDED")
		clk.Add(2 * time.Second)
		_, err = s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		wantCode(t, err, "")
	})
}

func TestDeactivate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		a := mustRegister(t, s, "alice", "pw")
		if err := s.SetAvatarURL(ctx, a.UserID, "mxc://test.local/abc"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, a.AccessToken); err != nil {
			t.Fatal(err)
		}
		if err := s.Deactivate(ctx, a.UserID); err != nil {
			t.Fatal(err)
		}
		_, err := s.Authenticate(ctx, a.AccessToken)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		_, err = s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		wantCode(t, err, "M_USER_DEACTIVATED")
		// A wrong password does not reveal the deactivation.
		_, err = s.Login(ctx, LoginRequest{User: "alice", Password: "wrong"})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.GetProfile(ctx, a.UserID)
		wantCode(t, err, "M_NOT_FOUND")
		if dn, av, err := s.Profile(ctx, a.UserID); dn != "" || av != "" || err != nil {
			t.Fatalf("profile after deactivation %q %q %v", dn, av, err)
		}
		if ok, _ := s.AccountExists(ctx, a.UserID); ok {
			t.Fatal("deactivated account exists")
		}
		_, err = s.Register(ctx, RegisterRequest{Localpart: "alice", Password: "pw"})
		wantCode(t, err, "M_USER_IN_USE")
		wantCode(t, s.Deactivate(ctx, "@nobody:test.local"), "M_NOT_FOUND")
	})
}

func TestChangePassword(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		a := mustRegister(t, s, "alice", "old")
		b, _ := s.Login(ctx, LoginRequest{User: "alice", Password: "old"})
		c, _ := s.Login(ctx, LoginRequest{User: "alice", Password: "old"})
		for _, tok := range []string{a.AccessToken, b.AccessToken, c.AccessToken} {
			if _, err := s.Authenticate(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		change := func(pw string, logout bool) error {
			hash, err := s.HashNewPassword(pw)
			if err != nil {
				return err
			}
			return s.ChangePassword(ctx, a.UserID, a.DeviceID, hash, logout)
		}
		// Without logging out.
		wantCode(t, change("new1", false), "")
		if _, err := s.Authenticate(ctx, b.AccessToken); err != nil {
			t.Fatal("logout_devices false logged out")
		}
		wantCode(t, change("new2", true), "")
		if _, err := s.Authenticate(ctx, a.AccessToken); err != nil {
			t.Fatalf("current device logged out: %v", err)
		}
		for _, tok := range []string{b.AccessToken, c.AccessToken} {
			_, err := s.Authenticate(ctx, tok)
			wantCode(t, err, "M_UNKNOWN_TOKEN")
		}
		_, err := s.Login(ctx, LoginRequest{User: "alice", Password: "old"})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.Login(ctx, LoginRequest{User: "alice", Password: "new2"})
		wantCode(t, err, "")
		wantCode(t, change("", true), "M_WEAK_PASSWORD")
		// Only a hash this server made is stored: a password in clear is refused.
		if err := s.ChangePassword(ctx, a.UserID, a.DeviceID, "new3", true); err == nil {
			t.Error("a password in clear was stored as its hash")
		}
	})
}

func TestDevicesAndLastSeen(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now; o.SeenFlushInterval = time.Hour })
		ctx := WithClientAddr(context.Background(), "192.0.2.7")
		a, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		wantCode(t, err, "M_FORBIDDEN")
		mustRegister(t, s, "alice", "pw")
		a, err = s.Login(ctx, LoginRequest{User: "alice", Password: "pw", DeviceDisplayName: strings.Repeat("n", 150), ClientAddr: "192.0.2.1"})
		wantCode(t, err, "")
		d, err := s.DeviceByID(ctx, a.UserID, a.DeviceID)
		wantCode(t, err, "")
		if d.DisplayName == nil || len(*d.DisplayName) != MaxDeviceNameRunes || d.LastSeenIP != "192.0.2.1" {
			t.Fatalf("device %+v", d)
		}
		clk.Add(time.Hour)
		if _, err := s.Authenticate(ctx, a.AccessToken); err != nil {
			t.Fatal(err)
		}
		// Nothing written on the request path...
		d, _ = s.DeviceByID(ctx, a.UserID, a.DeviceID)
		if d.LastSeenIP != "192.0.2.1" {
			t.Fatalf("last seen written on the request path: %+v", d)
		}
		// ...until the flush.
		if err := s.FlushSeen(ctx); err != nil {
			t.Fatal(err)
		}
		d, _ = s.DeviceByID(ctx, a.UserID, a.DeviceID)
		if d.LastSeenIP != "192.0.2.7" || d.LastSeenTS != clk.Now().UnixMilli() {
			t.Fatalf("after flush %+v", d)
		}
		// Within the interval nothing more is queued.
		clk.Add(time.Minute)
		_, _ = s.Authenticate(ctx, a.AccessToken)
		s.seenMu.Lock()
		pending := len(s.seenPending)
		s.seenMu.Unlock()
		if pending != 0 {
			t.Fatalf("%d updates queued within the interval", pending)
		}

		wantCode(t, s.SetDeviceName(ctx, a.UserID, a.DeviceID, "Laptop"), "")
		dev, _ := s.Authenticate(ctx, a.AccessToken)
		if dev.DisplayName != "Laptop" {
			t.Fatalf("cached device name %q", dev.DisplayName)
		}
		wantCode(t, s.SetDeviceName(ctx, a.UserID, "NOPE", "x"), "M_NOT_FOUND")
		wantCode(t, s.SetDeviceName(ctx, a.UserID, a.DeviceID, strings.Repeat("x", 101)), "M_TOO_LARGE")
		_, err = s.DeviceByID(ctx, a.UserID, "NOPE")
		wantCode(t, err, "M_NOT_FOUND")

		if _, err := db.Exec(ctx, `INSERT INTO to_device (pos, user_id, device_id, sender, type, content) VALUES (1, $1, $2, 's', 't', '{}')`, a.UserID, a.DeviceID); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.DeleteDevices(ctx, a.UserID, []string{a.DeviceID, "UNKNOWN"}), "")
		_, err = s.Authenticate(ctx, a.AccessToken)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM to_device WHERE user_id = $1`, a.UserID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("to-device messages of a deleted device remain: %d %v", n, err)
		}
	})
}
