package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-chat/haven/appservice"
	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/mailer"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/server"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

func loadConfig(path string, stderr io.Writer) (config.Config, bool) {
	cfg, probs := config.Load(path, os.Environ())
	if len(probs) > 0 {
		fmt.Fprint(stderr, probs.Error())
		return cfg, false
	}
	return cfg, true
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("serve", stderr)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	// The application services' registration files refuse a start too.
	if _, probs := appservice.Load(cfg.AppServices.Items(), cfg.ServerName); len(probs) > 0 {
		fmt.Fprint(stderr, probs.Error())
		return 1
	}
	if probs := cfg.CheckLive(ctx, true); len(probs) > 0 {
		fmt.Fprint(stderr, probs.Error())
		return 1
	}
	log, err := logging.New(cfg.Logging.Format, cfg.Logging.Level, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	logging.SetFallback(log)
	for _, w := range append(cfg.Warnings(), cfg.FileWarnings(*cfgPath)...) {
		log.Warn(w)
	}
	a, err := server.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "haven: cannot start:", err)
		return 1
	}
	defer a.Close()
	if err := a.Listen(); err != nil {
		fmt.Fprintln(stderr, "haven:", err)
		return 1
	}
	metrics.RegisterBuild(version())
	cfgFlag := ""
	if *cfgPath != "" {
		cfgFlag = " --config " + *cfgPath
	}
	fmt.Fprintf(stdout, "Haven %s listening on http://%s — server name %s, database %s, NATS %s. Create the first user: haven create-user%s --user alice --admin\n",
		version(), a.Addr(), cfg.ServerName, a.DB.Location, a.Bus.Where, cfgFlag)
	if cfg.Metrics.Listen != "" {
		log.WithField("listen", cfg.Metrics.Listen).Info("metrics listener on /metrics")
	}
	if err := a.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, "haven:", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func runCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("check-config", stderr)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, probs := config.Load(*cfgPath, os.Environ())
	_, asProbs := appservice.Load(cfg.AppServices.Items(), cfg.ServerName)
	probs = append(probs, asProbs...)
	probs = append(probs, cfg.CheckLive(ctx, true)...)
	probs = append(probs, ldapProblems(ctx, cfg, probs)...)
	if m := mailer.New(cfg.Email); m != nil && len(probs) == 0 {
		// Connect, upgrade to TLS and log in as sending would; send nothing.
		if err := m.Check(ctx); err != nil {
			probs = append(probs, config.Problem{Key: "email.smtp_host", Value: cfg.Email.SMTPHost, Why: err.Error(),
				Fix: "check email.smtp_host, smtp_port, smtp_tls (starttls for 587, tls for 465) and the SMTP username and password"})
		}
	}
	if len(probs) > 0 {
		fmt.Fprint(stdout, probs.Error())
		return 1
	}
	t, _ := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if msg := schemaProblem(ctx, t); msg != "" {
		fmt.Fprintln(stdout, msg)
		return 1
	}
	fmt.Fprintf(stdout, "Configuration OK: server name %s, listen %s, database %s, NATS %s.\n",
		cfg.ServerName, cfg.Listen, t.Redacted(), orDefault(cfg.NATS.URL, "embedded"))
	for _, w := range append(cfg.Warnings(), cfg.FileWarnings(*cfgPath)...) {
		fmt.Fprintln(stdout, "warning:", w)
	}
	return 0
}

func orDefault(s, d string) string {
	if strings.TrimSpace(s) == "" {
		return d
	}
	return s
}

func runGenerateConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, _ := flagSet("generate-config", stderr)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	fmt.Fprint(stdout, config.Template)
	return 0
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("migrate", stderr)
	dryRun := fs.Bool("dry-run", false, "list the migrations that would be applied, and change nothing")
	noBackup := fs.Bool("no-backup", false, "do not back up the database before applying migrations")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, "haven migrate:", err)
		return 1
	}
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 2, SQLiteSynchronous: cfg.SQLiteSynchronous})
	if err != nil {
		fmt.Fprintln(stderr, "haven migrate:", err)
		return 1
	}
	defer db.Close()
	if *dryRun {
		v, pending, err := db.Pending(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "haven migrate:", err)
			return 1
		}
		fmt.Fprintf(stdout, "database %s is at schema version %d; %d migration(s) pending\n", db.Location, v, len(pending))
		for _, m := range pending {
			fmt.Fprintln(stdout, "would apply", m.Name)
		}
		return 0
	}
	// Before changing the schema of a database with data, a backup to go
	// back to (restore it with the older binary).
	have, pending, err := db.Pending(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "haven migrate:", err)
		return 1
	}
	if len(pending) > 0 && have > 0 && !*noBackup {
		to := filepath.Join(cfg.BackupDir(), "pre-migrate-"+time.Now().UTC().Format("20060102T150405Z"))
		m, dir, err := takeBackup(ctx, cfg, *cfgPath, to, false, 0, stderr) // the server is stopped: unpaced
		if err != nil {
			fmt.Fprintln(stderr, "haven migrate: the backup before migrating failed, nothing was changed (--no-backup skips it):", err)
			return 1
		}
		fmt.Fprintf(stdout, "backed up schema version %d to %s (%d events, %d media files)\n", m.Database.SchemaVersion, dir, m.Counts.Events, len(m.Media))
	}
	applied, err := db.MigrateReport(ctx)
	for _, m := range applied {
		fmt.Fprintln(stdout, "applied", m)
	}
	if err != nil {
		fmt.Fprintln(stderr, "haven migrate:", err)
		return 1
	}
	v, _ := db.AppliedVersion(ctx)
	fmt.Fprintf(stdout, "database %s is at schema version %d\n", db.Location, v)
	return 0
}

