package serverkey_test

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestLoadRotateAll(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		first, err := serverkey.Load(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		again, err := serverkey.Load(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || !again.Private.Equal(first.Private) || again.ExpiredTS != 0 {
			t.Fatalf("Load is not stable: %s then %s", first.ID, again.ID)
		}
		second, err := serverkey.Rotate(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if second.ID == first.ID {
			t.Fatal("rotation kept the key ID")
		}
		active, err := serverkey.Load(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if active.ID != second.ID {
			t.Fatalf("Load after rotation = %s, want the new key %s", active.ID, second.ID)
		}
		third, err := serverkey.Rotate(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		all, err := serverkey.All(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3 {
			t.Fatalf("All = %d keys, want 3", len(all))
		}
		if all[0].ID != third.ID || all[0].ExpiredTS != 0 {
			t.Fatalf("All[0] = %s (expired %d), want the active key %s", all[0].ID, all[0].ExpiredTS, third.ID)
		}
		for _, k := range all[1:] {
			if k.ExpiredTS == 0 {
				t.Fatalf("old key %s is not marked expired", k.ID)
			}
		}
		if all[1].ID != second.ID || all[2].ID != first.ID {
			t.Fatalf("old keys in order %s, %s; want %s, %s", all[1].ID, all[2].ID, second.ID, first.ID)
		}
	})
}

// Two processes starting at once on an empty database agree on one key.
func TestLoadConcurrent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const n = 8
		ids := make(chan string, n)
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() {
				k, err := serverkey.Load(ctx, db)
				if err != nil {
					errs <- err
					return
				}
				ids <- string(k.ID)
			}()
		}
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			select {
			case err := <-errs:
				t.Fatal(err)
			case id := <-ids:
				seen[id] = true
			}
		}
		if len(seen) != 1 {
			t.Fatalf("concurrent loads chose %d keys: %v", len(seen), seen)
		}
	})
}
