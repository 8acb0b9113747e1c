package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-chat/haven/storage"
)

// Jump is how far a restore moves every stream beyond the backup's
// positions: more than a server could hand out between a backup and its
// restore (2^40, a million million), and far below int64's limit, however
// many restores follow one another.
const Jump int64 = 1 << 40

// RestoreOptions say what to restore and where.
type RestoreOptions struct {
	// From is a backup folder, or a folder of backups (its newest is restored).
	From string
	// Target is the database to restore into: an SQLite file that does not
	// exist yet, or an empty PostgreSQL database (schema).
	Target   storage.Target
	MediaDir string
	// Force replaces a database and a media folder that are not empty
	// (never one a running server holds).
	Force    bool
	Progress func(Progress)
	Now      func() time.Time
}

// ErrNotEmpty is the refusal to restore over existing data without Force.
var ErrNotEmpty = errors.New("not empty")

// Restore checks a backup's files, loads its database into the target,
// records the restore windows (storage.RestoreWindow: every stream goes on
// Jump beyond the backup's positions), migrates it to this Haven's schema
// and copies the media files of the backup's chain.
func Restore(ctx context.Context, opts RestoreOptions) (Manifest, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(Progress) {}
	}
	s, err := Resolve(opts.From)
	if err != nil {
		return Manifest{}, err
	}
	m := s.Manifest
	if !listsDatabase(m) {
		return m, fmt.Errorf("%s: the manifest lists no database file", s.Dir)
	}
	progress(Progress{Phase: "checksums"})
	if probs := checkFiles(s); len(probs) > 0 {
		var b strings.Builder
		for _, p := range probs {
			b.WriteString("\n  " + p.String())
		}
		return m, fmt.Errorf("the backup is damaged, nothing was restored:%s", b.String())
	}
	if err := checkMediaDir(opts.MediaDir, opts.Force); err != nil {
		return m, err
	}
	release, err := restoreDatabase(ctx, s, opts, now, progress)
	if err != nil {
		return m, err
	}
	defer release()
	var total, done int64
	for _, x := range m.Media {
		total += x.Size
	}
	for _, x := range m.Media {
		src := filepath.Join(s.Folders[x.In], "media", filepath.FromSlash(x.Path))
		got, err := copyFile(src, filepath.Join(opts.MediaDir, filepath.FromSlash(x.Path)))
		if err != nil {
			return m, fmt.Errorf("restore media %s: %w", x.Path, err)
		}
		if got.hash != x.SHA256 {
			return m, fmt.Errorf("restore media %s: checksum mismatch", src)
		}
		done += x.Size
		progress(Progress{Phase: "media", Done: done, Total: total, Unit: "bytes"})
	}
	return m, nil
}

// checkMediaDir refuses a media folder with files in it, or empties it with force.
func checkMediaDir(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("media folder: %w", err)
	}
	var found bool
	for _, e := range entries {
		if e.Name() == "tmp" {
			continue
		}
		found = true
	}
	if !found {
		return nil
	}
	if !force {
		return fmt.Errorf("media folder %s: %w: restore into an empty data folder, or give --force to replace its contents", dir, ErrNotEmpty)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty the media folder: %w", err)
		}
	}
	return nil
}

// restoreDatabase loads the backup's database into the target and holds
// the target's writer lock (so no server starts on it meanwhile) until
// release is called.
func restoreDatabase(ctx context.Context, s Set, opts RestoreOptions, now func() time.Time, progress func(Progress)) (release func(), err error) {
	m := s.Manifest
	t := opts.Target
	if t.Dialect == storage.SQLite {
		if st, err := os.Stat(t.Path); err == nil && st.Size() > 0 && !opts.Force {
			return nil, fmt.Errorf("database %s: %w: restore into a new data folder, or give --force to replace it", t.Path, ErrNotEmpty)
		}
	}
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 4})
	if err != nil {
		return nil, err
	}
	unlock, err := db.AcquireWriter(ctx, t.Path)
	if errors.Is(err, storage.ErrWriterLocked) {
		db.Close()
		return nil, fmt.Errorf("database %s: a Haven server is running on it; stop it before restoring", db.Location)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	release = unlock
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	if t.Dialect == storage.SQLite {
		db.Close()
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(t.Path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("replace %s: %w", t.Path, err)
			}
		}
		progress(Progress{Phase: "database"})
		if _, err := buildDatabase(ctx, s, t.Path+".restoring"); err != nil {
			os.Remove(t.Path + ".restoring")
			return nil, err
		}
		if err := os.Rename(t.Path+".restoring", t.Path); err != nil {
			return nil, fmt.Errorf("copy the database: %w", err)
		}
		if db, err = storage.Connect(ctx, t, storage.Options{MaxOpenConns: 4}); err != nil {
			return nil, err
		}
	} else if err := loadPostgres(ctx, db, s, opts.Force, progress); err != nil {
		db.Close()
		return nil, err
	}
	defer db.Close()
	if _, err := db.MigrateReport(ctx); err != nil {
		return nil, fmt.Errorf("migrate the restored database: %w", err)
	}
	ts := now().UnixMilli()
	err = db.Write(ctx, func(tx *storage.Tx) error {
		for _, stream := range storage.Streams {
			p := m.Database.Positions[stream]
			if _, err := tx.Exec(ctx, `INSERT INTO restore_windows (stream, restored_ts, lost_after, base) VALUES ($1, $2, $3, $4)`,
				stream, ts, p, p+Jump); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record the restore windows: %w", err)
	}
	return release, nil
}

// loadPostgres loads the backup's SQLite database into an empty
// PostgreSQL database: the schema at the backup's version, then every
// table's rows, then the sequences moved above them.
func loadPostgres(ctx context.Context, db *storage.DB, s Set, force bool, progress func(Progress)) error {
	m := s.Manifest
	var tables []string
	rows, err := db.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) > 0 {
		if !force {
			return fmt.Errorf("database %s: %w (%d tables): restore into an empty database, or give --force to drop its tables", db.Location, ErrNotEmpty, len(tables))
		}
		for _, n := range tables {
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS "`+strings.ReplaceAll(n, `"`, `""`)+`" CASCADE`)
				return err
			}); err != nil {
				return fmt.Errorf("drop table %s: %w", n, err)
			}
		}
	}
	if _, err := db.MigrateUpTo(ctx, m.Database.SchemaVersion); err != nil {
		return fmt.Errorf("create the schema at version %d: %w", m.Database.SchemaVersion, err)
	}
	scratch, err := os.MkdirTemp("", "haven-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	// A copy (opening the backup's own file could change it), with the
	// chain applied.
	if _, err := buildDatabase(ctx, s, filepath.Join(scratch, "haven.db")); err != nil {
		return err
	}
	lite, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: filepath.Join(scratch, "haven.db")}, storage.Options{MaxOpenConns: 2, SQLiteSynchronous: "OFF"})
	if err != nil {
		return err
	}
	defer lite.Close()
	plans, err := plan(ctx, lite, db)
	if err != nil {
		return err
	}
	var n int64
	for _, p := range plans {
		err := copyRows(ctx, lite, db, p, true, nil, func(k int) {
			n += int64(k)
			progress(Progress{Phase: "database " + p.table, Done: n, Unit: "rows"})
		})
		if err != nil {
			return err
		}
	}
	return resetSequences(ctx, db)
}
