package config

import (
	"strings"
	"testing"
	"time"
)

func TestTURNSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		uris []string
		life time.Duration
		bad  string // a key that must be reported, "" when valid
	}{
		{name: "defaults", life: time.Hour},
		{name: "file list", file: "turn:\n  uris: [\"turn:t.example:3478?transport=udp\", \"turns:t.example:5349\"]\n  shared_secret: 0123456789abcdef\n  user_lifetime: 30m\n",
			uris: []string{"turn:t.example:3478?transport=udp", "turns:t.example:5349"}, life: 30 * time.Minute},
		{name: "block list", file: "turn:\n  uris:\n    - turn:a.example\n    - stun:b.example\n", uris: []string{"turn:a.example", "stun:b.example"}, life: time.Hour},
		{name: "environment", env: []string{"HAVEN_TURN_URIS=turn:a.example, turns:b.example", "HAVEN_TURN_SHARED_SECRET=0123456789abcdef", "HAVEN_TURN_USER_LIFETIME=2h"},
			uris: []string{"turn:a.example", "turns:b.example"}, life: 2 * time.Hour},
		{name: "not a TURN URI", file: "turn:\n  uris: [\"http://t.example\"]\n", bad: "turn.uris"},
		{name: "list item that is a mapping", file: "turn:\n  uris:\n    - {a: b}\n", bad: "turn.uris"},
		{name: "item with a comma", file: "turn:\n  uris: [\"turn:a,turn:b\"]\n", bad: "turn.uris"},
		{name: "short secret", file: "turn:\n  uris: [turn:a]\n  shared_secret: short\n", bad: "turn.shared_secret"},
		{name: "secret without URIs", env: []string{"HAVEN_TURN_SHARED_SECRET=0123456789abcdef"}, bad: "turn.shared_secret"},
		{name: "bad lifetime", env: []string{"HAVEN_TURN_USER_LIFETIME=soon"}, bad: "turn.user_lifetime"},
		{name: "lifetime too long", env: []string{"HAVEN_TURN_USER_LIFETIME=1000h"}, bad: "turn.user_lifetime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			cfg, probs := Load(path, tc.env)
			if tc.bad != "" {
				if !strings.Contains(probs.Error(), tc.bad) {
					t.Fatalf("want a problem with %s, got %v", tc.bad, probs)
				}
				for _, p := range probs {
					if p.Fix == "" {
						t.Errorf("problem without a fix: %v", p)
					}
					if strings.Contains(p.String(), "0123456789abcdef") {
						t.Errorf("secret shown: %v", p)
					}
				}
				return
			}
			if len(probs) != 0 {
				t.Fatal(probs)
			}
			if got := cfg.TURN.URIs.Items(); strings.Join(got, " ") != strings.Join(tc.uris, " ") {
				t.Fatalf("uris %q, want %q", got, tc.uris)
			}
			if cfg.TURN.Lifetime() != tc.life {
				t.Fatalf("lifetime %v", cfg.TURN.Lifetime())
			}
			if cfg.TURN.SharedSecret != "" && strings.Contains(cfg.Marshal(), cfg.TURN.SharedSecret) {
				t.Fatal("secret in Marshal")
			}
		})
	}
}
