package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDatabasePasswordUnencoded(t *testing.T) {
	for _, tc := range []struct {
		url, secret string
		bad         bool
	}{
		{"postgres://haven:p@ssword@db.internal:5432/haven", "p@ssword", true},
		{"postgres://haven:pa/ss@db.internal:5432/haven", "pa/ss", true},
		{"postgres://haven:12/34@db.internal/haven", "12/34", true},
		{"postgres://haven:se#cret@db.internal/haven", "se#cret", true},
		{"postgres://haven:wh?at@db.internal/haven", "wh?at", true},
		{"postgres://haven:p%40ss%2Fword@db.internal:5432/haven", "p%40ss%2Fword", false},
		{"postgres://haven@db.internal:5432/haven?sslmode=require", "", false},
		{"postgres://db.internal:5432/haven?options=-c%20x&user=a@b", "", false},
	} {
		probs := (func() Problems { c := Default(); c.Database = tc.url; return c.Check() })()
		var db []Problem
		for _, p := range probs {
			if p.Key == "database" {
				db = append(db, p)
			}
		}
		if tc.bad != (len(db) == 1 && strings.Contains(db[0].Fix, "%40")) {
			t.Errorf("%s: problems %v", tc.url, db)
		}
		if tc.secret != "" {
			for _, p := range probs {
				if strings.Contains(p.String(), tc.secret) {
					t.Errorf("%s: the password shows in %q", tc.url, p)
				}
				// No part of the password either.
				for _, part := range strings.FieldsFunc(tc.secret, func(r rune) bool { return strings.ContainsRune("@/#?%", r) }) {
					if len(part) > 1 && strings.Contains(p.Value, ":"+part) {
						t.Errorf("%s: part %q of the password shows in %q", tc.url, part, p.Value)
					}
				}
			}
		}
	}
}

func TestTrustedProxiesCheck(t *testing.T) {
	c := Default()
	c.TrustedProxies = "127.0.0.1,10.0.0.0/8,::1,nginx.local,10.0.0.0/40"
	var bad []string
	for _, p := range c.Check() {
		if p.Key == "trusted_proxies" {
			bad = append(bad, p.Value)
			if !strings.Contains(p.Fix, "127.0.0.1") {
				t.Errorf("no example in the fix: %s", p)
			}
		}
	}
	if strings.Join(bad, " ") != "nginx.local 10.0.0.0/40" {
		t.Errorf("trusted_proxies problems for %v", bad)
	}
	c.PasswordPolicy.MinLength = 0
	found := false
	for _, p := range c.Check() {
		found = found || p.Key == "password_policy.min_length"
	}
	if !found {
		t.Error("password_policy.min_length 0 accepted")
	}
}

func TestCheckLiveUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes everything")
	}
	dir := t.TempDir()
	c := Default()
	c.DataDir = dir
	db := filepath.Join(dir, "haven.db")
	if err := os.WriteFile(db, []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	media := filepath.Join(dir, "media", "ab")
	if err := os.MkdirAll(media, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(media, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(media, 0o700) })
	var got []string
	for _, p := range c.checkWritable() {
		got = append(got, p.Key+" "+p.Value)
		if !strings.Contains(p.Fix, "chown") {
			t.Errorf("no fix: %s", p)
		}
	}
	if strings.Join(got, "|") != "database "+db+"|data_dir "+media {
		t.Errorf("problems %q", got)
	}
	os.Chmod(db, 0o600)
	os.Chmod(media, 0o700)
	if ps := c.checkWritable(); len(ps) != 0 {
		t.Errorf("writable again, yet %v", ps)
	}
}

func TestDatabasePasswordBothDelimiters(t *testing.T) {
	c := Default()
	c.Database = "postgres://haven:Se@cr/et99@127.0.0.1:5432/test"
	ps := c.Check()
	if len(ps) != 1 || ps[0].Value != "postgres://haven:xxxxx@127.0.0.1:5432/test" {
		t.Fatalf("problems %v", ps)
	}
}
