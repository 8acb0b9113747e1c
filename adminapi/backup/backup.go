package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/haven-chat/haven/storage"
)

// Progress is what a long operation reports as it goes: the phase
// ("database", "media", ...), and how far it is in it.
type Progress struct {
	Phase string
	// Done and Total are in Unit ("bytes" or "rows"); Total is 0 when not known.
	Done, Total int64
	Unit        string
}

// Options say what to back up and where.
type Options struct {
	// Target is the live database.
	Target storage.Target
	// MediaDir is the media folder (data_dir/media).
	MediaDir string
	// SecretFiles are copied and marked secret: the configuration file,
	// the federation TLS key and certificate.
	SecretFiles []string
	ServerName  string
	Version     string
	// To is the folder of backups; each backup is a new folder in it.
	To string
	// Incremental keeps only what changed since the folder's newest
	// backup: the media files it lacks, and the database pages (SQLite)
	// or tables (PostgreSQL) whose checksum differs.
	Incremental bool
	// MaxRate bounds the backup's reads of the database and the media
	// files, in MiB/s; 0 is unlimited.
	MaxRate  float64
	Progress func(Progress)
	Now      func() time.Time
}

// Take backs up a running server: the database as of one instant, then
// the media files (which are written before the database rows naming
// them, so every file the copy refers to is there), the secret files, and
// a manifest with checksums, counts and stream positions written last. It
// returns the manifest and the new backup's folder.
func Take(ctx context.Context, opts Options) (Manifest, string, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(Progress) {}
	}
	start := now()
	if err := os.MkdirAll(opts.To, 0o700); err != nil {
		return Manifest{}, "", fmt.Errorf("backup folder: %w", err)
	}
	m := Manifest{Format: FormatVersion, Kind: Full, Created: start.UTC(), HavenVersion: opts.Version, ServerName: opts.ServerName,
		Media: []Media{}, Files: []File{},
		Secrets: []string{DatabaseFile + ": the signing key (server_keys), password hashes, access tokens and end-to-end key backups"}}
	prevMedia := map[string]Media{}
	var base *Manifest
	var baseDir string
	if opts.Incremental {
		ms, dirs, err := listBackups(opts.To)
		if err != nil {
			return Manifest{}, "", err
		}
		if len(ms) == 0 {
			return Manifest{}, "", fmt.Errorf("no earlier backup in %s to build an incremental one on: take a full backup first (without --incremental)", opts.To)
		}
		prev := ms[len(ms)-1]
		if prev.Database.Engine != opts.Target.Dialect.String() {
			return Manifest{}, "", fmt.Errorf("the last backup, %s, is of a %s database and this one is %s: take a full backup first (without --incremental)", prev.ID, prev.Database.Engine, opts.Target.Dialect)
		}
		base, baseDir = &prev, dirs[len(dirs)-1]
		m.Kind = Incremental
		m.Format = DeltaFormat
		m.Chain = append(append([]string{}, prev.Chain...), prev.ID)
		for _, x := range prev.Media {
			prevMedia[x.Path] = x
		}
	}
	m.ID = newID(start, m.Kind)
	dir := filepath.Join(opts.To, m.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Manifest{}, "", fmt.Errorf("backup folder: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	pace := newPacer(opts.MaxRate)

	// 1. The database, as of one instant: whole, or what changed since base.
	progress(Progress{Phase: "database"})
	if opts.Target.Dialect == storage.SQLite {
		if err := copySQLite(ctx, opts.Target, dir, base, baseDir, &m, pace, progress); err != nil {
			return Manifest{}, "", err
		}
	} else {
		if err := copyDatabase(ctx, opts.Target, filepath.Join(dir, DatabaseFile), &m, pace, progress); err != nil {
			return Manifest{}, "", err
		}
		if err := describeCopy(ctx, filepath.Join(dir, DatabaseFile), &m); err != nil {
			return Manifest{}, "", err
		}
		if base != nil && (base.Database.Tables == nil || base.Database.SchemaVersion != m.Database.SchemaVersion) {
			return Manifest{}, "", fmt.Errorf("the last backup, %s, has no table checksums or another schema version (%d, now %d): take a full backup first (without --incremental)", base.ID, base.Database.SchemaVersion, m.Database.SchemaVersion)
		}
		if err := finishTables(ctx, dir, base, &m); err != nil {
			return Manifest{}, "", err
		}
		name := m.Database.File
		if name == "" {
			name = m.Database.Delta
		}
		f, err := hashFile(dir, name)
		if err != nil {
			return Manifest{}, "", err
		}
		f.Secret, f.Note = true, "database copy ("+m.Database.Method+")"
		if base != nil {
			f.Note = fmt.Sprintf("the %d tables that changed since backup %s (%s)", len(m.Database.ChangedTables), base.ID, m.Database.Method)
		}
		m.Files = append(m.Files, f)
	}

	// 2. The secret files.
	for _, p := range opts.SecretFiles {
		if p == "" {
			continue
		}
		rel := filepath.Join("files", filepath.Base(p))
		if _, err := copyFile(p, filepath.Join(dir, rel)); err != nil {
			return Manifest{}, "", fmt.Errorf("copy %s: %w", p, err)
		}
		f, err := hashFile(dir, rel)
		if err != nil {
			return Manifest{}, "", err
		}
		f.Secret, f.Note = true, "copy of "+p
		m.Files = append(m.Files, f)
		m.Secrets = append(m.Secrets, rel+": may hold the database password, shared secrets and private keys")
	}

	// 3. The media files.
	type todo struct {
		rel  string
		size int64
	}
	var copyList []todo
	var total int64
	err := filepath.WalkDir(opts.MediaDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == opts.MediaDir {
				return filepath.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(opts.MediaDir, p)
		if d.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir // uploads in progress
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		rel = filepath.ToSlash(rel)
		if x, ok := prevMedia[rel]; ok && x.Size == info.Size() {
			m.Media = append(m.Media, x) // content-addressed: same name, same bytes
			return nil
		}
		copyList = append(copyList, todo{rel, info.Size()})
		total += info.Size()
		return nil
	})
	if err != nil {
		return Manifest{}, "", fmt.Errorf("list media: %w", err)
	}
	var done int64
	for _, t := range copyList {
		if err := ctx.Err(); err != nil {
			return Manifest{}, "", err
		}
		sum, err := copyFilePaced(ctx, filepath.Join(opts.MediaDir, filepath.FromSlash(t.rel)), filepath.Join(dir, "media", filepath.FromSlash(t.rel)), pace)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since it was listed
		}
		if err != nil {
			return Manifest{}, "", fmt.Errorf("copy media %s: %w", t.rel, err)
		}
		m.Media = append(m.Media, Media{Path: t.rel, SHA256: sum.hash, Size: sum.size, In: m.ID})
		done += t.size
		progress(Progress{Phase: "media", Done: done, Total: total, Unit: "bytes"})
	}
	m.Duration = now().Sub(start).Round(time.Millisecond).String()
	if pace != nil {
		m.Paced = fmt.Sprintf("%g MiB/s, %.1f MiB read, %s spent waiting", opts.MaxRate, float64(pace.done)/(1<<20), pace.slept.Round(time.Millisecond))
	}
	if err := writeManifest(dir, m); err != nil {
		return Manifest{}, "", fmt.Errorf("write manifest: %w", err)
	}
	ok = true
	return m, dir, nil
}

