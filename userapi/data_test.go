package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestAccountData(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		alice := mustRegister(t, s, "alice", "pw").UserID
		bob := mustRegister(t, s, "bob", "pw").UserID
		if s.AccountDataPosition() != 0 {
			t.Fatalf("start position %d", s.AccountDataPosition())
		}
		wantCode(t, s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{"@bob:test.local": ["!r:test.local"]}`)), "")
		wantCode(t, s.SetAccountData(ctx, alice, "!room:test.local", "m.tag", json.RawMessage(`{"tags":{}}`)), "")
		wantCode(t, s.SetAccountData(ctx, bob, "", "m.direct", json.RawMessage(`{}`)), "")
		wantCode(t, s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{"v": 2}`)), "")
		wantCode(t, s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`[1]`)), "M_BAD_JSON")
		wantCode(t, s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{`)), "M_NOT_JSON")
		wantCode(t, s.SetAccountData(ctx, alice, "", strings.Repeat("t", 256), json.RawMessage(`{}`)), "M_INVALID_PARAM")
		if s.AccountDataPosition() != 4 {
			t.Fatalf("position %d", s.AccountDataPosition())
		}
		got, err := s.GetAccountData(ctx, alice, "", "m.direct")
		wantCode(t, err, "")
		if string(got) != `{"v":2}` {
			t.Fatalf("content %s", got)
		}
		_, err = s.GetAccountData(ctx, alice, "", "m.nothing")
		wantCode(t, err, "M_NOT_FOUND")
		_, err = s.GetAccountData(ctx, bob, "!room:test.local", "m.tag")
		wantCode(t, err, "M_NOT_FOUND")

		// Published in order, with the stored positions.
		ns := bus.notices(t)
		want := []string{"@alice:test.local||m.direct|1", "@alice:test.local|!room:test.local|m.tag|2", "@bob:test.local||m.direct|3", "@alice:test.local||m.direct|4"}
		if len(ns) != len(want) {
			t.Fatalf("notices %+v", ns)
		}
		for i, n := range ns {
			if s := fmt.Sprintf("%s|%s|%s|%d", n.UserID, n.RoomID, n.Type, n.Pos); s != want[i] {
				t.Errorf("notice %d = %s, want %s", i, s, want[i])
			}
		}

		// Incremental: only alice's changes after 1.
		items, err := s.AccountDataSince(ctx, alice, 1, s.AccountDataPosition())
		wantCode(t, err, "")
		if len(items) != 2 || items[0].Type != "m.tag" || items[0].RoomID != "!room:test.local" || items[1].Pos != 4 {
			t.Fatalf("since 1: %+v", items)
		}
		// Initial: everything plus the push rules.
		items, _ = s.AccountDataSince(ctx, alice, 0, s.AccountDataPosition())
		if len(items) != 3 || items[0].Type != TypePushRules || !strings.Contains(string(items[0].Content), `".m.rule.master"`) {
			t.Fatalf("initial: %+v", items)
		}
		// Nothing beyond upto.
		items, _ = s.AccountDataSince(ctx, alice, 2, 3)
		if len(items) != 0 {
			t.Fatalf("window (2,3]: %+v", items)
		}

		// A restarted service continues after the stored maximum.
		s2 := newTestService(t, db, bus)
		if s2.AccountDataPosition() != 4 {
			t.Fatalf("restarted at %d", s2.AccountDataPosition())
		}
	})
}

func TestAccountDataConcurrentOrder(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				user := fmt.Sprintf("@u%d:test.local", i%3)
				if err := s.SetAccountData(ctx, user, "", "t", json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		ns := bus.notices(t)
		if len(ns) != 20 {
			t.Fatalf("%d notices", len(ns))
		}
		last := map[string]int64{}
		for i, n := range ns {
			if n.Pos != int64(i+1) {
				t.Fatalf("notice %d has position %d", i, n.Pos)
			}
			last[n.UserID] = n.Pos
		}
		// The stored row of each user is its last published change.
		for user, pos := range last {
			var stored int64
			if err := db.QueryRow(ctx, `SELECT pos FROM account_data WHERE user_id = $1`, user).Scan(&stored); err != nil || stored != pos {
				t.Fatalf("%s: stored pos %d, last published %d (%v)", user, stored, pos, err)
			}
		}
	})
}

// TestAccountDataFailedWriteIsSkipped: a write that fails publishes its
// position as a skip (a notice with no user), so readers waiting for the
// position move on, and the next change follows it.
func TestAccountDataFailedWriteIsSkipped(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		err := s.writeAccountData(ctx, "@a:test.local", "", "t", func(*storage.Tx, int64) error { return errors.New("connection lost") })
		if err == nil {
			t.Fatal("the failing write succeeded")
		}
		if err := s.SetAccountData(ctx, "@a:test.local", "", "t", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
		ns := bus.notices(t)
		if len(ns) != 2 || ns[0].Pos != 1 || ns[0].UserID != "" || ns[1].Pos != 2 || ns[1].UserID != "@a:test.local" {
			t.Fatalf("notices %+v; want the skip of 1, then the change at 2", ns)
		}
		if s.AccountDataPosition() != 2 {
			t.Fatalf("position %d", s.AccountDataPosition())
		}
	})
}

func TestFilters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		id0, err := s.PutFilter(ctx, "@a:test.local", []byte(`{"room": {"timeline": {"limit": 10}}}`))
		wantCode(t, err, "")
		id1, _ := s.PutFilter(ctx, "@a:test.local", []byte(`{"presence": {"types": []}}`))
		again, _ := s.PutFilter(ctx, "@a:test.local", []byte(`{"room":{"timeline":{"limit":10}}}`))
		other, _ := s.PutFilter(ctx, "@b:test.local", []byte(`{}`))
		if id0 != "0" || id1 != "1" || again != "0" || other != "0" {
			t.Fatalf("ids %s %s %s %s", id0, id1, again, other)
		}
		f, err := s.GetFilter(ctx, "@a:test.local", "1")
		wantCode(t, err, "")
		if string(f) != `{"presence":{"types":[]}}` {
			t.Fatalf("filter %s", f)
		}
		// Read from the database by a fresh service (no cache).
		s2 := newTestService(t, db, nil)
		f, err = s2.GetFilter(ctx, "@a:test.local", "0")
		if err != nil || string(f) != `{"room":{"timeline":{"limit":10}}}` {
			t.Fatalf("fresh read %s %v", f, err)
		}
		for _, id := range []string{"2", "-1", "01", "x", "", "99999999999999999999"} {
			_, err := s2.GetFilter(ctx, "@a:test.local", id)
			wantCode(t, err, "M_NOT_FOUND")
		}
		_, err = s2.GetFilter(ctx, "@b:test.local", "1")
		wantCode(t, err, "M_NOT_FOUND")
	})
}

func TestProfiles(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		other := newTestService(t, db, bus)
		a := mustRegister(t, s, "alice", "pw")
		p, err := s.GetProfile(ctx, a.UserID)
		wantCode(t, err, "")
		if p.DisplayName != "alice" || p.AvatarURL != "" {
			t.Fatalf("default profile %+v", p)
		}
		if _, err := other.GetProfile(ctx, a.UserID); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.SetDisplayName(ctx, a.UserID, "Alice A."), "")
		wantCode(t, s.SetAvatarURL(ctx, a.UserID, "mxc://test.local/xyz"), "")
		for _, svc := range []*Service{s, other} {
			dn, av, err := svc.Profile(ctx, a.UserID)
			if dn != "Alice A." || av != "mxc://test.local/xyz" || err != nil {
				t.Fatalf("profile %q %q %v", dn, av, err)
			}
		}
		wantCode(t, s.SetDisplayName(ctx, a.UserID, ""), "")
		p, _ = other.GetProfile(ctx, a.UserID)
		if p.DisplayName != "" {
			t.Fatalf("cleared display name %q", p.DisplayName)
		}
		wantCode(t, s.SetDisplayName(ctx, a.UserID, strings.Repeat("x", MaxDisplayNameBytes+1)), "M_BAD_JSON")
		// Any URL, as Synapse takes it, not only mxc:// ones.
		wantCode(t, s.SetAvatarURL(ctx, a.UserID, "https://example.org/a.png"), "")
		// PostgreSQL cannot store a NUL byte: refused on both databases.
		wantCode(t, s.SetDisplayName(ctx, a.UserID, "Al\x00ice"), "M_INVALID_PARAM")
		wantCode(t, s.SetAvatarURL(ctx, a.UserID, "mxc://test.local/a\x00b"), "M_INVALID_PARAM")
		wantCode(t, s.SetAvatarURL(ctx, a.UserID, "mxc://"+strings.Repeat("x", MaxAvatarURLBytes)), "M_BAD_JSON")
		wantCode(t, s.SetDisplayName(ctx, "@ghost:test.local", "x"), "M_NOT_FOUND")
		for _, id := range []string{"@ghost:test.local", "@alice:elsewhere.org", "alice"} {
			_, err := s.GetProfile(ctx, id)
			wantCode(t, err, "M_NOT_FOUND")
		}
		if dn, av, err := s.Profile(ctx, "@ghost:test.local"); dn != "" || av != "" || err != nil {
			t.Fatalf("unknown user's profile %q %q %v", dn, av, err)
		}
		if ok, _ := s.AccountExists(ctx, "@ghost:test.local"); ok {
			t.Fatal("ghost exists")
		}
	})
}

func TestSharedSecretRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		secret := s.opts.SharedSecret
		nonce, err := s.NewRegistrationNonce(ctx)
		wantCode(t, err, "")
		req := SharedSecretRequest{Nonce: nonce, Username: "Bot", Password: "pw", Admin: true, DisplayName: "The Bot"}
		req.MAC = SharedSecretMAC(secret, nonce, "Bot", "pw", false, nil) // signed as notadmin
		_, err = s.RegisterWithSharedSecret(ctx, req)
		wantCode(t, err, "M_FORBIDDEN")
		// The nonce is used up even by a failed attempt.
		req.MAC = SharedSecretMAC(secret, nonce, "Bot", "pw", true, nil)
		_, err = s.RegisterWithSharedSecret(ctx, req)
		wantCode(t, err, "M_UNKNOWN")

		nonce, _ = s.NewRegistrationNonce(ctx)
		req.Nonce = nonce
		req.MAC = strings.ToUpper(SharedSecretMAC(secret, nonce, "Bot", "pw", true, nil))
		sess, err := s.RegisterWithSharedSecret(ctx, req)
		wantCode(t, err, "")
		if sess.UserID != "@bot:test.local" || sess.AccessToken == "" {
			t.Fatalf("session %+v", sess)
		}
		dev, _ := s.Authenticate(ctx, sess.AccessToken)
		if !dev.IsAdmin {
			t.Fatal("admin flag lost")
		}
		if p, _ := s.GetProfile(ctx, sess.UserID); p.DisplayName != "The Bot" {
			t.Fatalf("display name %q", p.DisplayName)
		}
		_, err = s.RegisterWithSharedSecret(ctx, req)
		wantCode(t, err, "M_UNKNOWN") // nonce reused

		off := newTestService(t, db, nil, func(o *Options) { o.SharedSecret = "" })
		_, err = off.NewRegistrationNonce(ctx)
		wantCode(t, err, "M_UNKNOWN")
		_, err = off.RegisterWithSharedSecret(ctx, req)
		wantCode(t, err, "M_UNKNOWN")
	})
}
