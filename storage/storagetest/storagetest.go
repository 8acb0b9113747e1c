// Package storagetest runs a test on a fresh SQLite file and on a fresh
// PostgreSQL schema. PostgreSQL is taken from HAVEN_TEST_POSTGRES, by default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable; .ci/run makes
// sure it is there. A test never silently skips PostgreSQL.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/haven-chat/haven/storage"
)

// PostgresURL is the server the tests use.
func PostgresURL() string {
	if u := os.Getenv("HAVEN_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// Each runs fn as two subtests, "sqlite" and "postgres", each on a new, migrated database.
func Each(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}

// Targets returns a fresh SQLite target and a fresh PostgreSQL schema target, keyed by dialect name.
func Target(t testing.TB, d storage.Dialect) storage.Target {
	t.Helper()
	if d == storage.SQLite {
		return storage.Target{Dialect: storage.SQLite, Path: filepath.Join(t.TempDir(), "haven.db")}
	}
	return storage.Target{Dialect: storage.Postgres, URL: NewSchema(t)}
}

// Open returns a migrated database of the given kind, closed when the test ends.
func Open(t testing.TB, d storage.Dialect) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), Target(t, d), storage.Options{MaxOpenConns: 10})
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	t.Cleanup(db.Close)
	return db
}

// NewSchema creates an empty PostgreSQL schema for this test and returns a
// URL whose search_path points at it; the schema is dropped at the end.
func NewSchema(t testing.TB) string {
	t.Helper()
	base := PostgresURL()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		admin.Close()
		t.Fatalf("postgres at %s is needed for this test (run .ci/run, or set HAVEN_TEST_POSTGRES): %v", storage.RedactURL(base), err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("HAVEN_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
