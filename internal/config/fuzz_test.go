package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary files to the YAML decoder and to Load. Neither may
// panic, and every problem must say which key, why, and how to fix it.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		Template,
		"",
		"# only a comment\n",
		"---\n",
		"server_name: example.com\nlisten: 0.0.0.0:8008\n",
		"server_name: \"https://bad name\"\nlisten: 8008\nregisration:\n  open: yes\n",
		"rate_limits:\n  enabled: maybe\n  messages_per_second: fast\n",
		"database: postgres://u:hunter2@db:5433/x\n",
		"database: postgres://u:hunter2@[::1\n",
		"database: mysql://root:pw@db/x\n",
		"registration:\n  shared_secret: short\n",
		"metrics:\n",
		"metrics: ~\nlogging: null\n",
		"logging: json\n",
		"logging:\n  - json\n",
		"listen: [1, 2]\n",
		"listen: {a: b}\n",
		"base: &addr 127.0.0.1:9000\nlisten: *addr\n",
		"nats: &n\n  url: nats://x:4222\nmetrics: *n\n",
		"defaults: &d\n  enabled: false\nrate_limits:\n  <<: *d\n",
		"? [a, b]\n: 1\n",
		"? {a: 1}\n: 1\n",
		"\"\": 1\n",
		"nats:\n  \"\": 1\n",
		"~: 1\n",
		"*x: 1\n",
		"&k server_name: example.com\n*k : other\n",
		"- a\n- b\n",
		"just a string\n",
		"42\n",
		"server_name: a\n---\nserver_name: b\n",
		"max_request_bytes: 0x100000\npassword_hash_cost: 1e1\n",
		"max_request_bytes: 99999999999999999999999\n",
		"database_pool: !!str 5\nsqlite_synchronous: !!binary aGVsbG8=\n",
		"server_name: !custom tag\n",
		"server_name: |\n  multi\n  line\n",
		"default_room_version: 11\ndefault_room_version: 99\n",
		"\tserver_name: tab\n",
		"server_name: \"\\xff\\u0000\"\n",
		"a: &a [*a]\n",
		"presence:\n  enabled: on\n  enabld: off\n",
		"federation:\n  servers:\n    a.example: 10.0.0.5:8448\n    b: \"[::1]:1\"\n",
		"federation:\n  servers: [a]\n  allowed_servers: {a: b}\n",
		"federation:\n  servers:\n    ? [a]\n    : x\n    c: ~\n",
		"federation:\n  servers: \"a=b=c,,=x, \"\n  enabled: true\n",
	} {
		f.Add([]byte(seed))
	}
	// One file, rewritten for each input: each fuzz worker is its own process
	// with its own temporary folder, and runs one input at a time.
	path := filepath.Join(f.TempDir(), "haven.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		checkProblems(t, "decodeYAML", data, decodeYAML(data, &cfg))
		_ = cfg.Marshal()

		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, probs := Load(path, []string{"HAVEN_TEST_IGNORED=1"})
		checkProblems(t, "Load", data, probs)
		_ = probs.Error()
		_ = cfg.Marshal()
		_ = cfg.Warnings()
	})
}

func checkProblems(t *testing.T, what string, data []byte, probs Problems) {
	t.Helper()
	for _, p := range probs {
		if strings.TrimSpace(p.Key) == "" || strings.TrimSpace(p.Why) == "" || strings.TrimSpace(p.Fix) == "" {
			t.Fatalf("%s(%q): problem without key, why or fix: %#v", what, data, p)
		}
	}
}

// The fuzz seeds that once failed, kept as plain tests.
func TestDecodeYAMLEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want func(Config) bool
		// problem is a fragment of the expected problems; "" means none.
		problem string
	}{
		{name: "empty section", yaml: "metrics:\nlogging:\n  format: json\n", want: func(c Config) bool { return c.Logging.Format == "json" && c.Metrics.Listen == "" }},
		{name: "null section", yaml: "metrics: ~\n", want: func(c Config) bool { return c.Metrics == Default().Metrics }},
		{name: "alias to a scalar", yaml: "listen: &a 127.0.0.1:9000\nmetrics:\n  listen: *a\n", want: func(c Config) bool { return c.Metrics.Listen == "127.0.0.1:9000" && c.Listen == "127.0.0.1:9000" }},
		{name: "alias to a section", yaml: "x-limits: &l\n  enabled: false\n", problem: "x-limits — unknown key (line 1)"},
		{name: "section alias", yaml: "registration: &r\n  open: true\npresence: *r\n", problem: "presence.open — unknown key"},
		{name: "empty key", yaml: "\"\": 1\n", problem: "(empty key) — unknown key (line 1)"},
		{name: "empty nested key", yaml: "nats:\n  \"\": 1\n", problem: "nats.(empty key) — unknown key (line 2)"},
		{name: "blank key", yaml: "\" \": 1\n", problem: "\" \" — unknown key (line 1)"},
		{name: "key with a tab", yaml: "\"a\\tb\": 1\n", problem: "\"a\\tb\" — unknown key (line 1)"},
		{name: "sequence as key", yaml: "? [a, b]\n: 1\n", problem: "(line 1) — a key must be a plain name"},
		{name: "merge key", yaml: "rate_limits:\n  <<: {enabled: false}\n", problem: "rate_limits.<< — unknown key"},
		{name: "scalar for a section", yaml: "logging: json\n", problem: "logging: json — must be a mapping (line 1)"},
		{name: "hex number", yaml: "max_request_bytes: 0x100000\n", problem: "max_request_bytes: 0x100000 — must be a whole number"},
		{name: "top-level list", yaml: "- a\n", problem: "(file) — the top level must be a mapping"},
		{name: "broken YAML", yaml: "a: [\n", problem: "(file) — is not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			probs := decodeYAML([]byte(tc.yaml), &cfg)
			checkProblems(t, "decodeYAML", []byte(tc.yaml), probs)
			if tc.problem == "" {
				if len(probs) != 0 {
					t.Fatalf("unexpected problems: %v", probs)
				}
			} else if !strings.Contains(probs.Error(), tc.problem) {
				t.Fatalf("want %q in:\n%s", tc.problem, probs.Error())
			}
			if strings.Contains(probs.Error(), "hunter2") {
				t.Fatalf("secret shown:\n%s", probs.Error())
			}
			if tc.want != nil && !tc.want(cfg) {
				t.Fatalf("decoded:\n%s", cfg.Marshal())
			}
		})
	}
}

func TestLoadMissingAndUnreadableFile(t *testing.T) {
	_, probs := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if len(probs) != 1 || probs[0].Key != "--config" || !strings.Contains(probs[0].Why, "no such file") || !strings.Contains(probs[0].Fix, "generate-config") {
		t.Fatalf("got %v", probs)
	}
	_, probs = Load(t.TempDir(), nil)
	if len(probs) != 1 || probs[0].Key != "--config" {
		t.Fatalf("a folder as --config: %v", probs)
	}
}
