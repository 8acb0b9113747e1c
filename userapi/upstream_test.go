package userapi

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestSignInUpstream(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		open := UpstreamPolicy{CreateAccounts: true}
		id := func(sub, name string) UpstreamIdentity {
			return UpstreamIdentity{Provider: "kc", Subject: sub, Localpart: name, DisplayName: "Carol C."}
		}
		// First sign-in makes the account, with the display name.
		uid, admin, err := s.SignInUpstream(ctx, id("s-carol", "Carol"), open, "10.0.0.1")
		wantCode(t, err, "")
		if uid != "@carol:"+testServer || admin {
			t.Fatalf("made %s admin=%v", uid, admin)
		}
		if dn, _, _ := s.Profile(ctx, uid); dn != "Carol C." {
			t.Fatalf("display name %q", dn)
		}
		// Renamed at the provider: the same account, by the subject.
		again, _, err := s.SignInUpstream(ctx, id("s-carol", "carol.new"), UpstreamPolicy{}, "")
		wantCode(t, err, "")
		if again != uid {
			t.Fatalf("after a rename: %s", again)
		}
		// An email-like claim names the part before the @.
		u2, _, err := s.SignInUpstream(ctx, id("s-dave", "Dave@Example.com"), open, "")
		wantCode(t, err, "")
		if u2 != "@dave:"+testServer {
			t.Fatalf("email-like localpart: %s", u2)
		}
		// A new person given a name whose account exists (another subject
		// linked it, or it is a local account) is refused without
		// allow_existing_users, and never gets another person's account.
		_, _, err = s.SignInUpstream(ctx, id("s-imposter", "carol"), open, "")
		wantCode(t, err, "M_FORBIDDEN")
		_, _, err = s.SignInUpstream(ctx, id("s-imposter", "carol"), UpstreamPolicy{CreateAccounts: true, AllowExistingUsers: true}, "")
		wantCode(t, err, "M_FORBIDDEN")
		// allow_existing_users links a local account once.
		mustRegister(t, s, "erin", "password-erin")
		_, _, err = s.SignInUpstream(ctx, id("s-erin", "erin"), open, "")
		wantCode(t, err, "M_FORBIDDEN")
		ue, _, err := s.SignInUpstream(ctx, id("s-erin", "erin"), UpstreamPolicy{AllowExistingUsers: true}, "")
		wantCode(t, err, "")
		if ue != "@erin:"+testServer {
			t.Fatalf("linked %s", ue)
		}
		// Only existing users: nobody new.
		_, _, err = s.SignInUpstream(ctx, id("s-frank", "frank"), UpstreamPolicy{AllowExistingUsers: true}, "")
		wantCode(t, err, "M_FORBIDDEN")
		// Unusable names and missing subjects.
		for _, bad := range []UpstreamIdentity{id("s-x", ""), id("s-x", "has space"), id("", "zed"), {Subject: "s", Localpart: "zed"}} {
			_, _, err = s.SignInUpstream(ctx, bad, open, "")
			wantCode(t, err, "M_FORBIDDEN")
		}
	})
}
