package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/ids"
)

const goodReg = `id: irc
url: http://127.0.0.1:9999
as_token: as-irc-token
hs_token: hs-irc-token
sender_localpart: _irc_bot
receive_ephemeral: true
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_.*:example\\.org"
  aliases:
    - exclusive: true
      regex: "#_irc_.*"
  rooms:
    - exclusive: false
      regex: "!irc.*"
`

func writeReg(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadGood(t *testing.T) {
	dir := t.TempDir()
	regs, probs := Load([]string{writeReg(t, dir, "irc.yaml", goodReg)}, "example.org")
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	r := regs[0]
	if r.ID != "irc" || r.Sender != "@_irc_bot:example.org" || r.URL != "http://127.0.0.1:9999" || !r.Ephemeral || !r.RateLimited {
		t.Fatalf("parsed %+v", r)
	}
	g := NewRegistry(regs)
	for _, c := range []struct {
		user  string
		owner string
	}{{"@_irc_alice:example.org", "irc"}, {"@_irc_bot:example.org", "irc"}, {"@alice:example.org", ""}, {"@x_irc_alice:example.org", ""}} {
		if got := g.ExclusiveUserOwner(c.user); got != c.owner {
			t.Errorf("ExclusiveUserOwner(%s) = %q, want %q", c.user, got, c.owner)
		}
	}
	if g.ByToken("as-irc-token") != r || g.ByToken("hs-irc-token") != nil || g.ByToken("") != nil {
		t.Error("ByToken")
	}
	if !r.InAliasNamespace("#_irc_chan:example.org") || r.InAliasNamespace("#chan:example.org") || !r.InRoomNamespace("!ircabc:example.org") {
		t.Error("alias or room namespace")
	}
	if g.exclusiveAliasOwner("#_irc_x:example.org") != r {
		t.Error("exclusive alias owner")
	}
}

func TestLoadProblems(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body string
		want       []string
	}{
		{"missing", "id: x\n", []string{"no as_token", "no hs_token", "no sender_localpart", "no url"}},
		{"badyaml", "id: [x\n", []string{"not valid YAML"}},
		{"badregex", strings.Replace(goodReg, `"@_irc_.*:example\\.org"`, `"@(?=x)"`, 1), []string{"not a valid regular expression"}},
		{"badurl", strings.Replace(goodReg, "http://127.0.0.1:9999", "ftp://x", 1), []string{"not an http(s) URL"}},
		{"sametokens", strings.Replace(goodReg, "hs-irc-token", "as-irc-token", 1), []string{"as_token and hs_token are the same"}},
		{"badsender", strings.Replace(goodReg, "_irc_bot", "Bad Bot", 1), []string{"not a valid user name"}},
		{"noregex", strings.Replace(goodReg, `regex: "!irc.*"`, `regex: ""`, 1), []string{"has no regex"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, probs := Load([]string{writeReg(t, dir, c.name+".yaml", c.body)}, "example.org")
			all := ""
			for _, p := range probs {
				if p.Key != "app_services" || p.Fix == "" {
					t.Errorf("problem without key or fix: %+v", p)
				}
				all += p.String() + "\n"
			}
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems do not say %q:\n%s", w, all)
				}
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		_, probs := Load([]string{filepath.Join(dir, "nope.yaml")}, "example.org")
		if len(probs) != 1 || !strings.Contains(probs[0].Why, "cannot be read") {
			t.Fatalf("got %v", probs)
		}
	})
	t.Run("nullurl", func(t *testing.T) {
		regs, probs := Load([]string{writeReg(t, dir, "null.yaml", strings.Replace(goodReg, "url: http://127.0.0.1:9999", "url: null", 1))}, "example.org")
		if len(probs) != 0 || regs[0].URL != "" {
			t.Fatalf("url: null is allowed: %v", probs)
		}
	})
}

func TestCrossProblems(t *testing.T) {
	dir := t.TempDir()
	a := writeReg(t, dir, "a.yaml", goodReg)
	other := func(name string, repl ...string) string {
		body := strings.NewReplacer("id: irc", "id: "+name, "as-irc-token", "as-"+name, "hs-irc-token", "hs-"+name, "_irc_bot", "_"+name+"_bot",
			`"@_irc_.*:example\\.org"`, `"@_`+name+`_.*"`, `"#_irc_.*"`, `"#_`+name+`_.*"`).Replace(goodReg)
		for i := 0; i+1 < len(repl); i += 2 {
			body = strings.Replace(body, repl[i], repl[i+1], 1)
		}
		return writeReg(t, dir, name+".yaml", body)
	}
	for _, c := range []struct {
		name string
		file string
		want string
	}{
		{"dupid", other("slack", "id: slack", "id: irc"), "also the id of"},
		{"duptoken", other("matrix", "as-matrix", "as-irc-token"), "uses a token"},
		{"overlap", other("tele", `"@_tele_.*"`, `"@_irc_bob.*"`), "overlaps"},
		{"samealiases", other("disc", `"#_disc_.*"`, `"#_irc_.*"`), "overlaps"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, probs := Load([]string{a, c.file}, "example.org")
			if len(probs) == 0 || !strings.Contains(probs.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, probs)
			}
		})
	}
	t.Run("disjoint", func(t *testing.T) {
		if _, probs := Load([]string{a, other("slack")}, "example.org"); len(probs) != 0 {
			t.Fatalf("disjoint services: %v", probs)
		}
	})
}

func TestOverlap(t *testing.T) {
	ns := func(re string) Namespace {
		var out []Namespace
		out, _ = compileList([]nsFormat{{Regex: re}}, "users", func(string, string) {})
		return out[0]
	}
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"@_irc_.*", "@_irc_bob.*", true},
		{"@_irc_.*", "@_irc_bob:example\\.org", true},
		{"@_irc_.*", "@_slack_.*", false},
		{"@_irc_[a-z]+:example\\.org", "@_irc_x:example\\.org", true},
		{"@(foo|bar)_.*", "@bar_.*", true},
		{"@_irc_.*:example\\.org", "@_irc_bob.*", true},
		{"@_irc_.*:example\\.org", "@_irc_.*:other\\.org", false},
		{"@a.*", "@a", true},
	} {
		if got := overlap(ns(c.a), ns(c.b), ids.ValidUserID, "example.org"); got != c.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
