package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/testca"
)

func TestFederationServersDecoding(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		env     []string
		want    Map
		problem string
	}{
		{name: "mapping", file: "federation:\n  servers:\n    b.example: 10.0.0.6:8448\n    a.example: \"[fd00::5]:8448\"\n",
			want: "b.example=10.0.0.6:8448,a.example=[fd00::5]:8448"},
		{name: "empty mapping", file: "federation:\n  servers: {}\n", want: ""},
		{name: "null", file: "federation:\n  servers:\n", want: ""},
		{name: "string form", file: "federation:\n  servers: \" a.example = 10.0.0.5:8448 , b.example=10.0.0.6:8448\"\n",
			want: "a.example=10.0.0.5:8448,b.example=10.0.0.6:8448"},
		{name: "environment", env: []string{"HAVEN_FEDERATION_SERVERS=a.example=10.0.0.5:8448,b.example=10.0.0.6:8448"},
			want: "a.example=10.0.0.5:8448,b.example=10.0.0.6:8448"},
		{name: "environment wins", file: "federation:\n  servers:\n    b.example: 10.0.0.6:8448\n", env: []string{"HAVEN_FEDERATION_SERVERS=c.example:8448=10.0.0.7:443"},
			want: "c.example:8448=10.0.0.7:443"},
		{name: "list instead of mapping", file: "federation:\n  servers: [a, b]\n", problem: "federation.servers — must be a mapping of names to values (line 2)"},
		{name: "nested value", file: "federation:\n  servers:\n    a.example: [x]\n", problem: "federation.servers: a.example — each entry must map a plain name to a plain value"},
		{name: "comma in a value", file: "federation:\n  servers:\n    a.example: \"1.2.3.4:1,x\"\n", problem: "without commas or '=' (line 3)"},
		{name: "bad address", env: []string{"HAVEN_FEDERATION_SERVERS=a.example=10.0.0.5"}, want: "a.example=10.0.0.5", problem: "federation.servers: a.example: 10.0.0.5 — the address is not host:port"},
		{name: "bad name", env: []string{"HAVEN_FEDERATION_SERVERS=https://a=10.0.0.5:1"}, problem: "federation.servers: https://a — is not a server name"},
		{name: "not an entry", env: []string{"HAVEN_FEDERATION_SERVERS=a.example"}, want: "a.example", problem: "federation.servers: a.example — is not an entry"},
		{name: "twice", env: []string{"HAVEN_FEDERATION_SERVERS=a.example=10.0.0.5:1,A.example=10.0.0.6:1"}, problem: "federation.servers: A.example — is given more than once"},
		{name: "port zero", env: []string{"HAVEN_FEDERATION_SERVERS=a.example=10.0.0.5:0"}, problem: "the address is not host:port"},
		{name: "allowlist", env: []string{"HAVEN_FEDERATION_ALLOWED_SERVERS=b.example, localhost:8541 ,bad name"}, problem: "federation.allowed_servers: bad name — is not a server name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			cfg, probs := Load(path, tc.env)
			checkProblems(t, "Load", []byte(tc.file), probs)
			if tc.problem == "" && len(probs) != 0 {
				t.Fatalf("unexpected problems: %v", probs)
			}
			if tc.problem != "" && !strings.Contains(probs.Error(), tc.problem) {
				t.Fatalf("want %q in:\n%s", tc.problem, probs.Error())
			}
			if tc.want != "" && cfg.Federation.Servers != tc.want {
				t.Fatalf("servers = %q, want %q", cfg.Federation.Servers, tc.want)
			}
			if tc.problem != "" {
				return
			}
			// What Marshal prints loads back to the same configuration.
			again, probs := Load(writeFile(t, cfg.Marshal()), nil)
			if len(probs) != 0 || !reflect.DeepEqual(again, cfg) {
				t.Fatalf("round trip: %v\n%s\nloaded back as\n%s", probs, cfg.Marshal(), again.Marshal())
			}
		})
	}
}

func TestFederationMarshalsServersAsMapping(t *testing.T) {
	cfg := Default()
	cfg.Federation.Servers = "b.example=10.0.0.6:8448,a.example=[::1]:8448"
	out := cfg.Marshal()
	if !strings.Contains(out, "  servers:\n    b.example: 10.0.0.6:8448\n    a.example: '[::1]:8448'\n") {
		t.Fatalf("servers not written as a mapping in order:\n%s", out)
	}
	if !strings.Contains(Default().Marshal(), "servers: {}") {
		t.Fatalf("empty servers:\n%s", Default().Marshal())
	}
	if e := cfg.Federation.Servers.Entries(); e["a.example"] != "[::1]:8448" || e["b.example"] != "10.0.0.6:8448" || len(e) != 2 {
		t.Fatalf("entries %v", e)
	}
}

