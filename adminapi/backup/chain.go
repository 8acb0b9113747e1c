package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// link is one backup of a chain and its folder.
type link struct {
	m   Manifest
	dir string
}

// chainOf lists the backups a restore of s applies, oldest (the full one)
// first, each checked to build on the one before: a missing, replaced or
// damaged link is refused with what is wrong.
func chainOf(s Set) ([]link, error) {
	m := s.Manifest
	var out []link
	for _, id := range m.Chain {
		d := s.Folders[id]
		lm, err := ReadManifest(d)
		if err != nil {
			return nil, fmt.Errorf("the chain of backup %s is broken: backup %s: %w", m.ID, id, err)
		}
		if lm.ID != id {
			return nil, fmt.Errorf("the chain of backup %s is broken: folder %s holds backup %s, not %s", m.ID, d, lm.ID, id)
		}
		out = append(out, link{lm, d})
	}
	out = append(out, link{m, s.Dir})
	if out[0].m.Kind != Full || out[0].m.Database.File == "" {
		return nil, fmt.Errorf("the chain of backup %s is broken: it does not start with a full backup (%s is %s)", m.ID, out[0].m.ID, out[0].m.Kind)
	}
	for i := 1; i < len(out); i++ {
		prev, cur := out[i-1].m, out[i].m
		if cur.Database.Delta == "" {
			continue // an older incremental: a whole database copy
		}
		if cur.Database.Base != prev.ID {
			return nil, fmt.Errorf("the chain of backup %s is broken: %s builds on %s, but the backup before it in the chain is %s", m.ID, cur.ID, cur.Database.Base, prev.ID)
		}
		if cur.Database.BaseSHA256 != prev.Database.SHA256 {
			return nil, fmt.Errorf("the chain of backup %s is broken: %s was taken on another version of %s (database checksum %s, the one in the folder %s); restore an earlier backup or take a full one", m.ID, cur.ID, prev.ID, short(cur.Database.BaseSHA256), short(prev.Database.SHA256))
		}
		if cur.Database.Method != prev.Database.Method && !(cur.Database.Method == "pages" && prev.Database.Method == "vacuum-into") && !(cur.Database.Method == "vacuum-into" && prev.Database.Method == "pages") {
			return nil, fmt.Errorf("the chain of backup %s is broken: %s (%s) cannot build on %s (%s)", m.ID, cur.ID, cur.Database.Method, prev.ID, prev.Database.Method)
		}
	}
	for _, l := range out[:len(out)-1] {
		if probs := checkOwnFiles(l); len(probs) > 0 {
			var b strings.Builder
			for _, p := range probs {
				b.WriteString("\n  " + p.String())
			}
			return nil, fmt.Errorf("backup %s, in the chain of %s, is damaged:%s", l.m.ID, m.ID, b.String())
		}
	}
	return out, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// checkOwnFiles checks a backup's own files (not its media).
func checkOwnFiles(l link) []Problem {
	return checkFiles(Set{Manifest: Manifest{Files: l.m.Files}, Dir: l.dir})
}

// buildDatabase writes the whole database file backup s restores to dst:
// its copy, or its chain's full copy with each incremental's delta applied
// in order, and checks the result against the manifest. It returns how
// many backups it applied.
func buildDatabase(ctx context.Context, s Set, dst string) (int, error) {
	m := s.Manifest
	chain := []link{{m, s.Dir}}
	if m.Database.File == "" {
		var err error
		if chain, err = chainOf(s); err != nil {
			return 0, err
		}
		// Start from the last whole copy in the chain.
		for i := len(chain) - 1; i >= 0; i-- {
			if chain[i].m.Database.File != "" {
				chain = chain[i:]
				break
			}
		}
	}
	first := chain[0]
	got, err := copyFile(filepath.Join(first.dir, first.m.Database.File), dst)
	if err != nil {
		return 0, fmt.Errorf("copy the database of backup %s: %w", first.m.ID, err)
	}
	if f := fileOf(first.m, first.m.Database.File); f == nil || f.SHA256 != got.hash {
		return 0, fmt.Errorf("backup %s: %s does not match its manifest", first.m.ID, first.m.Database.File)
	}
	if len(chain) == 1 {
		return 1, nil
	}
	if first.m.Database.Tables != nil {
		return len(chain), buildTables(ctx, chain, dst, m)
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	for _, l := range chain[1:] {
		if l.m.Database.PageSize != first.m.Database.PageSize {
			f.Close()
			return 0, fmt.Errorf("backup %s: page size %d, its chain's %d", l.m.ID, l.m.Database.PageSize, first.m.Database.PageSize)
		}
		if err := applyPages(f, filepath.Join(l.dir, l.m.Database.Delta), l.m.Database.PageSize, l.m.Database.Pages); err != nil {
			f.Close()
			return 0, fmt.Errorf("apply backup %s: %w", l.m.ID, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	sum, err := hashPath(dst)
	if err != nil {
		return 0, err
	}
	if sum.hash != m.Database.SHA256 || sum.size != m.Database.Size {
		return 0, fmt.Errorf("the database rebuilt from the chain of backup %s does not match its manifest (sha256 %s, %d bytes; the manifest says %s, %d bytes)", m.ID, short(sum.hash), sum.size, short(m.Database.SHA256), m.Database.Size)
	}
	return len(chain), nil
}

// buildTables applies a chain of table deltas to the full copy at dst.
func buildTables(ctx context.Context, chain []link, dst string, m Manifest) error {
	scratch, err := os.MkdirTemp(filepath.Dir(dst), ".haven-chain-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	db, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: dst}, storage.Options{MaxOpenConns: 1, SQLiteSynchronous: "OFF"})
	if err != nil {
		return err
	}
	for _, l := range chain[1:] {
		if l.m.Database.SchemaVersion != chain[0].m.Database.SchemaVersion {
			db.Close()
			return fmt.Errorf("backup %s: schema version %d, its chain's %d", l.m.ID, l.m.Database.SchemaVersion, chain[0].m.Database.SchemaVersion)
		}
		if err := applyTables(ctx, db, filepath.Join(l.dir, l.m.Database.Delta), l.m.Database.ChangedTables, l.m.Database.Appended, scratch); err != nil {
			db.Close()
			return fmt.Errorf("apply backup %s: %w", l.m.ID, err)
		}
	}
	sums, err := tableSums(ctx, db)
	if err == nil {
		_, err = db.Exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	}
	db.Close()
	if err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(dst + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for t, want := range m.Database.Tables {
		if sums[t] != want {
			return fmt.Errorf("the database rebuilt from the chain of backup %s does not match its manifest: table %s has checksum %s, the manifest says %s", m.ID, t, sums[t], want)
		}
	}
	if len(sums) != len(m.Database.Tables) {
		return fmt.Errorf("the database rebuilt from the chain of backup %s has %d tables, the manifest lists %d", m.ID, len(sums), len(m.Database.Tables))
	}
	return syncFile(dst)
}

func fileOf(m Manifest, path string) *File {
	for i := range m.Files {
		if m.Files[i].Path == path {
			return &m.Files[i]
		}
	}
	return nil
}
