package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "", want: time.Time{}},
		{in: "90m", want: now.Add(-90 * time.Minute)},
		{in: "7d", want: now.AddDate(0, 0, -7)},
		{in: "1d12h", want: now.Add(-36 * time.Hour)},
		{in: "2026-01-31", want: time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)},
		{in: "2026-01-31 08:30", want: time.Date(2026, 1, 31, 8, 30, 0, 0, time.UTC)},
		{in: "2026-01-31T08:30:00+01:00", want: time.Date(2026, 1, 31, 7, 30, 0, 0, time.UTC)},
		{in: "-5h", bad: true},
		{in: "yesterday", bad: true},
		{in: "99999999999d", bad: true},
		{in: "d", bad: true},
	} {
		got, err := parseWhen(tc.in, now)
		if tc.bad {
			if err == nil {
				t.Errorf("parseWhen(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestAdminAudit runs "haven admin audit" against a database holding
// entries, on SQLite and PostgreSQL, in table and JSON form.
func TestAdminAudit(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			target := storagetest.Target(t, d)
			db, err := storage.Open(ctx, target, storage.Options{MaxOpenConns: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			l := audit.New(db)
			// An entry from ten days ago.
			if _, err := db.Exec(ctx, `INSERT INTO audit_log (ts, action, actor, ok) VALUES ($1, 'login', '@carol:hs', TRUE)`,
				time.Now().Add(-240*time.Hour).UnixMilli()); err != nil {
				t.Fatal(err)
			}
			l.Record(ctx, audit.Entry{Action: audit.LoginFailed, Target: "@alice:hs", Addr: "10.0.0.9", Detail: map[string]any{"reason": "bad password"}})
			l.Record(ctx, audit.Entry{Action: audit.Login, Actor: "@alice:hs", Addr: "10.0.0.1", OK: true})
			l.Record(ctx, audit.Entry{Action: "admin.user.deactivate", Actor: "@root:hs", Target: "@bob:hs\x1b[31m", OK: true})

			setting := target.URL
			if d == storage.SQLite {
				setting = "sqlite://" + target.Path
			}
			cfgFile := filepath.Join(t.TempDir(), "haven.yaml")
			if err := os.WriteFile(cfgFile, []byte("server_name: hs\ndatabase: "+setting+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			admin := func(args ...string) (string, string, int) {
				var out, errOut bytes.Buffer
				code := run(ctx, append([]string{"admin", "audit", "--config", cfgFile}, args...), &out, &errOut)
				return out.String(), errOut.String(), code
			}
			actions := func(args ...string) []string {
				t.Helper()
				out, errOut, code := admin(append(args, "--json")...)
				if code != 0 {
					t.Fatalf("admin audit %v: exit %d: %s", args, code, errOut)
				}
				var recs []audit.Record
				if err := json.Unmarshal([]byte(out), &recs); err != nil {
					t.Fatalf("admin audit %v --json: %v\n%s", args, err, out)
				}
				var got []string
				for _, r := range recs {
					got = append(got, r.Action+" "+r.Actor+r.Target)
				}
				return got
			}
			for _, tc := range []struct {
				args []string
				want string
			}{
				{nil, "admin.user.deactivate @root:hs@bob:hs\x1b[31m|login @alice:hs|login.failed @alice:hs|login @carol:hs"},
				{[]string{"--user", "@alice:hs"}, "login @alice:hs|login.failed @alice:hs"},
				{[]string{"--event", "admin."}, "admin.user.deactivate @root:hs@bob:hs\x1b[31m"},
				{[]string{"--event", "login"}, "login @alice:hs|login @carol:hs"},
				{[]string{"--since", "1d"}, "admin.user.deactivate @root:hs@bob:hs\x1b[31m|login @alice:hs|login.failed @alice:hs"},
				{[]string{"--until", "5d"}, "login @carol:hs"},
				{[]string{"--limit", "2"}, "admin.user.deactivate @root:hs@bob:hs\x1b[31m|login @alice:hs"},
				{[]string{"--user", "@nobody:hs"}, ""},
			} {
				if got := strings.Join(actions(tc.args...), "|"); got != tc.want {
					t.Errorf("admin audit %v: %q, want %q", tc.args, got, tc.want)
				}
			}
			// Paging beyond one query's 1000 entries.
			for i := 0; i < 1100; i++ {
				if _, err := db.Exec(ctx, `INSERT INTO audit_log (ts, action, ok) VALUES ($1, 'device.added', TRUE)`, time.Now().UnixMilli()); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(actions("--event", "device.added", "--limit", "1050")); n != 1050 {
				t.Errorf("--limit 1050 gave %d entries", n)
			}
			if n := len(actions("--event", "device.added", "--limit", "5000")); n != 1100 {
				t.Errorf("--limit 5000 gave %d entries, want all 1100", n)
			}

			// The table: a header, one line per entry, control characters
			// from stored values made harmless.
			out, _, code := admin("--user", "@bob:hs\x1b[31m")
			if code != 0 || !strings.HasPrefix(out, "TIME (UTC)") || !strings.Contains(out, "admin.user.deactivate") ||
				!strings.Contains(out, "@root:hs") || strings.Contains(out, "\x1b") {
				t.Errorf("table (exit %d):\n%q", code, out)
			}
			if out, _, _ := admin("--user", "@nobody:hs"); !strings.Contains(out, "no audit entries match") {
				t.Errorf("empty table: %q", out)
			}
			for _, bad := range [][]string{{"--since", "soon"}, {"--limit", "0"}, {"--since", "1h", "--until", "2h"}, {"extra"}} {
				if _, errOut, code := admin(bad...); code != 2 || errOut == "" {
					t.Errorf("admin audit %v: exit %d, stderr %q; want 2 with a message", bad, code, errOut)
				}
			}
		})
	}
}

func TestAdminDispatch(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"admin"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "audit") {
		t.Errorf("haven admin: exit %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"admin", "frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "unknown command") {
		t.Errorf("haven admin frobnicate: exit %d, %q", code, errOut.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"admin", "help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "audit") {
		t.Errorf("haven admin help: exit %d, %q", code, out.String())
	}
}
