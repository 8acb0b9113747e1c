//go:build cgo && sqlite_cgo

package storage

import (
	"errors"
	"strings"
	"sync"

	"github.com/mattn/go-sqlite3"
)

// SQLiteDriver names the SQLite driver this binary is built with.
const SQLiteDriver = "github.com/mattn/go-sqlite3 (cgo)"

const sqliteDriverName = "sqlite3"

func sqliteDSN(path, synchronous string, writer bool) string {
	dsn := sqliteCheckpointDSN(path, synchronous) + "&_foreign_keys=1"
	if writer {
		return dsn + "&_journal_mode=WAL&_txlock=immediate"
	}
	return dsn + "&_query_only=1"
}

// sqliteCheckpointDSN is the connection that checkpoints the WAL (this
// driver keeps SQLite's automatic checkpoints on the writer as well); the
// others build on it.
func sqliteCheckpointDSN(path, synchronous string) string {
	return "file:" + path + "?_busy_timeout=10000&_synchronous=" + synchronous
}

var rewritten sync.Map

// sqliteQuery turns $N placeholders into SQLite's numbered ?N, which this
// driver binds by number.
func sqliteQuery(q string) string {
	if v, ok := rewritten.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\'' {
			inQuote = !inQuote
		}
		if c == '$' && !inQuote && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	rewritten.Store(q, out)
	return out
}

func sqliteUnique(err error) bool {
	var sqErr sqlite3.Error
	if errors.As(err, &sqErr) {
		return sqErr.ExtendedCode == sqlite3.ErrConstraintUnique || sqErr.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	return false
}
