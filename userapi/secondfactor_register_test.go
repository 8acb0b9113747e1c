package userapi

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// requireAll is a two-factor policy under which every account needs one.
type requireAll struct{}

func (requireAll) Required(context.Context, string, bool) (bool, error) { return true, nil }

// Under a required second factor a client's registration makes the account
// without a session, a guest is not upgraded, and the operator's ways keep
// theirs.
func TestRegistrationWithoutPasswordSession(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil, func(o *Options) { o.SecondFactor = requireAll{} })
		sess, err := s.Register(ctx, RegisterRequest{Localpart: "alice", Password: "pw", Via: "client", ClientAddr: "192.0.2.1"})
		if err != nil || sess.AccessToken != "" || sess.DeviceID != "" || !sess.SecondFactorFirst {
			t.Fatalf("client registration: %+v %v", sess, err)
		}
		sess, err = s.Register(ctx, RegisterRequest{Localpart: "ops", Password: "pw", Via: "shared_secret"})
		if err != nil || sess.AccessToken == "" || sess.SecondFactorFirst {
			t.Fatalf("shared-secret registration: %+v %v", sess, err)
		}
		guest, err := s.Register(ctx, RegisterRequest{Guest: true, Via: "client"})
		if err != nil || guest.AccessToken == "" {
			t.Fatalf("guest: %+v %v", guest, err)
		}
		dev, err := s.Authenticate(ctx, guest.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		hash, err := s.HashNewPassword("a long password")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.UpgradeGuest(ctx, dev, hash, "", "", "192.0.2.1", false)
		wantCode(t, err, "M_FORBIDDEN")
		if g, _ := s.IsGuest(ctx, guest.UserID); !g {
			t.Fatal("the guest was upgraded")
		}
	})
}
