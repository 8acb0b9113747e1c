package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/haven-chat/haven/internal/logging"
)

// Dialect names the database engine behind a DB.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// Queries counts every statement run through this package (a metric: an
// idle /sync must not move it).
var Queries atomic.Int64

// Errors counts statements, begins and commits the database failed (a
// metric), apart from unique-constraint conflicts (table code uses them as
// answers) and cancelled or timed-out requests.
var Errors atomic.Int64

// counted counts err in Errors when it is a failure of the database.
func counted(err error) error {
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !IsUniqueViolation(err) {
		Errors.Add(1)
	}
	return err
}

// countedRows counts the error of a query.
func countedRows(rows *sql.Rows, err error) (*sql.Rows, error) { return rows, counted(err) }

// countedResult counts the error of a statement.
func countedResult(res sql.Result, err error) (sql.Result, error) { return res, counted(err) }

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("database is closed")

// ErrNotFound is returned by table code when a row does not exist.
var ErrNotFound = errors.New("not found")

// Options tune the connection pools.
type Options struct {
	// MaxOpenConns bounds the PostgreSQL pool and the SQLite read pool.
	MaxOpenConns int
	// SQLiteSynchronous is the SQLite "synchronous" pragma: FULL (default) or NORMAL.
	SQLiteSynchronous string
}

// DB is the one database of a Haven server. On SQLite it holds one write
// connection and a pool of read connections; on PostgreSQL both are the same pool.
type DB struct {
	dialect Dialect
	writer  *sql.DB
	reader  *sql.DB
	// jobs feeds the SQLite group-commit loop; nil on PostgreSQL.
	jobs     chan *writeJob
	loopDone chan struct{}
	closeMu  sync.RWMutex
	closed   bool
	// stmts and wstmts keep SQLite's statements prepared (read and write pools).
	stmts, wstmts *stmtCache
	// ckpt is SQLite's checkpointer (see checkpoints); nil on PostgreSQL.
	ckpt     *sql.DB
	ckptStop chan struct{}
	ckptDone chan struct{}
	written  atomic.Bool // a write since the last checkpoint
	// Location is where the data lives, without any password, for messages.
	Location string
}

// Target is a parsed database setting.
type Target struct {
	Dialect Dialect
	// Path is the SQLite file.
	Path string
	// URL is the PostgreSQL connection URL.
	URL string
}

// ParseTarget interprets the `database` setting: empty or "sqlite" means a
// file in dataDir, "sqlite:///path/file.db" a given file, and a
// postgres:// or postgresql:// URL a PostgreSQL database.
func ParseTarget(setting, dataDir string) (Target, error) {
	switch {
	case setting == "" || setting == "sqlite":
		return Target{Dialect: SQLite, Path: filepath.Join(dataDir, "haven.db")}, nil
	case strings.HasPrefix(setting, "sqlite://"):
		p := strings.TrimPrefix(setting, "sqlite://")
		if p == "" || p == "/" {
			return Target{}, fmt.Errorf("the sqlite:// URL names no file")
		}
		return Target{Dialect: SQLite, Path: p}, nil
	case strings.HasPrefix(setting, "postgres://") || strings.HasPrefix(setting, "postgresql://"):
		if _, err := pgconn.ParseConfig(setting); err != nil {
			return Target{}, fmt.Errorf("not a valid PostgreSQL URL: %s", scrubPassword(err.Error()))
		}
		return Target{Dialect: Postgres, URL: setting}, nil
	}
	return Target{}, fmt.Errorf("unknown database kind: expected empty, sqlite, sqlite:///path/file.db or postgres://user:password@host:port/dbname")
}

// Redacted returns the target for messages, with any password masked.
func (t Target) Redacted() string {
	if t.Dialect == SQLite {
		return "sqlite:" + t.Path
	}
	return RedactURL(t.URL)
}

