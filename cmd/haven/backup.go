package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/haven-chat/haven/adminapi/backup"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
)

const backupUsage = "back up the running server (database, media, config): --to DIR [--incremental] [--max-rate MIB_PER_SEC]; 'haven backup verify DIR' proves a backup by restoring it into a scratch place"

// runBackup takes a backup, or with "verify" checks one.
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "verify" {
		return runBackupVerify(ctx, args[1:], stdout, stderr)
	}
	fs, cfgPath := flagSet("backup", stderr)
	to := fs.String("to", "", "the folder of backups; each backup is a new folder in it (default: backup.dir, or data_dir/backups)")
	incremental := fs.Bool("incremental", false, "keep only what changed since the newest backup in the folder: the media files it lacks, the database pages (SQLite) or tables (PostgreSQL) whose checksum differs")
	maxRate := fs.Int("max-rate", -1, "read the database and media at most this many MiB/s, 0 for unlimited (default: backup.max_rate)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	dir := *to
	if dir == "" {
		dir = cfg.BackupDir()
	}
	rate := cfg.Backup.MaxRate
	if *maxRate >= 0 {
		rate = *maxRate
	}
	// A backup runs beside the server: it yields the CPU and the disk.
	lowerPriority()
	m, out, err := takeBackup(ctx, cfg, *cfgPath, dir, *incremental, rate, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "haven backup:", err)
		return 1
	}
	fmt.Fprintf(stdout, "backup %s written to %s in %s: %d users, %d rooms, %d events, %d media (%d media files, %d copied now), schema version %d\n",
		m.ID, out, m.Duration, m.Counts.Users, m.Counts.Rooms, m.Counts.Events, m.Counts.Media, len(m.Media), copiedNow(m), m.Database.SchemaVersion)
	fmt.Fprintln(stdout, "positions:", positions(m.Database.Positions))
	if d := describeDelta(m); d != "" {
		fmt.Fprintln(stdout, d)
	}
	if m.Paced != "" {
		fmt.Fprintln(stdout, "paced at", m.Paced)
	}
	fmt.Fprintln(stdout, "it holds secrets (the signing key, password hashes, the configuration): keep it private")
	return 0
}

func takeBackup(ctx context.Context, cfg config.Config, cfgPath, to string, incremental bool, maxRate int, stderr io.Writer) (backup.Manifest, string, error) {
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		return backup.Manifest{}, "", err
	}
	p := newProgressPrinter("backup", stderr)
	defer p.finish()
	return backup.Take(ctx, backup.Options{
		Target: t, MediaDir: filepath.Join(cfg.DataDir, "media"), To: to, Incremental: incremental, MaxRate: float64(maxRate),
		SecretFiles: []string{cfgPath, cfg.Federation.TLSCert, cfg.Federation.TLSKey},
		ServerName:  cfg.ServerName, Version: Version, Progress: p.report,
	})
}

// describeDelta says what an incremental's database delta holds.
func describeDelta(m backup.Manifest) string {
	db := m.Database
	if db.Delta == "" {
		return ""
	}
	var n int64
	for _, f := range m.Files {
		if f.Path == db.Delta {
			n = f.Size
		}
	}
	if db.Tables != nil {
		return fmt.Sprintf("database: %d of %d tables changed since %s (%d of them only new rows), %s in %s", len(db.ChangedTables), len(db.Tables), db.Base, len(db.Appended), size(n), db.Delta)
	}
	return fmt.Sprintf("database: %d of %d pages changed since %s, %s in %s", db.ChangedPages, db.Pages, db.Base, size(n), db.Delta)
}

func copiedNow(m backup.Manifest) int {
	n := 0
	for _, x := range m.Media {
		if x.In == m.ID {
			n++
		}
	}
	return n
}

func positions(p map[string]int64) string {
	var names []string
	for k := range p {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", k, p[k]))
	}
	return strings.Join(parts, " ")
}

func runBackupVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := flagSet("backup verify", stderr)
	scratch := fs.String("scratch", "", "folder for the scratch restore (default: a temporary folder, removed afterwards)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: haven backup verify [--scratch DIR] BACKUP_DIR (a backup folder, or a folder of backups: its newest)")
		return 2
	}
	rep, err := backup.Verify(ctx, fs.Arg(0), *scratch)
	if err != nil {
		fmt.Fprintln(stderr, "haven backup verify:", err)
		return 1
	}
	for _, l := range rep.Lines {
		fmt.Fprintln(stdout, l)
	}
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Fprintln(stdout, "FAILED:", p)
		}
		fmt.Fprintf(stdout, "backup %s FAILED verification: %d problem(s)\n", rep.Manifest.ID, len(rep.Problems))
		return 1
	}
	fmt.Fprintf(stdout, "backup %s verified\n", rep.Manifest.ID)
	return 0
}

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("restore", stderr)
	from := fs.String("from", "", "a backup folder, or a folder of backups (its newest is restored, with the backups it builds on)")
	force := fs.Bool("force", false, "replace a database and media folder that are not empty (never one a running server holds)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *from == "" {
		fmt.Fprintln(stderr, "haven restore: --from is required, for example: haven restore --config /etc/haven/haven.yaml --from /var/backups/haven")
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, "haven restore:", err)
		return 1
	}
	p := newProgressPrinter("restore", stderr)
	m, err := backup.Restore(ctx, backup.RestoreOptions{From: *from, Target: t, MediaDir: filepath.Join(cfg.DataDir, "media"), Force: *force, Progress: p.report})
	p.finish()
	if err != nil {
		fmt.Fprintln(stderr, "haven restore:", err)
		if errors.Is(err, backup.ErrNotEmpty) {
			return 3
		}
		return 1
	}
	fmt.Fprintf(stdout, "restored backup %s (%s, taken %s) into %s: %d users, %d rooms, %d events, %d media files\n",
		m.ID, m.Kind, m.Created.Format(time.RFC3339), t.Redacted(), m.Counts.Users, m.Counts.Rooms, m.Counts.Events, len(m.Media))
	fmt.Fprintf(stdout, "every stream goes on %d positions beyond the backup's; clients that synced after the backup start over with an initial sync\n", backup.Jump)
	fmt.Fprintln(stdout, "the backed-up configuration and keys (not applied) are under", filepath.Join(*from, "…", m.ID, "files"))
	return 0
}

// progressPrinter shows a long operation's progress: on a terminal one
// line redrawn in place with a bar and the time left; otherwise a plain
// line when the phase changes and every few seconds.
type progressPrinter struct {
	mu       sync.Mutex
	w        io.Writer
	what     string
	tty      bool
	phase    string
	started  time.Time
	last     time.Time
	drawn    bool
	interval time.Duration
}

func newProgressPrinter(what string, w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w, what: what, interval: 5 * time.Second}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.interval = true, 100*time.Millisecond
		}
	}
	return p
}

func (p *progressPrinter) report(pr backup.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	phase := strings.Fields(pr.Phase + " ")[0]
	newPhase := phase != p.phase
	if newPhase {
		p.phase, p.started = phase, now
	}
	if !newPhase && now.Sub(p.last) < p.interval && !(pr.Total > 0 && pr.Done == pr.Total) {
		return
	}
	p.last = now
	line := p.what + ": " + pr.Phase
	if pr.Total > 0 {
		frac := float64(pr.Done) / float64(pr.Total)
		line += fmt.Sprintf(" %3.0f%% %s/%s", 100*frac, size(pr.Done), size(pr.Total))
		if el := now.Sub(p.started); pr.Done > 0 && el > time.Second {
			eta := time.Duration(float64(el) * float64(pr.Total-pr.Done) / float64(pr.Done))
			line += " ETA " + eta.Round(time.Second).String()
		}
		if p.tty {
			n := int(frac * 30)
			line = "[" + strings.Repeat("#", n) + strings.Repeat(" ", 30-n) + "] " + line
		}
	} else if pr.Done > 0 {
		line += fmt.Sprintf(" %d %s", pr.Done, pr.Unit)
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progressPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// checkBackupAge is the health check of the newest backup's age in the
// configured backup folder.
func checkBackupAge(cfg config.Config, now time.Time) healthItem {
	warn, _ := time.ParseDuration(cfg.Backup.WarnAge)
	crit, _ := time.ParseDuration(cfg.Backup.CriticalAge)
	m, err := backup.Newest(cfg.BackupDir())
	if errors.Is(err, backup.ErrNoBackup) || errors.Is(err, os.ErrNotExist) {
		return healthItem{state: stateCritical, text: "no backup in " + cfg.BackupDir()}
	}
	if err != nil {
		return healthItem{state: stateUnknown, text: "backups: " + err.Error()}
	}
	age := now.Sub(m.Created)
	perf := fmt.Sprintf("backup_age_seconds=%.0fs;%.0f;%.0f", age.Seconds(), warn.Seconds(), crit.Seconds())
	text := fmt.Sprintf("newest backup %s is %s old", m.ID, age.Round(time.Minute))
	switch {
	case age >= crit:
		return healthItem{state: stateCritical, text: text, perf: perf}
	case age >= warn:
		return healthItem{state: stateWarning, text: text, perf: perf}
	}
	return healthItem{state: stateOK, text: text, perf: perf}
}
