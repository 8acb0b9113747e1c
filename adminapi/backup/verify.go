package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// Problem is one thing wrong with a backup.
type Problem struct {
	// File is the backup file concerned, when there is one.
	File string
	Msg  string
}

func (p Problem) String() string {
	if p.File != "" {
		return p.File + ": " + p.Msg
	}
	return p.Msg
}

// checkFiles checks the size and SHA-256 of every file a backup needs: its
// own files and every media file, in whichever folder of the chain holds it.
func checkFiles(s Set) []Problem {
	var out []Problem
	check := func(p, want string, size int64) {
		got, err := hashPath(p)
		switch {
		case err != nil && os.IsNotExist(err):
			out = append(out, Problem{p, "missing"})
		case err != nil:
			out = append(out, Problem{p, err.Error()})
		case got.size != size:
			out = append(out, Problem{p, fmt.Sprintf("size %d, the manifest says %d", got.size, size)})
		case got.hash != want:
			out = append(out, Problem{p, "checksum mismatch (sha256 " + got.hash + ", the manifest says " + want + ")"})
		}
	}
	for _, f := range s.Manifest.Files {
		check(filepath.Join(s.Dir, filepath.FromSlash(f.Path)), f.SHA256, f.Size)
	}
	for _, x := range s.Manifest.Media {
		d, ok := s.Folders[x.In]
		if !ok {
			out = append(out, Problem{x.Path, "held by backup " + x.In + ", which is not in the chain"})
			continue
		}
		check(filepath.Join(d, "media", filepath.FromSlash(x.Path)), x.SHA256, x.Size)
	}
	return out
}

// Report is the outcome of a verification.
type Report struct {
	Manifest Manifest
	Dir      string
	// Lines describe what was checked, for printing.
	Lines    []string
	Problems []Problem
}

// Verify proves a backup by restoring its database into a scratch SQLite
// file under scratchDir (a temporary folder when empty), whatever engine
// it came from: it checks every file's checksum, SQLite's integrity check,
// the counts and positions against the manifest, and that this Haven's
// migrations apply to it.
func Verify(ctx context.Context, path, scratchDir string) (Report, error) {
	s, err := Resolve(path)
	if err != nil {
		return Report{}, err
	}
	m := s.Manifest
	r := Report{Manifest: m, Dir: s.Dir}
	r.Lines = append(r.Lines, fmt.Sprintf("backup %s (%s, from %s, %s, schema version %d) in %s", m.ID, m.Kind, m.Database.Engine, m.Created.Format("2006-01-02 15:04:05 MST"), m.Database.SchemaVersion, s.Dir))
	r.Problems = append(r.Problems, checkFiles(s)...)
	r.Lines = append(r.Lines, fmt.Sprintf("checksums: %d files and %d media files checked, %d problems", len(m.Files), len(m.Media), len(r.Problems)))
	if !listsDatabase(m) {
		r.Problems = append(r.Problems, Problem{Msg: "the manifest lists no database file"})
		return r, nil
	}
	if scratchDir == "" {
		scratchDir, err = os.MkdirTemp("", "haven-verify-")
		if err != nil {
			return r, err
		}
		defer os.RemoveAll(scratchDir)
	}
	scratch := filepath.Join(scratchDir, "haven.db")
	applied, err := buildDatabase(ctx, s, scratch)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Msg: "the database cannot be rebuilt: " + err.Error()})
		return r, nil
	}
	if applied > 1 {
		r.Lines = append(r.Lines, fmt.Sprintf("chain: a full backup and %d incrementals applied (%s), database checksum ok", applied-1, strings.Join(append(append([]string{}, m.Chain...), m.ID), " + ")))
	}
	db, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: scratch}, storage.Options{MaxOpenConns: 1, SQLiteSynchronous: "OFF"})
	if err != nil {
		r.Problems = append(r.Problems, Problem{filepath.Join(s.Dir, m.Database.File), "does not open: " + err.Error()})
		return r, nil
	}
	defer db.Close()
	dbFile := filepath.Join(s.Dir, m.Database.File+m.Database.Delta)
	var integrity string
	if err := db.QueryRow(ctx, `PRAGMA integrity_check`).Scan(&integrity); err != nil {
		r.Problems = append(r.Problems, Problem{dbFile, "integrity check failed: " + err.Error()})
		return r, nil
	}
	r.Lines = append(r.Lines, "database integrity: "+integrity)
	if integrity != "ok" {
		r.Problems = append(r.Problems, Problem{dbFile, "integrity check: " + integrity})
		return r, nil
	}
	counts, err := CountRows(ctx, db)
	if err != nil {
		r.Problems = append(r.Problems, Problem{dbFile, err.Error()})
		return r, nil
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{{"users", counts.Users, m.Counts.Users}, {"rooms", counts.Rooms, m.Counts.Rooms}, {"events", counts.Events, m.Counts.Events}, {"media", counts.Media, m.Counts.Media}} {
		mark := "ok"
		if c.got != c.want {
			mark = "MISMATCH"
			r.Problems = append(r.Problems, Problem{dbFile, fmt.Sprintf("%d %s, the manifest says %d", c.got, c.name, c.want)})
		}
		r.Lines = append(r.Lines, fmt.Sprintf("%-8s %10d  manifest %10d  %s", c.name, c.got, c.want, mark))
	}
	pos, err := Positions(ctx, db)
	if err != nil {
		r.Problems = append(r.Problems, Problem{dbFile, err.Error()})
		return r, nil
	}
	var names []string
	for k := range m.Database.Positions {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if pos[k] != m.Database.Positions[k] {
			r.Problems = append(r.Problems, Problem{dbFile, fmt.Sprintf("stream %s at position %d, the manifest says %d", k, pos[k], m.Database.Positions[k])})
		}
	}
	r.Lines = append(r.Lines, fmt.Sprintf("positions: %d streams checked", len(names)))
	migrated, err := db.MigrateReport(ctx)
	if err != nil {
		r.Problems = append(r.Problems, Problem{dbFile, "this Haven's migrations do not apply: " + err.Error()})
		return r, nil
	}
	r.Lines = append(r.Lines, fmt.Sprintf("migrations: %d applied to the scratch copy, schema now current", len(migrated)))
	return r, nil
}

// listsDatabase tells whether the manifest lists the database copy or delta.
func listsDatabase(m Manifest) bool {
	if m.Database.File == "" {
		return listsFile(m, m.Database.Delta)
	}
	return listsFile(m, m.Database.File)
}

func listsFile(m Manifest, path string) bool {
	for _, f := range m.Files {
		if path != "" && f.Path == path {
			return true
		}
	}
	return false
}