// RedactURL masks the password of a URL.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func scrubPassword(s string) string {
	// pgconn parse errors may quote the URL; never echo a password.
	if i := strings.Index(s, "://"); i >= 0 {
		if j := strings.Index(s[i:], "@"); j >= 0 {
			if k := strings.Index(s[i+3:i+j], ":"); k >= 0 {
				return s[:i+3+k+1] + "xxxxx" + s[i+j:]
			}
		}
	}
	return s
}

// Open connects to the target and applies pending migrations.
func Open(ctx context.Context, t Target, opts Options) (*DB, error) {
	db, err := Connect(ctx, t, opts)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Connect opens the connection pools without migrating.
func Connect(ctx context.Context, t Target, opts Options) (*DB, error) {
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = 20
	}
	switch t.Dialect {
	case Postgres:
		pool, err := sql.Open("pgx", t.URL)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		pool.SetMaxOpenConns(opts.MaxOpenConns)
		pool.SetMaxIdleConns(opts.MaxOpenConns)
		pool.SetConnMaxIdleTime(5 * time.Minute)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := pool.PingContext(pctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("connect to %s: %w", RedactURL(t.URL), err)
		}
		return &DB{dialect: Postgres, writer: pool, reader: pool, Location: RedactURL(t.URL)}, nil
	default:
		if dir := filepath.Dir(t.Path); dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("create folder for %s: %w", t.Path, err)
			}
		}
		sync := strings.ToUpper(opts.SQLiteSynchronous)
		if sync == "" {
			sync = "FULL"
		}
		writer, err := sql.Open(sqliteDriverName, sqliteDSN(t.Path, sync, true))
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", t.Path, err)
		}
		writer.SetMaxOpenConns(1)
		writer.SetMaxIdleConns(1)
		writer.SetConnMaxIdleTime(0)
		writer.SetConnMaxLifetime(0)
		if err := writer.PingContext(ctx); err != nil {
			writer.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", t.Path, err)
		}
		reader, err := sql.Open(sqliteDriverName, sqliteDSN(t.Path, sync, false))
		if err != nil {
			writer.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", t.Path, err)
		}
		n := opts.MaxOpenConns
		if n > 8 {
			n = 8
		}
		reader.SetMaxOpenConns(n)
		reader.SetMaxIdleConns(n)
		reader.SetConnMaxIdleTime(0)
		ckpt, err := sql.Open(sqliteDriverName, sqliteCheckpointDSN(t.Path, sync))
		if err != nil {
			writer.Close()
			reader.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", t.Path, err)
		}
		ckpt.SetMaxOpenConns(1)
		db := &DB{dialect: SQLite, writer: writer, reader: reader, Location: "sqlite:" + t.Path,
			jobs: make(chan *writeJob, 1024), loopDone: make(chan struct{}),
			stmts: newStmtCache(), wstmts: newStmtCache(),
			ckpt: ckpt, ckptStop: make(chan struct{}), ckptDone: make(chan struct{})}
		go db.writeLoop()
		go db.checkpoints()
		return db, nil
	}
}

// checkpointEvery is how often SQLite's WAL is copied into the database file.
const checkpointEvery = 250 * time.Millisecond

// checkpoints copies the WAL into the database file in the background, on
// a connection of its own (SQLite's PASSIVE checkpoint: it never waits for
// readers or the writer). The writer's connection has automatic checkpoints
// off, so a commit never also writes and fsyncs the database file. The
// statements are not counted in Queries (they are not the application's).
func (db *DB) checkpoints() {
	defer close(db.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if !db.written.Swap(false) {
				continue // an idle server does nothing
			}
			if _, err := db.ckpt.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
				logging.From(context.Background()).WithError(err).Warn("storage: checkpoint the SQLite WAL")
			}
		case <-db.ckptStop:
			return
		}
	}
}

// Dialect tells which engine this is.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close closes the pools.
func (db *DB) Close() {
	db.closeMu.Lock()
	if db.closed {
		db.closeMu.Unlock()
		return
	}
	db.closed = true
	if db.jobs != nil {
		close(db.jobs)
	}
	db.closeMu.Unlock()
	if db.jobs != nil {
		<-db.loopDone
	}
	if db.ckpt != nil {
		close(db.ckptStop)
		<-db.ckptDone
		db.ckpt.Close()
	}
	db.stmts.close()
	db.wstmts.close()
	if db.reader != db.writer {
		db.reader.Close()
	}
	db.writer.Close()
}

