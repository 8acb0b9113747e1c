package config

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "haven.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTemplateLoadsAsDefaults(t *testing.T) {
	cfg, probs := Load(writeFile(t, Template), nil)
	if len(probs) != 0 {
		t.Fatalf("template has problems: %v", probs)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("template differs from defaults:\n%s\nvs\n%s", cfg.Marshal(), Default().Marshal())
	}
}

func TestTemplateNamesEveryKey(t *testing.T) {
	for _, name := range envNames() {
		if !strings.Contains(Template, name) {
			t.Errorf("generate-config does not mention %s", name)
		}
	}
}

func envNames() []string {
	var names []string
	for _, k := range Keys() {
		names = append(names, EnvName(k))
	}
	return names
}

func TestEveryProblemAtOnce(t *testing.T) {
	p := writeFile(t, `
server_name: "https://bad name"
listen: 8008
regisration:
  open: yes
rate_limits:
  enabled: maybe
password_hash_cost: twelve
database: mysql://root:hunter2@db/x
logging:
  format: xml
`)
	_, probs := Load(p, []string{"HAVEN_NATS_URL=http://x", "HAVEN_BOGUS=1", "PATH=/bin"})
	text := probs.Error()
	for _, want := range []string{
		"server_name: https://bad name",
		"listen: 8008",
		`regisration — unknown key (line 4)`,
		`did you mean "registration"?`,
		"rate_limits.enabled: maybe",
		"password_hash_cost: twelve",
		"database: mysql://root:xxxxx@db/x",
		"logging.format: xml",
		"nats.url: http://x",
		"HAVEN_BOGUS",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, "hunter2") {
		t.Errorf("password shown:\n%s", text)
	}
	for _, pr := range probs {
		if pr.Fix == "" {
			t.Errorf("problem without a fix: %v", pr)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	cfg, probs := Load("", []string{"HAVEN_REGISTRATION_OPEN=true", "HAVEN_SERVER_NAME=example.org", "HAVEN_PASSWORD_HASH_COST=4", "HAVEN_RATE_LIMITS_ENABLED=false"})
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	if !cfg.Registration.Open || cfg.ServerName != "example.org" || cfg.PasswordHashCost != 4 || cfg.RateLimits.Enabled {
		t.Fatalf("%+v", cfg)
	}
}

func TestServerNames(t *testing.T) {
	for s, ok := range map[string]bool{
		"example.com": true, "localhost": true, "localhost:8448": true, "1.2.3.4": true, "[::1]:8448": true,
		"": false, "https://x": false, "a b": false, "x:": false, "x:99999": false, "[1.2.3.4]": false, "-a.com": false,
	} {
		if ValidServerName(s) != ok {
			t.Errorf("%q: want %v", s, ok)
		}
	}
}

func TestLiveChecks(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o500)
	cfg := Default()
	cfg.Listen = busy.Addr().String()
	cfg.DataDir = filepath.Join(ro, "sub")
	cfg.Database = "postgres://postgres:wrong@127.0.0.1:1/test"
	cfg.NATS.URL = "nats://127.0.0.1:1"
	probs := cfg.CheckLive(context.Background(), true)
	text := probs.Error()
	for _, want := range []string{"listen: " + busy.Addr().String() + " — the port is already in use", "nats.url: nats://127.0.0.1:1 — does not answer: connection refused",
		"database: postgres://postgres:xxxxx@127.0.0.1:1/test — connection refused", "Its default port is 5432"} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if os.Geteuid() != 0 && !strings.Contains(text, "data_dir") {
		t.Errorf("unwritable data_dir not reported:\n%s", text)
	}
	cfg = Default()
	cfg.DataDir = t.TempDir()
	cfg.Database = "postgres://postgres@127.0.0.1:5432/haven_no_such_db?sslmode=disable"
	text = cfg.CheckLive(context.Background(), false).Error()
	if !strings.Contains(text, "does not exist") || !strings.Contains(text, "createdb") {
		t.Errorf("missing database not reported:\n%s", text)
	}
}

func TestSecretsAreMasked(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        []string
		secret     string
		want       string
	}{
		{name: "nats password", file: "nats:\n  url: http://alice:hunter2@nats:4222\n", secret: "hunter2", want: "nats.url: http://alice:xxxxx@nats:4222 — is not a NATS URL"},
		{name: "nats token", file: "nats:\n  url: https://s3cr3ttoken@nats:4222\n", secret: "s3cr3ttoken", want: "nats.url: https://xxxxx@nats:4222"},
		{name: "unparseable database URL", file: "database: postgres://u:hunter2@[::1\n", secret: "hunter2", want: "database: postgres://u:xxxxx@[::1"},
		{name: "unparseable nats URL", file: "nats:\n  url: nats://u:hunter2@[::1\n", secret: "hunter2", want: "nats.url: nats://u:xxxxx@[::1"},
		{name: "nats from the environment", env: []string{"HAVEN_NATS_URL=ftp://tok3n@x"}, secret: "tok3n", want: "nats.url: ftp://xxxxx@x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			cfg, probs := Load(path, tc.env)
			text := probs.Error()
			if !strings.Contains(text, tc.want) {
				t.Errorf("want %q in:\n%s", tc.want, text)
			}
			if strings.Contains(text, tc.secret) || strings.Contains(cfg.Marshal(), tc.secret) {
				t.Errorf("secret shown:\n%s\n%s", text, cfg.Marshal())
			}
		})
	}
}

