package userapi

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type fixedPolicy bool

func (p fixedPolicy) Required(context.Context, string, bool) (bool, error) { return bool(p), nil }

func TestLoginTokenAndSecondFactor(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Unix(1700000000, 0)
		s := newTestService(t, db, nil, func(o *Options) {
			o.Now = func() time.Time { return now }
			o.SecondFactor = fixedPolicy(true)
		})
		sess := mustRegister(t, s, "alice", "password-alice")
		// Single use.
		tok, err := s.IssueLoginToken(ctx, sess.UserID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.LoginWithToken(ctx, TokenLoginRequest{Token: tok})
		wantCode(t, err, "")
		if got.UserID != sess.UserID || got.AccessToken == "" {
			t.Fatalf("session %+v", got)
		}
		_, err = s.LoginWithToken(ctx, TokenLoginRequest{Token: tok})
		wantCode(t, err, "M_FORBIDDEN")
		// Expiry; an expired token is used up too.
		tok2, _ := s.IssueLoginToken(ctx, sess.UserID)
		now = now.Add(LoginTokenLifetime + time.Second)
		_, err = s.LoginWithToken(ctx, TokenLoginRequest{Token: tok2})
		wantCode(t, err, "M_FORBIDDEN")
		// A token for a deactivated account gives no session.
		tok3, _ := s.IssueLoginToken(ctx, sess.UserID)
		wantCode(t, s.Deactivate(ctx, sess.UserID), "")
		_, err = s.LoginWithToken(ctx, TokenLoginRequest{Token: tok3})
		wantCode(t, err, "M_USER_DEACTIVATED")

		// Password login is refused after the password, for accounts that
		// need a second factor; a wrong password stays a wrong password.
		mustRegister(t, s, "bob", "password-bob")
		_, err = s.Login(ctx, LoginRequest{User: "bob", Password: "password-bob"})
		wantCode(t, err, "M_FORBIDDEN")
		if err.Error() == errBadLogin().Error() {
			t.Fatal("refusal reads as a wrong password")
		}
		// Sensitive operations offer m.login.sso instead of the password.
		err = s.CheckUIA(ctx, UIARequest{Op: "password", UserID: "@bob:" + testServer, Flows: PasswordFlows()})
		body := UIABody(err)
		if fl, ok := body["flows"].([]uiaFlow); !ok || len(fl) != 1 || fl[0].Stages[0] != StageSSO {
			t.Fatalf("flows %v", body["flows"])
		}
		session := body["session"].(string)
		wantCode(t, s.CompleteUIAStage(ctx, session, "@alice:"+testServer, StageSSO), "M_FORBIDDEN")
		wantCode(t, s.CompleteUIAStage(ctx, session, "@bob:"+testServer, StageSSO), "")
		wantCode(t, s.CheckUIA(ctx, UIARequest{Op: "password", UserID: "@bob:" + testServer, Flows: PasswordFlows(),
			Auth: []byte(`{"session":"` + session + `"}`)}), "")
	})
}
