package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered, embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: name must start with a number and an underscore", name)
		}
		body, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(name, ".sql"), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("two migrations numbered %d", out[i].Version)
		}
	}
	return out, nil
}

// ForDialect turns the one SQL text into the text for a dialect: lines
// ending in "-- only: postgres" or "-- only: sqlite" are kept for that
// engine only, and a few type names are translated for SQLite.
func ForDialect(sqlText string, d Dialect) string {
	var b strings.Builder
	for _, line := range strings.Split(sqlText, "\n") {
		if i := strings.Index(line, "-- only:"); i >= 0 {
			want := strings.TrimSpace(line[i+len("-- only:"):])
			if want != d.String() {
				continue
			}
			line = line[:i]
		}
		if d == SQLite {
			line = strings.ReplaceAll(line, "BYTEA", "BLOB")
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// AppliedVersion returns the highest applied migration, 0 for a new database.
func (db *DB) AppliedVersion(ctx context.Context) (int, error) {
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var v int
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// Pending reads, without changing anything, the database's schema
// version and the migrations this binary would apply to it (all of them
// for a new database). A schema newer than the binary knows is a
// *SchemaNewerError.
func (db *DB) Pending(ctx context.Context) (int, []Migration, error) {
	ms, err := Migrations()
	if err != nil {
		return 0, nil, err
	}
	done := map[int]bool{}
	have := 0
	rows, err := db.Query(ctx, `SELECT version FROM schema_migrations`)
	if err == nil {
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return 0, nil, err
			}
			done[v], have = true, max(have, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, nil, err
		}
	} // no schema_migrations table: a new database
	if known := ms[len(ms)-1].Version; have > known {
		return have, nil, &SchemaNewerError{Database: have, Binary: known}
	}
	var pending []Migration
	for _, m := range ms {
		if !done[m.Version] {
			pending = append(pending, m)
		}
	}
	return have, pending, nil
}

// SchemaNewerError is the refusal to run on a database whose schema a
// newer Haven upgraded.
type SchemaNewerError struct {
	Database, Binary int
}

func (e *SchemaNewerError) Error() string {
	return fmt.Sprintf("the database's schema is at version %d, newer than this Haven knows (%d): a newer Haven upgraded it. "+
		"Run that newer version again, or restore the backup taken before the upgrade to go back to this one", e.Database, e.Binary)
}

// Migrate applies every pending migration, each in its own transaction.
// On PostgreSQL an advisory lock keeps concurrently starting servers from
// migrating at the same time.
func (db *DB) Migrate(ctx context.Context) error {
	_, err := db.MigrateReport(ctx)
	return err
}

// MigrateReport is Migrate that also returns the names of the migrations it applied.
func (db *DB) MigrateReport(ctx context.Context) ([]string, error) {
	return db.migrate(ctx, 0)
}

// migrate applies the pending migrations up to version upTo (all when 0).
func (db *DB) migrate(ctx context.Context, upTo int) ([]string, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	have, err := db.AppliedVersion(ctx)
	if err != nil {
		return nil, err
	}
	if known := ms[len(ms)-1]; have > known.Version {
		// An older binary on a database a newer one upgraded: its code
		// would read and write tables it does not know the shape of.
		return nil, &SchemaNewerError{Database: have, Binary: known.Version}
	}
	var applied []string
	for _, m := range ms {
		if upTo > 0 && m.Version > upTo {
			break
		}
		done := false
		err := db.Write(ctx, func(tx *Tx) error {
			if db.dialect == Postgres {
				if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7261636)`); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, m.Version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				done = true
				return nil
			}
			if _, err := tx.Exec(ctx, ForDialect(m.SQL, db.dialect)); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)`,
				m.Version, m.Name, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return applied, err
		}
		if !done {
			applied = append(applied, m.Name)
		}
	}
	return applied, nil
}