func TestLiveNATSProblemsMaskCredentials(t *testing.T) {
	cfg := Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.URL = "nats://alice:hunter2@127.0.0.1:1"
	text := cfg.CheckLive(context.Background(), false).Error()
	if !strings.Contains(text, "nats.url: nats://alice:xxxxx@127.0.0.1:1 — does not answer") || strings.Contains(text, "hunter2") {
		t.Fatalf("got:\n%s", text)
	}
}

func TestPostgresThatHangsUpIsReportedReadably(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cfg := Default()
	cfg.DataDir = t.TempDir()
	cfg.Database = "postgres://postgres@" + l.Addr().String() + "/test?sslmode=disable"
	probs := cfg.CheckLive(context.Background(), false)
	if len(probs) != 1 || probs[0].Key != "database" || probs[0].Fix == "" {
		t.Fatalf("got %v", probs)
	}
	// With no password in the URL, nothing may be masked in the message.
	if strings.Contains(probs[0].Why, "xxxxx") {
		t.Fatalf("message garbled: %s", probs[0].Why)
	}
}

// A short registration secret is accepted with a warning (test harnesses
// use short ones); a long one gives no warning.
func TestShortSharedSecretWarns(t *testing.T) {
	for _, tc := range []struct {
		secret string
		warn   bool
	}{{"", false}, {"xyzzy", true}, {"0123456789abcde", true}, {"0123456789abcdef", false}} {
		cfg, probs := Load("", []string{"HAVEN_REGISTRATION_SHARED_SECRET=" + tc.secret})
		if len(probs) != 0 {
			t.Errorf("secret %q: problems %v", tc.secret, probs)
		}
		warned := false
		for _, w := range cfg.Warnings() {
			if strings.Contains(w, "registration.shared_secret") {
				warned = true
				if tc.secret != "" && strings.Contains(w, tc.secret) {
					t.Errorf("the warning shows the secret: %s", w)
				}
			}
		}
		if warned != tc.warn {
			t.Errorf("secret %q: warned %v, want %v", tc.secret, warned, tc.warn)
		}
	}
}

func TestAccessTokenLifetime(t *testing.T) {
	for _, c := range []struct {
		value string
		bad   bool
		warn  bool
	}{{"5m", false, false}, {"2s", false, true}, {"0s", true, false}, {"forever", true, false}, {"200h", true, false}} {
		cfg, probs := Load("", []string{"HAVEN_ACCESS_TOKEN_LIFETIME=" + c.value})
		bad := false
		for _, p := range probs {
			if p.Key == "access_token_lifetime" {
				bad = true
			}
		}
		warned := false
		for _, w := range cfg.Warnings() {
			warned = warned || strings.Contains(w, "access_token_lifetime")
		}
		if bad != c.bad || warned != c.warn {
			t.Errorf("%s: problem %v warning %v, want %v %v", c.value, bad, warned, c.bad, c.warn)
		}
	}
	if d := Default().TokenLifetime(); d.String() != "5m0s" {
		t.Errorf("default lifetime %s", d)
	}
}
