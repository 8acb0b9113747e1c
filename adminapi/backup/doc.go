// Package backup takes, verifies and restores backups of a Haven server:
// `haven backup`, `haven backup verify`, `haven restore` and the backup
// `haven migrate` takes first (docs/operations.md, "Backup and restore").
//
// A backup is a folder with a manifest (manifest.json: per-file SHA-256,
// counts, each stream's highest position, the schema version), the
// database as an SQLite file whichever engine it came from (SQLite: every
// page read through sqlite_dbpage in one read transaction, pages.go;
// PostgreSQL: every table read in one REPEATABLE READ, READ ONLY
// transaction into an SQLite file migrated to the same schema version),
// the media files and the secret files (configuration, federation TLS).
// An incremental backup keeps only what changed since its base, the
// newest backup of the folder: the media files the base lacks, and a
// database delta: the pages whose SHA-256 differs from the base's
// (SQLite, pages.go) or the tables whose checksum differs, only the new
// rows of those that only grew by position (PostgreSQL, tables.go).
// Restore and verify rebuild the database from the chain and check it
// (chain.go). Reads are paced at Options.MaxRate (pace.go).
//
// A restore checks every checksum first, refuses a database a running
// server holds (its writer lock) and, without force, one that is not
// empty; it loads the database, migrates it, and records a restore window
// per stream (storage.RestoreWindow, table restore_windows): the streams
// go on Jump positions beyond the backup's, so no position handed out
// before the restore is handed out again, and syncapi answers a token from
// the lost time as an initial sync.
//
// Tables: it reads every table and writes restore_windows (owned by
// storage). Goroutines: none. Locks: none of its own; a restore holds the
// target database's writer lock while it runs.
package backup
