package userapi

import (
	"context"
	"strings"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// fakeAppServices holds @_bridge_*:test.local for "bridge" and makes
// @_bridge_made:test.local when asked about it.
type fakeAppServices struct {
	s       *Service
	queried []string
}

func (f *fakeAppServices) ExclusiveUserOwner(userID string) string {
	if strings.HasPrefix(userID, "@_bridge_") {
		return "bridge"
	}
	return ""
}

func (f *fakeAppServices) QueryUser(ctx context.Context, userID string) bool {
	f.queried = append(f.queried, userID)
	if userID != "@_bridge_made:test.local" {
		return false
	}
	_, err := f.s.Register(ctx, RegisterRequest{Localpart: "_bridge_made", AppService: "bridge", InhibitLogin: true, Via: "appservice"})
	return err == nil
}

func TestAppServiceAccounts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		as := &fakeAppServices{}
		s := newTestService(t, db, nil, func(o *Options) { o.AppServices = as })
		as.s = s

		// The exclusive namespace is closed to everyone but its service.
		_, err := s.CheckUsernameAvailable(ctx, "_bridge_alice")
		wantCode(t, err, "M_EXCLUSIVE")
		_, err = s.Register(ctx, RegisterRequest{Localpart: "_bridge_alice", Password: "pw-pw-pw-pw"})
		wantCode(t, err, "M_EXCLUSIVE")
		_, err = s.Register(ctx, RegisterRequest{Localpart: "_bridge_alice", AppService: "other"})
		wantCode(t, err, "M_EXCLUSIVE")
		sess, err := s.Register(ctx, RegisterRequest{Localpart: "_bridge_alice", AppService: "bridge", Via: "appservice"})
		wantCode(t, err, "")

		// Such an account has no password: only its service logs in as it.
		_, err = s.Login(ctx, LoginRequest{User: "_bridge_alice", Password: ""})
		wantCode(t, err, "M_FORBIDDEN")
		sess2, err := s.Login(ctx, LoginRequest{User: "@_bridge_alice:test.local", AppService: "bridge"})
		wantCode(t, err, "")
		if sess2.UserID != sess.UserID || sess2.AccessToken == "" || sess2.DeviceID == sess.DeviceID {
			t.Fatalf("login as the service: %+v after %+v", sess2, sess)
		}
		_, err = s.Login(ctx, LoginRequest{User: "_bridge_nobody", AppService: "bridge"})
		wantCode(t, err, "M_FORBIDDEN")

		// A profile lookup of an unknown user asks the services, once.
		_, err = s.GetProfile(ctx, "@_bridge_made:test.local")
		wantCode(t, err, "")
		_, err = s.GetProfile(ctx, "@_bridge_ghost:test.local")
		wantCode(t, err, "M_NOT_FOUND")
		if strings.Join(as.queried, ",") != "@_bridge_made:test.local,@_bridge_ghost:test.local" {
			t.Fatalf("queried %v", as.queried)
		}
	})
}