// Querier runs SQL; both *DB and *Tx are Queriers, so table code can run
// inside or outside a transaction.
type Querier interface {
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
	Exec(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Query reads from the read pool.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query, args = db.prep(query, args)
	if st := db.stmts.get(ctx, db.reader, query, true); st != nil {
		return countedRows(st.QueryContext(ctx, args...))
	}
	return countedRows(db.reader.QueryContext(ctx, query, args...))
}

// QueryRow reads one row from the read pool.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query, args = db.prep(query, args)
	if st := db.stmts.get(ctx, db.reader, query, true); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.reader.QueryRowContext(ctx, query, args...)
}

// Exec runs a statement on the write connection.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	defer db.written.Store(true)
	query, args = db.prep(query, args)
	if st := db.wstmts.get(ctx, db.writer, query, true); st != nil {
		return countedResult(st.ExecContext(ctx, args...))
	}
	return countedResult(db.writer.ExecContext(ctx, query, args...))
}

// stmtCache keeps SQLite statements prepared (PostgreSQL's driver caches
// its own). It holds at most maxStmts texts; others run unprepared.
// Statements first met inside a write transaction cannot be prepared then
// (the one write connection is busy): they are noted and prepared by the
// write loop between transactions.
type stmtCache struct {
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	wanted map[string]bool
}

const maxStmts = 300

func newStmtCache() *stmtCache {
	return &stmtCache{m: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
}

// get returns the prepared statement for query, preparing it on pool when
// canPrepare (the caller holds no connection of pool).
func (c *stmtCache) get(ctx context.Context, pool *sql.DB, query string, canPrepare bool) *sql.Stmt {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	st, ok := c.m[query]
	full := len(c.m)+len(c.wanted) >= maxStmts
	if !ok && !canPrepare && !full {
		c.wanted[query] = true
	}
	c.mu.Unlock()
	if ok || !canPrepare || full {
		return st
	}
	st, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil // run unprepared: the error (if any) surfaces there
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[query]; ok {
		st.Close()
		return old
	}
	c.m[query] = st
	return st
}

// prepareWanted prepares the statements noted inside transactions.
func (c *stmtCache) prepareWanted(pool *sql.DB) {
	c.mu.Lock()
	var todo []string
	for q := range c.wanted {
		todo = append(todo, q)
	}
	c.wanted = map[string]bool{}
	c.mu.Unlock()
	for _, q := range todo {
		c.get(context.Background(), pool, q, true)
	}
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// prep expands list arguments, counts the statement and gives the driver
// its placeholder style.
func (db *DB) prep(query string, args []any) (string, []any) {
	query, args = expand(query, args)
	Queries.Add(1)
	if db.dialect == SQLite {
		query = sqliteQuery(query)
	}
	return query, args
}

// Tx is a write transaction.
type Tx struct {
	tx *sql.Tx
	db *DB
}

// Dialect is the engine the transaction runs on.
func (t *Tx) Dialect() Dialect { return t.db.dialect }

func (t *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query, args = t.db.prep(query, args)
	if st := t.db.wstmts.get(ctx, t.db.writer, query, false); st != nil {
		return countedRows(t.tx.StmtContext(ctx, st).QueryContext(ctx, args...))
	}
	return countedRows(t.tx.QueryContext(ctx, query, args...))
}

func (t *Tx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query, args = t.db.prep(query, args)
	if st := t.db.wstmts.get(ctx, t.db.writer, query, false); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query, args = t.db.prep(query, args)
	if st := t.db.wstmts.get(ctx, t.db.writer, query, false); st != nil {
		return countedResult(t.tx.StmtContext(ctx, st).ExecContext(ctx, args...))
	}
	return countedResult(t.tx.ExecContext(ctx, query, args...))
}

// Write runs fn in a write transaction and commits it if fn returns nil.
// Nothing in fn may wait for anything but the database, and fn must use only
// its Tx. On SQLite, writes that arrive while another commits are grouped
// into one transaction (each in its own savepoint, so one failing write
// does not undo the others): one commit, one fsync, for the whole group.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	if db.jobs == nil {
		return db.writeOne(ctx, fn)
	}
	job := &writeJob{ctx: ctx, fn: fn, done: make(chan error, 1)}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case db.jobs <- job:
	case <-ctx.Done():
		db.closeMu.RUnlock()
		return ctx.Err()
	}
	db.closeMu.RUnlock()
	return <-job.done
}

