package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// site is a data folder and database as a server leaves them.
type site struct {
	target storage.Target
	media  string
	db     *storage.DB
}

func newSite(t *testing.T, d storage.Dialect) *site {
	t.Helper()
	tg := storagetest.Target(t, d)
	db, err := storage.Open(context.Background(), tg, storage.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &site{target: tg, media: filepath.Join(t.TempDir(), "media"), db: db}
}

// emptySite is a target with nothing in it yet.
func emptySite(t *testing.T, d storage.Dialect) *site {
	t.Helper()
	return &site{target: storagetest.Target(t, d), media: filepath.Join(t.TempDir(), "media")}
}

func (s *site) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	err := s.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(context.Background(), q, args...)
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// message writes an event and a receipt in one transaction: a backup has
// both or neither.
func (s *site) message(ctx context.Context, pos int64) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, sender, depth, origin_ts, snapshot_id, json)
VALUES ($1, $2, '!r:x', 'm.room.message', '@a:x', $1, 0, 0, '{"content":{"body":"hi"}}')`, pos, fmt.Sprintf("$e%d", pos)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO receipts (room_id, rtype, user_id, thread_id, event_id, ts, pos) VALUES ('!r:x', 'm.read', $1, '', $2, 0, $3)`,
			fmt.Sprintf("@u%d:x", pos), fmt.Sprintf("$e%d", pos), pos)
		return err
	})
}

func (s *site) addMedia(t *testing.T, content string) string {
	t.Helper()
	h := sha256.Sum256([]byte(content))
	hash := hex.EncodeToString(h[:])
	p := filepath.Join(s.media, hash[0:2], hash[2:4], hash)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s.exec(t, `INSERT INTO media (media_id, user_id, size, sha256, created_ts) VALUES ($1, '@a:x', $2, $3, 0)`, hash[:12], len(content), hash)
	return hash
}

func (s *site) seed(t *testing.T) {
	t.Helper()
	s.exec(t, `INSERT INTO accounts (user_id, password_hash, is_admin, created_ts) VALUES ('@a:x', 'h', TRUE, 1), ('@b:x', 'h', FALSE, 2)`)
	s.exec(t, `INSERT INTO rooms (room_id, room_version, creator, created_ts, published) VALUES ('!r:x', '11', '@a:x', 1, TRUE)`)
	s.exec(t, `INSERT INTO server_keys (key_id, seed, created_ts) VALUES ('ed25519:a', $1, 1)`, []byte{1, 2, 3, 0, 255})
	for i := int64(1); i <= 20; i++ {
		if err := s.message(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	s.addMedia(t, "first file")
	s.addMedia(t, "second file")
}

func count(t *testing.T, db *storage.DB, q string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func (s *site) open(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), s.target, storage.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func TestBackupRestoreVerify(t *testing.T) {
	ctx := context.Background()
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			src := newSite(t, d)
			src.seed(t)
			dir := t.TempDir()

			// Messages keep coming while the backup runs.
			var next atomic.Int64
			next.Store(21)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := src.message(ctx, next.Load()); err != nil {
						t.Error(err)
						return
					}
					next.Add(1)
				}
			}()
			m, bdir, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, ServerName: "x"})
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if m.Counts.Users != 2 || m.Counts.Rooms != 1 || m.Counts.Media != 2 || m.Counts.Events < 20 || len(m.Media) != 2 {
				t.Fatalf("manifest counts %+v, media %d", m.Counts, len(m.Media))
			}
			if m.Database.Positions[storage.StreamEvents] != m.Counts.Events || m.Database.Positions[storage.StreamReceipts] != m.Counts.Events {
				t.Fatalf("positions %v for %d events: a message is in the backup only in part", m.Database.Positions, m.Counts.Events)
			}

			rep, err := Verify(ctx, dir, "")
			if err != nil || len(rep.Problems) > 0 {
				t.Fatalf("verify: %v %v", err, rep.Problems)
			}

			// Restore into an empty place of the same kind and of the other one.
			for _, into := range []storage.Dialect{d, 1 - d} {
				dst := emptySite(t, into)
				if _, err := Restore(ctx, RestoreOptions{From: dir, Target: dst.target, MediaDir: dst.media}); err != nil {
					t.Fatalf("restore into %s: %v", into, err)
				}
				db := dst.open(t)
				if n := count(t, db, `SELECT COUNT(*) FROM events`); n != m.Counts.Events {
					t.Fatalf("restored %d events, backed up %d", n, m.Counts.Events)
				}
				if n := count(t, db, `SELECT COUNT(*) FROM receipts`); n != m.Counts.Events {
					t.Fatalf("restored %d receipts for %d events", n, m.Counts.Events)
				}
				if n := count(t, db, `SELECT COUNT(*) FROM accounts WHERE is_admin`); n != 1 {
					t.Fatalf("%d admins restored", n)
				}
				var seed []byte
				if err := db.QueryRow(ctx, `SELECT seed FROM server_keys`).Scan(&seed); err != nil || string(seed) != string([]byte{1, 2, 3, 0, 255}) {
					t.Fatalf("signing key %v %v", seed, err)
				}
				floor, err := storage.StreamFloor(ctx, db, storage.StreamEvents)
				if err != nil || floor != m.Database.Positions[storage.StreamEvents]+Jump {
					t.Fatalf("events floor %d %v", floor, err)
				}
				for _, x := range m.Media {
					b, err := os.ReadFile(filepath.Join(dst.media, x.Path))
					if err != nil {
						t.Fatal(err)
					}
					if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != x.SHA256 {
						t.Fatalf("media %s differs", x.Path)
					}
				}
				// A second restore into it is refused.
				_, err = Restore(ctx, RestoreOptions{From: dir, Target: dst.target, MediaDir: dst.media})
				if !errors.Is(err, ErrNotEmpty) {
					t.Fatalf("restore over data: %v", err)
				}
				// A backup of the restored database carries the floors on.
				db.Close()
				m2, _, err := Take(ctx, Options{Target: dst.target, MediaDir: dst.media, To: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				if m2.Database.Positions[storage.StreamEvents] != floor {
					t.Fatalf("backup of the restored database at %d, floor %d", m2.Database.Positions[storage.StreamEvents], floor)
				}
			}

			// A damaged file fails verification, named.
			victim := filepath.Join(bdir, "media", filepath.FromSlash(m.Media[0].Path))
			if err := os.WriteFile(victim, []byte("rotten"), 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err = Verify(ctx, dir, "")
			if err != nil || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].String(), victim) {
				t.Fatalf("verify of a damaged backup: %v %v", err, rep.Problems)
			}
			if _, err := Restore(ctx, RestoreOptions{From: dir, Target: emptySite(t, d).target, MediaDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), victim) {
				t.Fatalf("restore of a damaged backup: %v", err)
			}
		})
	}
}