// openSource connects to the live database to back up and checks that it
// holds a Haven schema; have is the schema version it holds.
func openSource(ctx context.Context, t storage.Target) (src *storage.DB, have int, err error) {
	src, err = storage.Connect(ctx, t, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return nil, 0, err
	}
	have, _, err = src.Pending(ctx)
	if err == nil && have == 0 {
		err = fmt.Errorf("database %s has no Haven schema: nothing to back up", src.Location)
	}
	if err != nil {
		src.Close()
		return nil, 0, err
	}
	return src, have, nil
}

// copyDatabase copies a live PostgreSQL database into an SQLite file at dst.
func copyDatabase(ctx context.Context, t storage.Target, dst string, m *Manifest, pace *pacer, progress func(Progress)) (err error) {
	src, have, err := openSource(ctx, t)
	if err != nil {
		return err
	}
	defer src.Close()
	m.Database.Engine = t.Dialect.String()
	m.Database.File = DatabaseFile
	m.Database.Method = "repeatable-read-copy"
	// No fsync per transaction: the file is synced once, when complete.
	lite, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: dst}, storage.Options{MaxOpenConns: 2, SQLiteSynchronous: "OFF"})
	if err != nil {
		return err
	}
	defer func() {
		lite.Close()
		if err == nil {
			err = syncFile(dst)
		}
	}()
	if _, err := lite.MigrateUpTo(ctx, have); err != nil {
		return fmt.Errorf("create the copy's schema: %w", err)
	}
	var rows int64
	kicker := newFileKicker(dst, dst+"-wal")
	defer kicker.close()
	return src.ReadSnapshot(ctx, func(tx *storage.ReadTx) error {
		plans, err := plan(ctx, lite, tx)
		if err != nil {
			return err
		}
		for _, p := range plans {
			err := copyRows(ctx, tx, lite, p, false, pace, func(n int) {
				kicker.kick()
				rows += int64(n)
				progress(Progress{Phase: "database " + p.table, Done: rows, Unit: "rows"})
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// describeCopy fills the manifest's schema version, positions and counts
// from the database copy.
func describeCopy(ctx context.Context, path string, m *Manifest) error {
	db, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: path}, storage.Options{MaxOpenConns: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	return describe(ctx, db, m)
}

// describe fills the manifest's schema version, positions and counts from
// an SQLite database (a copy, or the live one in the copy's transaction).
func describe(ctx context.Context, db storage.Querier, m *Manifest) (err error) {
	if m.Database.SchemaVersion, err = schemaVersion(ctx, db); err != nil {
		return err
	}
	if m.Database.Positions, err = Positions(ctx, db); err != nil {
		return err
	}
	m.Counts, err = CountRows(ctx, db)
	return err
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

type sum struct {
	hash string
	size int64
}

// copyFile copies src to dst (creating folders), syncs it, and returns its
// SHA-256 and size.
func copyFile(src, dst string) (sum, error) {
	return copyFilePaced(context.Background(), src, dst, nil)
}

// copyFilePaced is copyFile reading at the pacer's rate.
func copyFilePaced(ctx context.Context, src, dst string, p *pacer) (sum, error) {
	in, err := os.Open(src)
	if err != nil {
		return sum{}, err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return sum{}, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return sum{}, err
	}
	h := sha256.New()
	var n int64
	w := io.MultiWriter(&steadyWriter{f: out}, h)
	if p != nil {
		// Paced by 256 KiB (io.Copy's own buffer is 32 KiB).
		n, err = io.CopyBuffer(w, pacedReader{ctx, in, p}, make([]byte, 256<<10))
	} else {
		n, err = io.CopyBuffer(w, in, make([]byte, 256<<10))
	}
	if err != nil {
		out.Close()
		return sum{}, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return sum{}, err
	}
	// Neither the copy nor (read through once) its source need the page
	// cache now; the server's database pages do.
	dropCache(out)
	dropCache(in)
	if err := out.Close(); err != nil {
		return sum{}, err
	}
	return sum{hex.EncodeToString(h.Sum(nil)), n}, nil
}

// hashFile describes a file of a backup folder.
func hashFile(dir, rel string) (File, error) {
	s, err := hashPath(filepath.Join(dir, rel))
	if err != nil {
		return File{}, err
	}
	return File{Path: filepath.ToSlash(rel), SHA256: s.hash, Size: s.size}, nil
}

func hashPath(p string) (sum, error) {
	f, err := os.Open(p)
	if err != nil {
		return sum{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return sum{}, fmt.Errorf("read %s: %w", p, err)
	}
	return sum{hex.EncodeToString(h.Sum(nil)), n}, nil
}
