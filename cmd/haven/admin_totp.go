package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/server"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/totp"
)

func totpCommands() []command {
	return []command{
		{"totp-enroll", "set up two-factor sign-in for a user: --user NAME; prints the otpauth:// URI for the user's authenticator app (replaces any earlier secret)", runTOTPEnroll},
		{"totp-reset", "remove a user's two-factor sign-in and recovery codes: --user NAME", runTOTPReset},
	}
}

// totpTarget opens what the TOTP commands need: the database, the TOTP
// service and the user ID of --user (which must exist).
func totpTarget(ctx context.Context, name string, args []string, stderr io.Writer) (db *storage.DB, svc *totp.Service, userID string, code int) {
	fs, cfgPath := flagSet("admin "+name, stderr)
	user := fs.String("user", "", "the user's name (localpart, such as alice) or full user ID")
	if code := parse(fs, args); code >= 0 {
		return nil, nil, "", code
	}
	if *user == "" {
		fmt.Fprintf(stderr, "haven admin %s: --user is required, for example: haven admin %s --config /etc/haven/haven.yaml --user alice\n", name, name)
		return nil, nil, "", 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return nil, nil, "", 1
	}
	if log, err := logging.New(cfg.Logging.Format, cfg.Logging.Level, stderr); err == nil {
		ctx = logging.With(ctx, log.WithField("command", "admin "+name))
	}
	db, err := server.OpenDB(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "haven admin %s: %v\n", name, err)
		return nil, nil, "", 1
	}
	users, err := userapi.New(ctx, db, nil, userapi.Options{ServerName: cfg.ServerName, PasswordHashCost: cfg.PasswordHashCost})
	if err != nil {
		db.Close()
		fmt.Fprintf(stderr, "haven admin %s: %v\n", name, err)
		return nil, nil, "", 1
	}
	userID = *user
	if !strings.HasPrefix(userID, "@") {
		userID = users.UserID(strings.ToLower(userID))
	}
	if !users.IsLocal(userID) {
		db.Close()
		fmt.Fprintf(stderr, "haven admin %s: %s is not a user of this server (%s)\n", name, *user, cfg.ServerName)
		return nil, nil, "", 1
	}
	if _, err := users.User(ctx, userID); err != nil {
		db.Close()
		if me, ok := merr.As(err); ok {
			fmt.Fprintf(stderr, "haven admin %s: %s\n", name, me.Msg)
		} else {
			fmt.Fprintf(stderr, "haven admin %s: %v\n", name, err)
		}
		return nil, nil, "", 1
	}
	if !cfg.Auth.TOTPEnabled() {
		fmt.Fprintf(stderr, "haven admin %s: note: auth.totp is off, so the second factor is not asked for until it is set to optional or required\n", name)
	}
	return db, totp.New(db, totp.Options{Issuer: cfg.ServerName, EncryptionKey: cfg.Auth.TOTPEncryptionKey}), userID, -1
}

// runTOTPEnroll prints exactly one line on standard output: the otpauth://
// URI (outside tools read it).
func runTOTPEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	db, svc, userID, code := totpTarget(ctx, "totp-enroll", args, stderr)
	if code >= 0 {
		return code
	}
	defer db.Close()
	en, err := svc.Enroll(ctx, userID)
	if err != nil {
		fmt.Fprintln(stderr, "haven admin totp-enroll:", err)
		return 1
	}
	audit.New(db).Record(ctx, audit.Entry{Action: audit.TOTPChange, Actor: "cli", Target: userID, OK: true, Detail: map[string]any{"change": "enrol", "by": "admin"}})
	fmt.Fprintln(stdout, en.URI)
	return 0
}

func runTOTPReset(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	db, svc, userID, code := totpTarget(ctx, "totp-reset", args, stderr)
	if code >= 0 {
		return code
	}
	defer db.Close()
	had, err := svc.Reset(ctx, userID)
	if err != nil {
		fmt.Fprintln(stderr, "haven admin totp-reset:", err)
		return 1
	}
	audit.New(db).Record(ctx, audit.Entry{Action: audit.TOTPChange, Actor: "cli", Target: userID, OK: true, Detail: map[string]any{"change": "reset", "by": "admin", "had_totp": had}})
	if !had {
		fmt.Fprintf(stdout, "%s had no two-factor sign-in set up\n", userID)
		return 0
	}
	fmt.Fprintf(stdout, "two-factor sign-in of %s removed\n", userID)
	return 0
}
