package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// ReadTx is a read-only transaction that sees one snapshot of the database.
type ReadTx struct {
	tx *sql.Tx
	db *DB
}

func (t *ReadTx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query, args = t.db.prep(query, args)
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *ReadTx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query, args = t.db.prep(query, args)
	return t.tx.QueryRowContext(ctx, query, args...)
}

// Exec runs a statement in the read transaction (the database refuses writes).
func (t *ReadTx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query, args = t.db.prep(query, args)
	return t.tx.ExecContext(ctx, query, args...)
}

// Dialect is the engine the transaction runs on.
func (t *ReadTx) Dialect() Dialect { return t.db.dialect }

// ReadSnapshot runs fn in one read-only transaction on the read pool: on
// PostgreSQL at REPEATABLE READ, so every statement of fn sees the
// database as it was at its first statement, whatever commits meanwhile;
// on SQLite a read transaction in WAL mode, which does the same. Writers
// are not blocked (a backup runs while the server serves).
func (db *DB) ReadSnapshot(ctx context.Context, fn func(tx *ReadTx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.reader.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	return fn(&ReadTx{tx: tx, db: db})
}

// CopyInto writes a consistent copy of an SQLite database into a new file
// at path (SQLite's VACUUM INTO: one read transaction, so the copy is the
// database as of one commit; the server keeps writing meanwhile).
func (db *DB) CopyInto(ctx context.Context, path string) error {
	if db.dialect != SQLite {
		return fmt.Errorf("copy into a file: only SQLite databases can be copied so")
	}
	Queries.Add(1)
	if _, err := db.ckpt.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("copy database into %s: %w", path, err)
	}
	return nil
}

// MigrateUpTo applies the pending migrations numbered up to version (a
// restore recreates the schema a backup was taken at, then applies the rest).
func (db *DB) MigrateUpTo(ctx context.Context, version int) ([]string, error) {
	return db.migrate(ctx, version)
}