func TestFederationCheck(t *testing.T) {
	ca := testca.New(t)
	other := testca.New(t)
	cert, key := ca.Issue(t, "localhost")
	otherCert, otherKey := other.Issue(t, "localhost")
	wrongHost, wrongHostKey := ca.Issue(t, "b.example", "10.0.0.6")
	now := time.Now()
	expired, expiredKey := ca.IssueValid(t, now.Add(-48*time.Hour), now.Add(-time.Hour), "localhost")
	future, futureKey := ca.IssueValid(t, now.Add(time.Hour), now.Add(30*24*time.Hour), "localhost")
	soon, soonKey := ca.IssueValid(t, now.Add(-time.Hour), now.Add(5*24*time.Hour), "localhost")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	base := func() Config {
		c := Default()
		c.ServerName = "localhost:8541"
		c.Federation = Federation{Enabled: true, Listen: "127.0.0.1:8448", TLSCert: cert, TLSKey: key, CAFile: ca.File()}
		return c
	}
	for _, tc := range []struct {
		name     string
		change   func(*Config)
		problems []string // fragments, each of a different problem
		warning  string
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "valid with mutual TLS and no CA file", change: func(c *Config) { c.Federation.MutualTLS = true; c.Federation.CAFile = "" }},
		{name: "disabled reads nothing", change: func(c *Config) {
			c.Federation = Federation{TLSCert: missing, TLSKey: missing, CAFile: missing, Listen: "nonsense"}
		}},
		{name: "IP server name", change: func(c *Config) {
			c.ServerName = "10.0.0.6:8448"
			c.Federation.TLSCert, c.Federation.TLSKey = wrongHost, wrongHostKey
		}},
		{name: "nothing set", change: func(c *Config) { c.Federation = Federation{Enabled: true, MutualTLS: true} }, problems: []string{
			"federation.listen — is empty",
			"federation.tls_cert — is empty, but federation is enabled and mutual_tls presents",
			"federation.tls_key — is empty",
		}},
		{name: "bad listen", change: func(c *Config) { c.Federation.Listen = "8448" }, problems: []string{"federation.listen: 8448 — is not host:port"}},
		{name: "listen of the client API", change: func(c *Config) { c.Federation.Listen = c.Listen }, problems: []string{"is the same address as listen"}},
		{name: "missing files", change: func(c *Config) {
			c.Federation.TLSCert, c.Federation.TLSKey, c.Federation.CAFile = missing, missing, missing
		}, problems: []string{
			"federation.tls_cert: " + missing + " — cannot be read: no such file",
			"federation.tls_key: " + missing + " — cannot be read: no such file",
			"federation.ca_file: " + missing + " — cannot be read: no such file",
		}},
		{name: "not PEM", change: func(c *Config) {
			c.Federation.TLSCert, c.Federation.TLSKey, c.Federation.CAFile = garbage, garbage, garbage
		}, problems: []string{
			"federation.tls_cert: " + garbage + " — holds no PEM certificate",
			"federation.tls_key: " + garbage + " — holds no PEM private key",
			"federation.ca_file: " + garbage + " — holds no PEM certificate",
		}},
		{name: "key and certificate swapped", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = key, cert },
			problems: []string{"federation.tls_cert: " + key + " — holds no PEM certificate", "federation.tls_key: " + cert + " — holds no PEM private key"}},
		{name: "key of another certificate", change: func(c *Config) { c.Federation.TLSKey = otherKey },
			problems: []string{"federation.tls_key: " + otherKey + " — does not go with federation.tls_cert"}},
		{name: "another CA's pair is fine", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = otherCert, otherKey }},
		{name: "wrong host, server name with a port", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = wrongHost, wrongHostKey },
			problems: []string{"federation.tls_cert: " + wrongHost + " — does not cover localhost, the host of server_name (it covers: b.example, 10.0.0.6); a server name that is an IP address or has a port cannot be delegated"}},
		{name: "wrong host, IP server name", change: func(c *Config) { c.ServerName = "10.0.0.7" },
			problems: []string{"federation.tls_cert: " + cert + " — does not cover 10.0.0.7, the host of server_name (it covers: localhost, 127.0.0.1); a server name that is an IP address or has a port cannot be delegated, so every peer checks the certificate against 10.0.0.7\n  Fix: issue a certificate whose subjectAltName includes IP:10.0.0.7"}},
		{name: "server name without a port, covered", change: func(c *Config) { c.ServerName = "localhost" }},
		{name: "wrong host, server name that may be delegated", change: func(c *Config) {
			c.ServerName = "localhost"
			c.Federation.TLSCert, c.Federation.TLSKey = wrongHost, wrongHostKey
		}, warning: "federation.tls_cert " + wrongHost + " does not cover localhost, the host of server_name (it covers: b.example, 10.0.0.6). That is fine only when https://localhost/.well-known/matrix/server delegates"},
		{name: "expired", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = expired, expiredKey },
			problems: []string{"federation.tls_cert: " + expired + " — expired on"}},
		{name: "not yet valid", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = future, futureKey },
			problems: []string{"is not valid before"}},
		{name: "expires soon", change: func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = soon, soonKey },
			warning: "federation.tls_cert " + soon + " expires on"},
		{name: "insecure", change: func(c *Config) { c.Federation.InsecureSkipTLSVerify = true },
			warning: "federation.insecure_skip_tls_verify is true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			var probs Problems
			for _, p := range c.Check() {
				if strings.HasPrefix(p.Key, "federation.") {
					probs = append(probs, p)
				}
			}
			checkProblems(t, "Check", nil, probs)
			if len(probs) != len(tc.problems) {
				t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(tc.problems), probs)
			}
			for i, want := range tc.problems {
				if !strings.Contains(probs[i].String(), want) {
					t.Errorf("problem %d: want %q in %q", i, want, probs[i].String())
				}
			}
			var warned []string
			for _, w := range c.Warnings() {
				if strings.HasPrefix(w, "federation.") {
					warned = append(warned, w)
				}
			}
			switch {
			case tc.warning == "" && len(warned) != 0:
				t.Errorf("unexpected warnings %v", warned)
			case tc.warning != "" && (len(warned) != 1 || !strings.Contains(warned[0], tc.warning)):
				t.Errorf("warnings %v, want %q", warned, tc.warning)
			}
		})
	}
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{"localhost:8541": "localhost", "example.com": "example.com", "[::1]:8448": "::1", "[fd00::1]": "fd00::1", "1.2.3.4:5": "1.2.3.4"} {
		if got := HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q, want %q", in, got, want)
		}
	}
}
