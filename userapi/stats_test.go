package userapi

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestCountUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		if c, err := s.CountUsers(ctx); err != nil || c != (UserCounts{}) {
			t.Fatalf("empty server: %+v, %v", c, err)
		}
		mustRegister(t, s, "old", "pw") // seen 40 days ago
		clk.Add(20 * 24 * time.Hour)
		mustRegister(t, s, "monthly", "pw") // seen 20 days ago
		mustRegister(t, s, "gone", "pw")
		clk.Add(20 * 24 * time.Hour)
		mustRegister(t, s, "daily", "pw")
		if _, err := s.CreateAccount(ctx, "nodevice", "pw", false, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Register(ctx, RegisterRequest{Guest: true, Via: "test"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Deactivate(ctx, "@gone:"+testServer); err != nil {
			t.Fatal(err)
		}
		c, err := s.CountUsers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := UserCounts{Total: 6, Active: 5, Deactivated: 1, Guests: 1, Daily: 2, Monthly: 3}
		if c != want {
			t.Errorf("counts %+v, want %+v", c, want)
		}
	})
}
