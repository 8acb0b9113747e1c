package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/storage"
)

// adminCommands are the subcommands of "haven admin": work on a server's
// data from its machine, with its configuration (audit, totp-*), and the
// admin API's operations over HTTP (admin_api*.go). Each area keeps its
// commands in its own file (admin_*.go) and adds them here.
func adminCommands() []command {
	out := []command{
		{"audit", "search the audit log: [--user U] [--since D|T] [--until D|T] [--event ACTION] [--limit N] [--json]", runAdminAudit},
	}
	out = append(out, apiCommands()...)
	return append(out, totpCommands()...)
}

// runAdmin dispatches "haven admin SUBCOMMAND ...".
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w := stdout
		if len(args) == 0 {
			w = stderr
		}
		adminUsage(w)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range adminCommands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "haven admin: unknown command %q\n", args[0])
	adminUsage(stderr)
	return 2
}

func adminUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: haven admin COMMAND --config FILE [flags]")
	for _, c := range adminCommands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.usage)
	}
}

// maxAuditLimit bounds --limit: the output is for people and scripts, not
// a dump of the table.
const maxAuditLimit = 100_000

func runAdminAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("admin audit", stderr)
	user := fs.String("user", "", "only entries where this user ID acted or was acted on")
	since := fs.String("since", "", "only entries from then on: a duration back from now (30m, 24h, 7d) or a time (2026-01-31, 2026-01-31T08:00:00Z)")
	until := fs.String("until", "", "only entries before then: a duration back from now or a time")
	event := fs.String("event", "", `only this action (login, login.failed, admin.user.deactivate ...); ending in "." a prefix ("admin.")`)
	limit := fs.Int("limit", 100, "at most this many entries, newest first")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	now := time.Now()
	f := audit.Filter{User: *user, Action: *event}
	var err error
	if f.Since, err = parseWhen(*since, now); err != nil {
		fmt.Fprintln(stderr, "haven admin audit: --since:", err)
		return 2
	}
	if f.Until, err = parseWhen(*until, now); err != nil {
		fmt.Fprintln(stderr, "haven admin audit: --until:", err)
		return 2
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		fmt.Fprintln(stderr, "haven admin audit: --since must be before --until")
		return 2
	}
	if *limit < 1 || *limit > maxAuditLimit {
		fmt.Fprintf(stderr, "haven admin audit: --limit must be between 1 and %d\n", maxAuditLimit)
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, "haven admin audit:", err)
		return 1
	}
	if t.Dialect == storage.SQLite {
		if _, err := os.Stat(t.Path); err != nil {
			fmt.Fprintf(stderr, "haven admin audit: database %s does not exist (is --config the server's?)\n", t.Redacted())
			return 1
		}
	}
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 2})
	if err != nil {
		fmt.Fprintln(stderr, "haven admin audit:", err)
		return 1
	}
	defer db.Close()
	if v, _, err := db.Pending(ctx); err == nil && v < auditSchema {
		fmt.Fprintf(stderr, "haven admin audit: the database is at schema version %d, before the audit log (%d): run haven migrate, or start the server once\n", v, auditSchema)
		return 1
	}
	recs, err := queryAudit(ctx, audit.New(db), f, *limit)
	if err != nil {
		fmt.Fprintln(stderr, "haven admin audit:", err)
		return 1
	}
	if *asJSON {
		if recs == nil {
			recs = []audit.Record{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(recs); err != nil {
			return 1
		}
		return 0
	}
	printAudit(stdout, recs)
	return 0
}

// auditSchema is the migration that made the audit_log table.
const auditSchema = 24

// queryAudit reads up to limit entries, newest first, a page at a time.
func queryAudit(ctx context.Context, l *audit.Log, f audit.Filter, limit int) ([]audit.Record, error) {
	var out []audit.Record
	for len(out) < limit {
		f.Limit = min(limit-len(out), 1000)
		page, err := l.Query(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < f.Limit {
			break
		}
		f.Before = page[len(page)-1].ID
	}
	return out, nil
}

// printAudit prints entries as an aligned table.
func printAudit(w io.Writer, recs []audit.Record) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no audit entries match")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (UTC)\tACTION\tRESULT\tACTOR\tTARGET\tADDRESS\tDETAIL")
	for _, r := range recs {
		result := "ok"
		if !r.OK {
			result = "refused"
		}
		detail := ""
		if len(r.Detail) > 0 {
			b, _ := json.Marshal(r.Detail)
			detail = string(b)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", time.UnixMilli(r.TS).UTC().Format("2006-01-02 15:04:05"),
			clean(r.Action), result, orDash(clean(r.Actor)), orDash(clean(r.Target)), orDash(clean(r.Addr)), clean(detail))
	}
	tw.Flush()
}

// clean keeps a stored value from breaking the table or the terminal: a
// recorded user ID or detail came from a client.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseWhen reads a point in time: "" (none), a duration back from now
// (Go syntax, plus d for days: 90m, 36h, 7d, 1d12h), or a date or time
// (2026-01-31, 2026-01-31 08:00, RFC 3339), UTC unless a zone is given.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, ok := parseDays(s); ok {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration back from now must not be negative", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor a time (2026-01-31, 2026-01-31T08:00:00Z)", s)
}

// parseDays parses a Go duration that may start with a number of days.
func parseDays(s string) (time.Duration, bool) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n > 100_000 {
			return 0, false
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false
	}
	return days + d, true
}
