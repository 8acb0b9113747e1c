package userapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestUpstreamEmail(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		open := UpstreamPolicy{CreateAccounts: true}
		emails := func(t *testing.T, uid string) []string {
			t.Helper()
			tp, err := s.ThreePIDs(ctx, uid)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range tp {
				if p.Medium != "email" || p.ValidatedAt == 0 {
					t.Fatalf("threepid %+v", p)
				}
				out = append(out, p.Address)
			}
			return out
		}
		signIn := func(t *testing.T, sub, name, email string, unverified bool) string {
			t.Helper()
			uid, _, err := s.SignInUpstream(ctx, UpstreamIdentity{Provider: "kc", Subject: sub, Localpart: name, Email: email, EmailUnverified: unverified}, open, "")
			wantCode(t, err, "")
			return uid
		}
		for _, step := range []struct {
			name, email string
			unverified  bool
			want        string
		}{
			{"first sign-in keeps the address, lower-cased", "Carol@Example.COM", false, "carol@example.com"},
			{"the same again changes nothing", "carol@example.com", false, "carol@example.com"},
			{"no claim keeps it", "", false, "carol@example.com"},
			{"an invalid claim keeps it", "not an address", false, "carol@example.com"},
			{"an unverified one is not taken", "carol@new.example", true, "carol@example.com"},
			{"a new address replaces the provider's old one", "carol@new.example", false, "carol@new.example"},
		} {
			uid := signIn(t, "s-carol", "carol", step.email, step.unverified)
			if got := emails(t, uid); len(got) != 1 || got[0] != step.want {
				t.Fatalf("%s: %v", step.name, got)
			}
		}
		// An address bound to another account stays there.
		dave := signIn(t, "s-dave", "dave", "carol@new.example", false)
		if got := emails(t, dave); len(got) != 0 {
			t.Fatalf("dave took carol's address: %v", got)
		}
		// An address the user added themselves is not removed when the
		// provider's changes.
		if _, err := db.Exec(ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts) VALUES ('email', 'dave@home.example', $1, 1, 1)`, dave); err != nil {
			t.Fatal(err)
		}
		signIn(t, "s-dave", "dave", "dave@work.example", false)
		signIn(t, "s-dave", "dave", "dave@work2.example", false)
		if got := emails(t, dave); len(got) != 2 || got[0] != "dave@home.example" || got[1] != "dave@work2.example" {
			t.Fatalf("dave's addresses: %v", got)
		}
	})
}

// An account that signs in only at a company provider is offered
// m.login.sso for sensitive actions; one with a password keeps it.
func TestUpstreamOnlyUIA(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil, func(o *Options) { o.UpstreamUIA = true })
		carol, _, err := s.SignInUpstream(ctx, UpstreamIdentity{Provider: "kc", Subject: "s-carol", Localpart: "carol"}, UpstreamPolicy{CreateAccounts: true}, "")
		wantCode(t, err, "")
		erin := mustRegister(t, s, "erin", "password-erin")
		_, _, err = s.SignInUpstream(ctx, UpstreamIdentity{Provider: "kc", Subject: "s-erin", Localpart: "erin"}, UpstreamPolicy{AllowExistingUsers: true}, "")
		wantCode(t, err, "")
		for uid, want := range map[string]string{carol: StageSSO, erin.UserID: StagePassword} {
			_, me := uiaStep(t, s, UIARequest{Op: "delete_devices", UserID: uid, Flows: PasswordFlows()})
			if me == nil {
				t.Fatal("no challenge")
			}
			raw, _ := json.Marshal(UIABody(me)["flows"])
			if string(raw) != `[{"stages":["`+want+`"]}]` {
				t.Fatalf("%s: flows %s", uid, raw)
			}
		}
	})
}
