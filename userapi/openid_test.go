package userapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestOpenIDTokens: a token names its user until it expires or the account
// is deactivated; only its hash is stored.
func TestOpenIDTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		alice := mustRegister(t, s, "alice", "pw")
		token, lifetime, err := s.NewOpenIDToken(ctx, alice.UserID)
		if err != nil || lifetime != time.Hour || !strings.HasPrefix(token, "hvo_") {
			t.Fatalf("token %q %v %v", token, lifetime, err)
		}
		if who, err := s.OpenIDUser(ctx, token); err != nil || who != alice.UserID {
			t.Fatalf("user of the token: %q %v", who, err)
		}
		var stored int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM openid_tokens WHERE token_hash = $1`, token).Scan(&stored); err != nil || stored != 0 {
			t.Fatalf("the token itself is stored (%d, %v)", stored, err)
		}
		_, err = s.OpenIDUser(ctx, "hvo_nonsense")
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		// Expired: unknown, and deleted when the next token is made.
		clk.Add(time.Hour)
		_, err = s.OpenIDUser(ctx, token)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		fresh, _, err := s.NewOpenIDToken(ctx, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM openid_tokens`).Scan(&stored); err != nil || stored != 1 {
			t.Fatalf("%d tokens stored after the first expired (%v)", stored, err)
		}
		// Deactivation ends the tokens.
		if err := s.Deactivate(ctx, alice.UserID); err != nil {
			t.Fatal(err)
		}
		_, err = s.OpenIDUser(ctx, fresh)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
	})
}
