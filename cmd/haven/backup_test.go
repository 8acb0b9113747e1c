package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestBackupRestoreCLI drives haven backup, backup verify, restore, and
// the backup before migrate, on both databases.
func TestBackupRestoreCLI(t *testing.T) {
	t.Parallel()
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			database := func() string {
				if d == storage.Postgres {
					return storagetest.NewSchema(t)
				}
				return ""
			}
			src := e2eEnv("HAVEN_DATA_DIR="+filepath.Join(dir, "data"), "HAVEN_DATABASE="+database())
			// create-user never makes a database: migrate does, as a first start would.
			if out, errOut, code := e2eRun(t, dir, src, "migrate"); code != 0 {
				t.Fatalf("migrate: %d %s %s", code, out, errOut)
			}
			if out, errOut, code := e2eRun(t, dir, src, "create-user", "--user", "alice", "--password", "a long password", "--admin"); code != 0 {
				t.Fatalf("create-user: %d %s %s", code, out, errOut)
			}
			media := filepath.Join(dir, "data", "media", "ab", "cd", "abcdef")
			if err := os.MkdirAll(filepath.Dir(media), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(media, []byte("picture"), 0o600); err != nil {
				t.Fatal(err)
			}
			backups := filepath.Join(dir, "backups")
			out, errOut, code := e2eRun(t, dir, src, "backup", "--to", backups)
			if code != 0 || !strings.Contains(out, "1 users") || !strings.Contains(out, "1 media files, 1 copied now") || !strings.Contains(out, "positions: account_data=") {
				t.Fatalf("backup exited %d:\n%s%s", code, out, errOut)
			}
			if !strings.Contains(errOut, "backup: database") {
				t.Errorf("no progress lines:\n%s", errOut)
			}
			out, errOut, code = e2eRun(t, dir, src, "backup", "--to", backups, "--incremental")
			if code != 0 || !strings.Contains(out, "1 media files, 0 copied now") || !strings.Contains(out, "changed since") {
				t.Fatalf("incremental backup exited %d:\n%s%s", code, out, errOut)
			}
			out, errOut, code = e2eRun(t, dir, src, "backup", "verify", backups)
			if code != 0 || !strings.Contains(out, "verified") || !strings.Contains(out, "users             1  manifest          1  ok") {
				t.Fatalf("verify exited %d:\n%s%s", code, out, errOut)
			}

			dst := e2eEnv("HAVEN_DATA_DIR="+filepath.Join(dir, "restored"), "HAVEN_DATABASE="+database())
			out, errOut, code = e2eRun(t, dir, dst, "restore", "--from", backups)
			if code != 0 || !strings.Contains(out, "1 users") {
				t.Fatalf("restore exited %d:\n%s%s", code, out, errOut)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "restored", "media", "ab", "cd", "abcdef")); err != nil || string(b) != "picture" {
				t.Fatalf("restored media: %q %v", b, err)
			}
			out, errOut, code = e2eRun(t, dir, dst, "restore", "--from", backups)
			if code != 3 || !strings.Contains(errOut, "not empty") {
				t.Fatalf("restore over data exited %d:\n%s%s", code, out, errOut)
			}
			out, errOut, code = e2eRun(t, dir, dst, "restore", "--from", backups, "--force")
			if code != 0 {
				t.Fatalf("restore --force exited %d:\n%s%s", code, out, errOut)
			}

			// A damaged media file fails verification, named.
			full, err := filepath.Glob(filepath.Join(backups, "*-full", "media", "ab", "cd", "abcdef"))
			if err != nil || len(full) != 1 {
				t.Fatalf("backed-up media file: %v %v", full, err)
			}
			if err := os.WriteFile(full[0], []byte("pictura"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code = e2eRun(t, dir, src, "backup", "verify", backups)
			if code != 1 || !strings.Contains(out, "FAILED: "+full[0]+": checksum mismatch") {
				t.Fatalf("verify of a damaged backup exited %d:\n%s%s", code, out, errOut)
			}

			// The age check of haven health, with a backup folder configured.
			out, _, _ = e2eRun(t, dir, append(src, "HAVEN_BACKUP_DIR="+backups), "health", "--url", "http://127.0.0.1:1")
			if !strings.Contains(out, "newest backup ") || !strings.Contains(out, "backup_age_seconds=") {
				t.Errorf("health without the backup age:\n%s", out)
			}
			out, _, _ = e2eRun(t, dir, append(src, "HAVEN_BACKUP_DIR="+filepath.Join(dir, "none")), "health", "--url", "http://127.0.0.1:1")
			if !strings.Contains(out, "CRITICAL") || !strings.Contains(out, "no backup in") {
				t.Errorf("health with no backup:\n%s", out)
			}

			// migrate backs the database up before applying a pending migration.
			unmigrate(t, src)
			out, errOut, code = e2eRun(t, dir, src, "migrate")
			if code != 0 || !strings.Contains(out, "backed up schema version") || !strings.Contains(out, "applied 0029_restore_windows") {
				t.Fatalf("migrate exited %d:\n%s%s", code, out, errOut)
			}
			pre, _ := filepath.Glob(filepath.Join(dir, "data", "backups", "pre-migrate-*"))
			if len(pre) != 1 {
				t.Fatalf("pre-migrate backups: %v", pre)
			}
			out, errOut, code = e2eRun(t, dir, src, "backup", "verify", pre[0])
			if code != 0 || !strings.Contains(out, "verified") {
				t.Fatalf("verify of the pre-migrate backup exited %d:\n%s%s", code, out, errOut)
			}
			unmigrate(t, src)
			out, errOut, code = e2eRun(t, dir, src, "migrate", "--no-backup")
			if code != 0 || strings.Contains(out, "backed up") {
				t.Fatalf("migrate --no-backup exited %d:\n%s%s", code, out, errOut)
			}
		})
	}
}

// unmigrate undoes migration 0029 by hand (it only creates a table), so
// that migrate has one to apply.
func unmigrate(t *testing.T, env []string) {
	t.Helper()
	var setting, dataDir string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HAVEN_DATABASE="); ok {
			setting = v
		}
		if v, ok := strings.CutPrefix(kv, "HAVEN_DATA_DIR="); ok {
			dataDir = v
		}
	}
	tg, err := storage.ParseTarget(setting, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := storage.Connect(ctx, tg, storage.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`DELETE FROM schema_migrations WHERE version = 29`} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
