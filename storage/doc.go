// Package storage opens Haven's one database (SQLite or PostgreSQL), runs the
// embedded numbered migrations, and gives table code one SQL text for both
// engines.
//
// Conventions: placeholders are $1, $2, ...; a slice argument expands its
// placeholder into a list, for IN ($1); upserts use ON CONFLICT ... DO UPDATE
// SET x = excluded.x; RETURNING works on both. A migration line ending in
// "-- only: postgres" or "-- only: sqlite" is applied on that engine only.
//
// SQLite gets one write connection (WAL, immediate transactions) and a read
// pool; PostgreSQL one pool for both. Write transactions never wait on
// anything but the database, so no long-poll ever holds a connection.
//
// On SQLite, writes that arrive while another is committing are grouped into
// one transaction, each in its own savepoint (group commit: one fsync for
// the group, and a failing write undoes only itself), and statements are
// kept prepared. A connection of its own checkpoints the WAL into the
// database file every 250 ms after writes (PASSIVE: it waits for no one), so
// a commit never also does (the writer has automatic checkpoints off). The
// SQLite driver is modernc.org/sqlite (pure Go, with
// FTS5); a build with -tags "sqlite_cgo sqlite_fts5" uses
// github.com/mattn/go-sqlite3 instead; docs/benchmarks.md compares them.
//
// One process writes a database at a time (AcquireWriter: an advisory lock
// on PostgreSQL, a file lock beside the SQLite file), because the streams'
// positions are handed out by their single writer.
//
// A backup reads one snapshot (ReadSnapshot: REPEATABLE READ, READ ONLY on
// PostgreSQL; a read transaction on SQLite) or copies the SQLite file
// (CopyInto: VACUUM INTO); a restore recreates the schema of an older
// version (MigrateUpTo). After a restore, every stream's writer starts
// above StreamFloor, and syncapi answers tokens inside a RestoreWindow as
// initial syncs (adminapi/backup).
//
// Tables are owned by the packages named in the migration comments; this
// package owns schema_migrations and restore_windows (written by
// adminapi/backup at a restore). Queries and Errors count the statements
// run and the failures of the database (metrics). Goroutines: the SQLite write loop and
// checkpointer. Lock
// order: closeMu, then the statement caches' mutexes (leaves).
package storage
