package regtokens

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestTokenUses(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_000_000)
		s := New(db)
		s.now = func() time.Time { return now }
		two, exp := int64(2), int64(2_000_000)
		if _, err := s.Create(ctx, NewToken{Token: "t", UsesAllowed: &two, ExpiryTime: &exp}); err != nil {
			t.Fatal(err)
		}
		reserve := func(want bool) {
			t.Helper()
			if ok, err := s.ReserveRegistrationToken(ctx, "t"); err != nil || ok != want {
				t.Fatalf("reserve: %v %v, want %v", ok, err, want)
			}
		}
		reserve(true)
		reserve(true)
		reserve(false) // both uses taken, one pending each
		if err := s.FinishRegistrationToken(ctx, "t", false); err != nil {
			t.Fatal(err)
		}
		reserve(true) // given back
		if err := s.FinishRegistrationToken(ctx, "t", true); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "t")
		if err != nil || got.Pending != 1 || got.Completed != 1 {
			t.Fatalf("after uses: %+v %v", got, err)
		}
		// Expired: neither valid nor reservable, and listed as invalid.
		if _, err := s.Update(ctx, "t", Change{SetUses: true}); err != nil {
			t.Fatal(err)
		}
		now = time.UnixMilli(exp)
		if ok, _ := s.ValidRegistrationToken(ctx, "t"); ok {
			t.Fatal("expired token valid")
		}
		reserve(false)
		valid := false
		if list, err := s.List(ctx, &valid); err != nil || len(list) != 1 {
			t.Fatalf("invalid list: %v %v", list, err)
		}
		if ok, _ := s.ValidRegistrationToken(ctx, "bad token"); ok {
			t.Fatal("malformed token valid")
		}
	})
}