// runCreateUser creates an account straight in the server's database, so
// it works whether or not a server is running. Without --config it uses
// the running server's configuration (locate.go); it never creates a
// database. The password is asked for without echo, or read from
// standard input; --password still works but shows in the process list.
func runCreateUser(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("create-user", stderr)
	user := fs.String("user", "", "the new user's name (localpart, such as alice) or full user ID")
	password := fs.String("password", "", "the new user's password (better left out: it is asked for, or read from standard input)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *user == "" {
		fmt.Fprintln(stderr, "haven create-user: --user is required, for example: haven create-user --user alice [--admin]")
		return 2
	}
	cfg, note, err := serverConfig(*cfgPath, "create-user")
	if err != nil {
		fmt.Fprint(stderr, "haven create-user: ", err.Error())
		if !strings.HasSuffix(err.Error(), "\n") {
			fmt.Fprintln(stderr)
		}
		return 1
	}
	if note != "" {
		fmt.Fprintln(stderr, "haven create-user:", note)
	}
	if err := existingDatabase(cfg, *cfgPath, "create-user"); err != nil {
		fmt.Fprintln(stderr, "haven create-user:", err)
		return 1
	}
	localpart := strings.ToLower(*user)
	if strings.HasPrefix(localpart, "@") {
		lp, host, ok := userapi.SplitUserID(localpart)
		if !ok || host != strings.ToLower(cfg.ServerName) {
			fmt.Fprintf(stderr, "haven create-user: %s is not a user ID of this server (%s); give just the name, such as alice\n", *user, cfg.ServerName)
			return 1
		}
		localpart = lp
	}
	pw := *password
	if pw == "" {
		if pw, err = readPassword(stderr); err != nil {
			fmt.Fprintln(stderr, "haven create-user: no password:", err)
			return 1
		}
	}
	policy := server.PasswordPolicy(cfg)
	if err := policy.Check(pw); err != nil {
		if me, ok := merr.As(err); ok {
			fmt.Fprintf(stderr, "haven create-user: %s (%s)\n", me.Msg, me.Code)
		}
		return 1
	}
	if log, err := logging.New(cfg.Logging.Format, cfg.Logging.Level, stderr); err == nil {
		ctx = logging.With(ctx, log.WithField("command", "create-user"))
	}
	db, err := server.OpenDB(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "haven create-user:", err)
		return 1
	}
	defer db.Close()
	users, err := userapi.New(ctx, db, nil, userapi.Options{ServerName: cfg.ServerName, PasswordHashCost: cfg.PasswordHashCost, PasswordPolicy: policy,
		Audit: audit.New(db)})
	if err != nil {
		fmt.Fprintln(stderr, "haven create-user:", err)
		return 1
	}
	userID, err := users.CreateAccount(ctx, localpart, pw, *admin, "cli")
	if err != nil {
		if me, ok := merr.As(err); ok {
			fmt.Fprintf(stderr, "haven create-user: %s (%s)\n", me.Msg, me.Code)
		} else {
			fmt.Fprintln(stderr, "haven create-user:", err)
		}
		return 1
	}
	fmt.Fprintln(stdout, userID)
	return 0
}

var _ = server.OpenDB

// schemaProblem reads, without changing anything, whether the database's
// schema is newer than this binary knows ("" when it is not, or when the
// database does not exist yet).
func schemaProblem(ctx context.Context, t storage.Target) string {
	if t.Dialect == storage.SQLite {
		if _, err := os.Stat(t.Path); err != nil {
			return "" // created at the first start
		}
	}
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 1})
	if err != nil {
		return ""
	}
	defer db.Close()
	if _, _, err := db.Pending(ctx); err != nil {
		var newer *storage.SchemaNewerError
		if errors.As(err, &newer) {
			return "database: " + t.Redacted() + " — " + err.Error()
		}
	}
	return ""
}
