package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrWriterLocked means another Haven process already writes to this database.
var ErrWriterLocked = errors.New("another Haven process is already writing to this database")

// writerLockKey is the PostgreSQL advisory lock of the writer role; the
// lock's second key is the hash of the schema, so that Haven databases in
// different schemas of one PostgreSQL database do not exclude each other.
const writerLockKey = 7261637

// AcquireWriter takes the writer role of the database for this process:
// the streams' positions are handed out by one process only, so a second
// process on the same database must not write. On PostgreSQL it is a
// session advisory lock held on a dedicated connection; on SQLite an
// exclusive lock on a file beside the database. Release gives it back (it
// is also freed when the process dies).
func (db *DB) AcquireWriter(ctx context.Context, sqlitePath string) (release func(), err error) {
	if db.dialect == Postgres {
		conn, err := db.writer.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("writer lock: %w", err)
		}
		var ok bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`, writerLockKey).Scan(&ok); err != nil {
			conn.Close()
			return nil, fmt.Errorf("writer lock: %w", err)
		}
		if !ok {
			conn.Close()
			return nil, ErrWriterLocked
		}
		return func() {
			_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, writerLockKey)
			conn.Close()
		}, nil
	}
	f, err := os.OpenFile(sqlitePath+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writer lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrWriterLocked
		}
		return nil, fmt.Errorf("writer lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
