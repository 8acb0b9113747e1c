package storage_test

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestErrorsCounted: failures of the database count in storage.Errors;
// unique conflicts (answers table code relies on) and cancelled requests
// do not.
func TestErrorsCounted(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES (100000, 'x', 0)`); err != nil {
			t.Fatal(err)
		}
		before := storage.Errors.Load()
		if _, err := db.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES (100000, 'x', 0)`); !storage.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert: %v", err)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := db.Query(cancelled, `SELECT version FROM schema_migrations`); err == nil {
			t.Fatal("a cancelled query ran")
		}
		if n := storage.Errors.Load() - before; n != 0 {
			t.Fatalf("a unique conflict and a cancelled query counted %d errors", n)
		}
		if _, err := db.Query(ctx, `SELECT no_such_column FROM schema_migrations`); err == nil {
			t.Fatal("a bad query ran")
		}
		err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE no_such_table SET x = 1`)
			return err
		})
		if err == nil {
			t.Fatal("a bad statement ran")
		}
		if n := storage.Errors.Load() - before; n != 2 {
			t.Fatalf("two failed statements counted %d errors", n)
		}
	})
}