func TestIncrementalChain(t *testing.T) {
	ctx := context.Background()
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			src := newSite(t, d)
			src.seed(t)
			dir := t.TempDir()
			if _, _, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true}); err == nil {
				t.Fatal("an incremental backup without a full one was taken")
			}
			full, _, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir})
			if err != nil {
				t.Fatal(err)
			}
			for i := int64(21); i <= 30; i++ {
				if err := src.message(ctx, i); err != nil {
					t.Fatal(err)
				}
			}
			src.addMedia(t, "third file")
			inc1, _, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true})
			if err != nil {
				t.Fatal(err)
			}
			src.addMedia(t, "fourth file")
			inc2, _, err := Take(ctx, Options{Target: src.target, MediaDir: src.media, To: dir, Incremental: true})
			if err != nil {
				t.Fatal(err)
			}
			if inc2.Kind != Incremental || len(inc2.Chain) != 2 || inc2.Chain[0] != full.ID || inc2.Chain[1] != inc1.ID || len(inc2.Media) != 4 {
				t.Fatalf("chain %v, %d media", inc2.Chain, len(inc2.Media))
			}
			copied := 0
			for _, x := range inc2.Media {
				if x.In == inc2.ID {
					copied++
				}
			}
			if copied != 1 {
				t.Fatalf("the second incremental copied %d media files, want 1", copied)
			}
			rep, err := Verify(ctx, dir, "")
			if err != nil || len(rep.Problems) > 0 || rep.Manifest.ID != inc2.ID {
				t.Fatalf("verify: %v %v", err, rep.Problems)
			}
			dst := emptySite(t, d)
			if _, err := Restore(ctx, RestoreOptions{From: dir, Target: dst.target, MediaDir: dst.media}); err != nil {
				t.Fatal(err)
			}
			db := dst.open(t)
			if n := count(t, db, `SELECT COUNT(*) FROM events`); n != 30 {
				t.Fatalf("%d events restored from the chain", n)
			}
			if n := count(t, db, `SELECT COUNT(*) FROM media`); n != 4 {
				t.Fatalf("%d media rows restored", n)
			}
			for _, x := range inc2.Media {
				if _, err := os.Stat(filepath.Join(dst.media, x.Path)); err != nil {
					t.Fatal(err)
				}
			}
			// --force replaces what is there, but never under a running server.
			release, err := db.AcquireWriter(ctx, dst.target.Path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Restore(ctx, RestoreOptions{From: filepath.Join(dir, full.ID), Target: dst.target, MediaDir: dst.media, Force: true})
			if err == nil || !strings.Contains(err.Error(), "running") {
				t.Fatalf("restore under a running server: %v", err)
			}
			release()
			db.Close()
			if _, err := Restore(ctx, RestoreOptions{From: filepath.Join(dir, full.ID), Target: dst.target, MediaDir: dst.media, Force: true}); err != nil {
				t.Fatal(err)
			}
			db = dst.open(t)
			if n := count(t, db, `SELECT COUNT(*) FROM events`); n != 20 {
				t.Fatalf("%d events after restoring the full backup over the chain's", n)
			}
		})
	}
}
