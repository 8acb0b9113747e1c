//go:build !cgo || !sqlite_cgo

package storage

import (
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLiteDriver names the SQLite driver this binary is built with. The
// default is modernc.org/sqlite, in pure Go (static binaries, FTS5 for
// search, no C compiler needed); -tags "sqlite_cgo sqlite_fts5" selects
// github.com/mattn/go-sqlite3, about 10% less CPU per message (see
// docs/benchmarks.md).
const SQLiteDriver = "modernc.org/sqlite"

const sqliteDriverName = "sqlite"

func sqliteDSN(path, synchronous string, writer bool) string {
	dsn := sqliteCheckpointDSN(path, synchronous) + "&_pragma=foreign_keys(1)"
	if writer {
		// An 8 MiB page cache for the one writer (SQLite's default is
		// 2 MiB): a group commit's pages stay in memory until it commits.
		// No automatic checkpoints: the checkpointer connection does them
		// (see DB.checkpoints).
		return dsn + "&_pragma=journal_mode(WAL)&_pragma=cache_size(-8192)&_pragma=wal_autocheckpoint(0)&_txlock=immediate"
	}
	return dsn + "&_pragma=query_only(1)"
}

// sqliteCheckpointDSN is the connection that checkpoints the WAL; the others
// build on it.
func sqliteCheckpointDSN(path, synchronous string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=synchronous(" + synchronous + ")"
}

// sqliteQuery is the SQL text the driver wants: modernc.org/sqlite binds $N
// to the Nth argument as it is.
func sqliteQuery(q string) string { return q }

func sqliteUnique(err error) bool {
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		c := sqErr.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
