package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
)

// bulk adds n events with bodies of some size, so a full copy is larger
// than what a few writes change.
func (s *site) bulk(t *testing.T, from, n int64) {
	t.Helper()
	ctx := context.Background()
	body := strings.Repeat("lorem ipsum ", 40)
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		for i := from; i < from+n; i++ {
			if _, err := tx.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, sender, depth, origin_ts, snapshot_id, json)
VALUES ($1, $2, '!r:x', 'm.room.message', '@a:x', $1, 0, 0, $3)`, i, fmt.Sprintf("$e%d", i), `{"content":{"body":"`+body+`"}}`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestIncrementalDelta: an incremental keeps only what changed in the
// database, and a full backup plus it restores what a new full backup of
// the same moment restores.
func TestIncrementalDelta(t *testing.T) {
	ctx := context.Background()
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			src := newSite(t, d)
			src.seed(t)
			src.bulk(t, 1000, 1500)
			dir := t.TempDir()
			full, fullDir, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir})
			if err != nil {
				t.Fatal(err)
			}

			// Writes: messages, a user, a media file, deletions.
			for i := int64(2501); i <= 2510; i++ {
				if err := src.message(ctx, i); err != nil {
					t.Fatal(err)
				}
			}
			src.exec(t, `INSERT INTO accounts (user_id, password_hash, is_admin, created_ts) VALUES ('@c:x', 'h', FALSE, 3)`)
			src.addMedia(t, "third file")
			gone := src.addMedia(t, "short-lived file")
			src.exec(t, `DELETE FROM media WHERE sha256 = $1`, gone)
			if err := os.Remove(filepath.Join(src.media, gone[0:2], gone[2:4], gone)); err != nil {
				t.Fatal(err)
			}
			src.exec(t, `DELETE FROM receipts WHERE pos = 5`)

			inc, incDir, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true})
			if err != nil {
				t.Fatal(err)
			}
			if d == storage.SQLite {
				// The pure-Go driver reads pages from sqlite_dbpage; the cgo
				// one (scripts/test.sh runs this package under it too) has
				// no such table and goes through VACUUM INTO.
				want := "pages"
				if strings.Contains(storage.SQLiteDriver, "cgo") {
					want = "vacuum-into"
				}
				if full.Database.Method != want || inc.Database.Method != want {
					t.Fatalf("copy method %q then %q under %s, want %q", full.Database.Method, inc.Database.Method, storage.SQLiteDriver, want)
				}
			}
			if inc.Database.Delta == "" || inc.Database.File != "" || inc.Database.Base != full.ID {
				t.Fatalf("incremental database %+v", inc.Database)
			}
			fullSize := fileOf(full, full.Database.File).Size
			deltaSize := fileOf(inc, inc.Database.Delta).Size
			t.Logf("%s: full database copy %d bytes, incremental delta %d bytes (%d pages changed, tables %v, appended %v)",
				d, fullSize, deltaSize, inc.Database.ChangedPages, inc.Database.ChangedTables, inc.Database.Appended)
			if deltaSize*4 > fullSize {
				t.Fatalf("the incremental's delta is %d bytes, the full copy %d: not much smaller", deltaSize, fullSize)
			}
			// A new full backup of the same moment (paced: the pace changes
			// nothing of the copy).
			fresh, freshDir, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: t.TempDir(), MaxRate: 1024})
			if err != nil {
				t.Fatal(err)
			}
			// The pace counts the database's reads (pages, or rows'
			// values), not only the media: the bulk rows alone are ~0.7 MiB.
			var read float64
			if _, err := fmt.Sscanf(fresh.Paced, "1024 MiB/s, %g MiB read", &read); err != nil || read < 0.6 {
				t.Fatalf("paced: %q (%v)", fresh.Paced, err)
			}

			rep, err := Verify(ctx, incDir, "")
			if err != nil || len(rep.Problems) > 0 {
				t.Fatalf("verify: %v %v", err, rep.Problems)
			}
			if !strings.Contains(strings.Join(rep.Lines, "\n"), "chain: a full backup and 1 incrementals applied") {
				t.Fatalf("verify does not say it checked the chain:\n%s", strings.Join(rep.Lines, "\n"))
			}

			// The databases the two restore hold the same rows.
			scratch := t.TempDir()
			a, b := filepath.Join(scratch, "a.db"), filepath.Join(scratch, "b.db")
			if _, err := buildDatabase(ctx, Set{Manifest: inc, Dir: incDir, Folders: map[string]string{full.ID: fullDir, inc.ID: incDir}}, a); err != nil {
				t.Fatal(err)
			}
			if _, err := buildDatabase(ctx, Set{Manifest: fresh, Dir: freshDir, Folders: map[string]string{fresh.ID: freshDir}}, b); err != nil {
				t.Fatal(err)
			}
			sa, sb := sumsOf(t, a), sumsOf(t, b)
			if len(sa) == 0 || len(sa) != len(sb) {
				t.Fatalf("%d tables from the chain, %d from the new full backup", len(sa), len(sb))
			}
			for tb, x := range sb {
				if sa[tb] != x {
					t.Errorf("table %s: %s from the chain, %s from the new full backup", tb, sa[tb], x)
				}
			}

			// Restored for real, same rows per table and the same media.
			now := func() time.Time { return time.UnixMilli(1_800_000_000_000) }
			fromChain, fromFull := emptySite(t, d), emptySite(t, d)
			if _, err := Restore(ctx, RestoreOptions{From: dir, Target: fromChain.target, MediaDir: fromChain.media, Now: now}); err != nil {
				t.Fatal(err)
			}
			if _, err := Restore(ctx, RestoreOptions{From: freshDir, Target: fromFull.target, MediaDir: fromFull.media, Now: now}); err != nil {
				t.Fatal(err)
			}
			dbA, dbB := fromChain.open(t), fromFull.open(t)
			for tb := range sb {
				q := `SELECT COUNT(*) FROM ` + tb
				if x, y := count(t, dbA, q), count(t, dbB, q); x != y {
					t.Errorf("table %s: %d rows restored from the chain, %d from the new full backup", tb, x, y)
				}
			}
			if n := count(t, dbA, `SELECT COUNT(*) FROM accounts WHERE user_id = '@c:x'`); n != 1 {
				t.Fatal("the new user is not restored")
			}
			if n := count(t, dbA, `SELECT COUNT(*) FROM events`); n != 1530 {
				t.Fatalf("%d events restored from the chain", n)
			}
			if len(inc.Media) != 3 || len(fresh.Media) != 3 {
				t.Fatalf("%d media in the incremental, %d in the new full backup", len(inc.Media), len(fresh.Media))
			}
			for _, x := range fresh.Media {
				got, err := os.ReadFile(filepath.Join(fromChain.media, filepath.FromSlash(x.Path)))
				if err != nil {
					t.Fatal(err)
				}
				if h := sha256.Sum256(got); hex.EncodeToString(h[:]) != x.SHA256 {
					t.Fatalf("media %s differs", x.Path)
				}
			}
			if _, err := os.Stat(filepath.Join(fromChain.media, gone[0:2], gone[2:4], gone)); err == nil {
				t.Fatal("a deleted media file came back")
			}

			// A broken chain is refused, saying which link.
			src.exec(t, `INSERT INTO accounts (user_id, password_hash, is_admin, created_ts) VALUES ('@d:x', 'h', FALSE, 4)`)
			inc2, inc2Dir, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep, err := Verify(ctx, inc2Dir, ""); err != nil || len(rep.Problems) > 0 {
				t.Fatalf("verify of a two-link chain: %v %v", err, rep.Problems)
			}
			delta := filepath.Join(incDir, inc.Database.Delta)
			good, err := os.ReadFile(delta)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(delta, append([]byte("x"), good[1:]...), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Restore(ctx, RestoreOptions{From: inc2Dir, Target: emptySite(t, d).target, MediaDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), inc.ID+", in the chain of "+inc2.ID+", is damaged") {
				t.Fatalf("restore over a damaged link: %v", err)
			}
			rep, err = Verify(ctx, inc2Dir, "")
			if err != nil || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0].String(), "damaged") {
				t.Fatalf("verify over a damaged link: %v %v", err, rep.Problems)
			}
			if err := os.RemoveAll(incDir); err != nil {
				t.Fatal(err)
			}
			_, err = Restore(ctx, RestoreOptions{From: inc2Dir, Target: emptySite(t, d).target, MediaDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), "builds on "+inc.ID) || !strings.Contains(err.Error(), "chain") {
				t.Fatalf("restore without a link: %v", err)
			}
			// An incremental is never built on a damaged base either.
			if err := os.WriteFile(filepath.Join(inc2Dir, PageHashesFile), []byte("x"), 0o600); err == nil && d == storage.SQLite {
				if _, _, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true}); err == nil || !strings.Contains(err.Error(), "take a full backup") {
					t.Fatalf("incremental on a damaged base: %v", err)
				}
			}
		})
	}
}

func sumsOf(t *testing.T, path string) map[string]string {
	t.Helper()
	db, err := storage.Connect(context.Background(), storage.Target{Dialect: storage.SQLite, Path: path}, storage.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := tableSums(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
