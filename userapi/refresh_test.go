package userapi

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// softLogout tells whether err is M_UNKNOWN_TOKEN with soft_logout set.
func softLogout(t *testing.T, err error) bool {
	t.Helper()
	me, ok := merr.As(err)
	if !ok || me.Code != "M_UNKNOWN_TOKEN" {
		t.Fatalf("error %v, want M_UNKNOWN_TOKEN", err)
	}
	b, _ := me.Extra["soft_logout"].(bool)
	return b
}

// TestRefreshTokens: a session that asks for a refresh token gets an
// access token that expires (then 401 M_UNKNOWN_TOKEN, soft_logout); a
// refresh replaces both tokens and stops the old access token; the refresh
// token used works again until the new access token or refresh token is
// used; a session that does not ask keeps a token that never expires; a
// new login on the device drops its refresh tokens.
func TestRefreshTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		c := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = c.Now; o.AccessTokenLifetime = time.Minute })
		mustRegister(t, s, "alice", "pw")
		plain, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		if err != nil || plain.RefreshToken != "" || plain.ExpiresInMS != 0 {
			t.Fatalf("login without refresh: %+v %v", plain, err)
		}
		s1, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw", DeviceID: "PHONE", Refresh: true})
		if err != nil || s1.RefreshToken == "" || s1.ExpiresInMS != 60_000 || s1.RefreshToken == s1.AccessToken {
			t.Fatalf("login with refresh: %+v %v", s1, err)
		}
		if _, err := s.Authenticate(ctx, s1.AccessToken); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Minute)
		if _, err := s.Authenticate(ctx, s1.AccessToken); !softLogout(t, err) {
			t.Fatal("an expired token is not a soft logout")
		}
		if _, err := s.Authenticate(ctx, plain.AccessToken); err != nil {
			t.Fatalf("a token without refresh expired: %v", err)
		}
		// Logging out still works with an expired token.
		if d, err := s.Authenticate(AllowExpired(ctx), s1.AccessToken); err != nil || d.DeviceID != "PHONE" {
			t.Fatalf("expired token where allowed: %+v %v", d, err)
		}

		// Refresh: new tokens for the same device; the old access token is gone.
		s2, err := s.Refresh(ctx, s1.RefreshToken)
		if err != nil || s2.DeviceID != "PHONE" || s2.AccessToken == s1.AccessToken || s2.RefreshToken == s1.RefreshToken || s2.ExpiresInMS != 60_000 {
			t.Fatalf("refresh: %+v %v", s2, err)
		}
		if _, err := s.Authenticate(ctx, s1.AccessToken); softLogout(t, err) {
			t.Fatal("the replaced access token is a soft logout")
		}
		// The answer was lost: the same refresh token works again, and the
		// tokens it gave before stop working.
		s3, err := s.Refresh(ctx, s1.RefreshToken)
		if err != nil {
			t.Fatalf("second refresh with the same token: %v", err)
		}
		if _, err := s.Authenticate(ctx, s2.AccessToken); err == nil {
			t.Fatal("the lost access token still works")
		}
		if _, err := s.Refresh(ctx, s2.RefreshToken); err == nil {
			t.Fatal("the lost refresh token still works")
		}
		// Using the new access token revokes the old refresh token.
		d, err := s.Authenticate(ctx, s3.AccessToken)
		if err != nil || d.DeviceID != "PHONE" {
			t.Fatalf("new token: %+v %v", d, err)
		}
		if _, err := s.Refresh(ctx, s1.RefreshToken); softLogout(t, err) {
			t.Fatal("a revoked refresh token is a soft logout")
		}
		// Using the new refresh token revokes the one before it as well.
		s4, err := s.Refresh(ctx, s3.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		s5, err := s.Refresh(ctx, s4.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Refresh(ctx, s3.RefreshToken); err == nil {
			t.Fatal("the refresh token before the one used still works")
		}
		// A new login on the device drops its refresh tokens; so does logout.
		s6, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw", DeviceID: "PHONE"})
		if err != nil || s6.RefreshToken != "" {
			t.Fatalf("login again: %+v %v", s6, err)
		}
		for _, tok := range []string{s4.RefreshToken, s5.RefreshToken} {
			if _, err := s.Refresh(ctx, tok); err == nil {
				t.Fatal("a refresh token survived a new login on its device")
			}
		}
		s7, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw", Refresh: true})
		if err != nil {
			t.Fatal(err)
		}
		d, err = s.Authenticate(ctx, s7.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Logout(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Refresh(ctx, s7.RefreshToken); err == nil {
			t.Fatal("a refresh token survived logout")
		}
		if _, err := s.Refresh(ctx, ""); !merr.Is(err, "M_MISSING_PARAM") {
			t.Fatalf("empty refresh token: %v", err)
		}
		// Registration can ask for one too.
		r, err := s.Register(ctx, RegisterRequest{Localpart: "bob", Password: "pw", Refresh: true, Via: "test"})
		if err != nil || r.RefreshToken == "" || r.ExpiresInMS != 60_000 {
			t.Fatalf("register with refresh: %+v %v", r, err)
		}
	})
}
