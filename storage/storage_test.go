package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestOlderBinaryRefusesNewerSchema: a database a newer Haven migrated
// further than this binary knows is refused with both versions named,
// and nothing is changed.
func TestOlderBinaryRefusesNewerSchema(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		ms, err := storage.Migrations()
		if err != nil {
			t.Fatal(err)
		}
		latest := ms[len(ms)-1].Version
		if _, err := db.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)`, latest+1, "from_the_future", 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.Pending(ctx); !errors.As(err, new(*storage.SchemaNewerError)) {
			t.Fatalf("pending on a newer schema: %v", err)
		}
		_, err = db.MigrateReport(ctx)
		var newer *storage.SchemaNewerError
		if !errors.As(err, &newer) || newer.Database != latest+1 || newer.Binary != latest {
			t.Fatalf("migrate on a newer schema: %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(latest+1)) || !strings.Contains(msg, fmt.Sprint(latest)) {
			t.Fatalf("the message names both versions: %q", msg)
		}
	})
}

func TestMigrateIsIdempotentAndListsWork(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, pending, err := db.Pending(ctx); err != nil || len(pending) != 0 {
			t.Fatalf("pending after migrating: %v %v", pending, err)
		}
		applied, err := db.MigrateReport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != 0 {
			t.Fatalf("second migrate applied %v", applied)
		}
		v, err := db.AppliedVersion(ctx)
		if err != nil || v < 1 {
			t.Fatalf("version %d, %v", v, err)
		}
		err = db.Write(ctx, func(tx *storage.Tx) error {
			for i, id := range []string{"@a:x", "@b:x", "@c:x"} {
				if _, err := tx.Exec(ctx, `INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)`, id, string(rune('A'+i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(ctx, `SELECT displayname FROM profiles WHERE user_id IN ($1) AND displayname <> $2 ORDER BY displayname`, []string{"@a:x", "@c:x"}, "zzz")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			got = append(got, s)
		}
		rows.Close()
		if len(got) != 2 || got[0] != "A" || got[1] != "C" {
			t.Fatalf("got %v", got)
		}
		_, err = db.Exec(ctx, `INSERT INTO profiles (user_id) VALUES ($1)`, "@a:x")
		if !storage.IsUniqueViolation(err) {
			t.Fatalf("want unique violation, got %v", err)
		}
		// a failing transaction leaves nothing behind
		boom := errors.New("boom")
		err = db.Write(ctx, func(tx *storage.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO profiles (user_id) VALUES ($1)`, "@d:x"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM profiles WHERE user_id = $1`, "@d:x").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled back row is there: %d %v", n, err)
		}
	})
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in      string
		dialect storage.Dialect
		ok      bool
	}{
		{"", storage.SQLite, true},
		{"sqlite", storage.SQLite, true},
		{"sqlite:///var/lib/haven/h.db", storage.SQLite, true},
		{"postgres://u:p@db:5432/haven?sslmode=disable", storage.Postgres, true},
		{"postgresql://u@db/haven", storage.Postgres, true},
		{"mysql://x", 0, false},
		{"sqlite://", 0, false},
	}
	for _, c := range cases {
		tg, err := storage.ParseTarget(c.in, "/data")
		if (err == nil) != c.ok {
			t.Fatalf("%q: err %v", c.in, err)
		}
		if c.ok && tg.Dialect != c.dialect {
			t.Fatalf("%q: dialect %v", c.in, tg.Dialect)
		}
	}
	tg, _ := storage.ParseTarget("postgres://u:secret@db:5432/haven", "")
	if got := tg.Redacted(); got != "postgres://u:xxxxx@db:5432/haven" {
		t.Fatalf("redacted %q", got)
	}
}

func TestOneWriterPerDatabase(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			target := storagetest.Target(t, d)
			a, err := storage.Open(ctx, target, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := storage.Open(ctx, target, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			release, err := a.AcquireWriter(ctx, target.Path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.AcquireWriter(ctx, target.Path); !errors.Is(err, storage.ErrWriterLocked) {
				t.Fatalf("second writer: %v", err)
			}
			release()
			release2, err := b.AcquireWriter(ctx, target.Path)
			if err != nil {
				t.Fatalf("after release: %v", err)
			}
			release2()
		})
	}
}

// TestConcurrentWritesFailAlone: writes that share a commit (SQLite groups
// them) succeed or fail each on its own.
func TestConcurrentWritesFailAlone(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make([]error, 200)
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.Write(ctx, func(tx *storage.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)`, fmt.Sprintf("@u%d:x", i), "n"); err != nil {
						return err
					}
					if i%7 == 0 {
						return errors.New("this one fails after writing")
					}
					if i%11 == 0 {
						panic("this one panics after writing")
					}
					return nil
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM profiles WHERE user_id = $1`, fmt.Sprintf("@u%d:x", i)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			bad := i%7 == 0 || i%11 == 0
			if bad != (err != nil) || bad != (n == 0) {
				t.Fatalf("write %d: err %v, rows %d", i, err, n)
			}
		}
	})
}

// TestBackgroundCheckpoint: the writer leaves checkpoints to the background
// checkpointer, which copies committed pages into the database file.
func TestBackgroundCheckpoint(t *testing.T) {
	ctx := context.Background()
	target := storagetest.Target(t, storage.SQLite)
	db, err := storage.Open(ctx, target, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, `CREATE TABLE filler (x TEXT)`); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		st, err := os.Stat(target.Path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	time.Sleep(600 * time.Millisecond) // the table's page reaches the file
	before := size()
	err = db.Write(ctx, func(tx *storage.Tx) error {
		for i := 0; i < 100; i++ {
			if _, err := tx.Exec(ctx, `INSERT INTO filler (x) VALUES ($1)`, strings.Repeat("x", 4000)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for size() < before+100*4000 {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes, %d before 100 rows of 4000 bytes: not checkpointed", size(), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