type writeJob struct {
	ctx  context.Context
	fn   func(tx *Tx) error
	done chan error
}

// maxGroup bounds how many writes share one commit.
const maxGroup = 64

func (db *DB) writeLoop() {
	defer close(db.loopDone)
	for job := range db.jobs {
		group := []*writeJob{job}
	collect:
		for len(group) < maxGroup {
			select {
			case j, ok := <-db.jobs:
				if !ok {
					break collect
				}
				group = append(group, j)
			default:
				break collect
			}
		}
		if len(group) == 1 {
			job.done <- db.writeOne(job.ctx, job.fn)
		} else {
			db.writeGroup(group)
		}
		db.written.Store(true)
		// Between transactions the write connection is free: prepare the
		// statements the last ones used.
		db.wstmts.prepareWanted(db.writer)
	}
}

// run calls fn, turning a panic into an error.
func run(fn func(tx *Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in write: %v", p)
		}
	}()
	return fn(tx)
}

func (db *DB) writeGroup(group []*writeJob) {
	bg := context.Background()
	fail := func(err error) {
		for _, j := range group {
			j.done <- err
		}
	}
	sqlTx, err := db.writer.BeginTx(bg, nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", counted(err)))
		return
	}
	tx := &Tx{tx: sqlTx, db: db}
	results := make([]error, len(group))
	for i, j := range group {
		if err := j.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := sqlTx.ExecContext(bg, "SAVEPOINT haven_write"); err != nil {
			_ = sqlTx.Rollback()
			fail(fmt.Errorf("savepoint: %w", err))
			return
		}
		results[i] = run(j.fn, &Tx{tx: tx.tx, db: db})
		if results[i] != nil {
			if _, err := sqlTx.ExecContext(bg, "ROLLBACK TO SAVEPOINT haven_write"); err != nil {
				_ = sqlTx.Rollback()
				fail(fmt.Errorf("rollback to savepoint: %w", err))
				return
			}
		}
		if _, err := sqlTx.ExecContext(bg, "RELEASE SAVEPOINT haven_write"); err != nil {
			_ = sqlTx.Rollback()
			fail(fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	if err := sqlTx.Commit(); err != nil {
		fail(fmt.Errorf("commit: %w", counted(err)))
		return
	}
	for i, j := range group {
		j.done <- results[i]
	}
}

// writeOne runs one write in its own transaction.
func (db *DB) writeOne(ctx context.Context, fn func(tx *Tx) error) (err error) {
	sqlTx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", counted(err))
	}
	defer func() {
		if err != nil {
			_ = sqlTx.Rollback()
		}
	}()
	if err = run(fn, &Tx{tx: sqlTx, db: db}); err != nil {
		return err
	}
	if err = sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", counted(err))
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint failure.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	return sqliteUnique(err)
}

// PoolStats are connection-pool figures for metrics.
type PoolStats struct {
	Name string
	sql.DBStats
}

// Stats reports each pool.
func (db *DB) Stats() []PoolStats {
	if db.reader == db.writer {
		return []PoolStats{{Name: "main", DBStats: db.writer.Stats()}}
	}
	return []PoolStats{{Name: "write", DBStats: db.writer.Stats()}, {Name: "read", DBStats: db.reader.Stats()}}
}

// Ping checks that the database answers a query (readiness).
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return counted(db.QueryRow(ctx, `SELECT 1`).Scan(&one))
}
