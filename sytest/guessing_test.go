package sytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// proxyAddr is the reverse proxy of TestGuessingBehindProxy: requests
// from it carry the client's address in X-Forwarded-For. Linux answers on
// all of 127.0.0.0/8, so a client bound to 127.0.0.2 is that proxy, and
// the tests' usual client (127.0.0.1) is not.
const proxyAddr = "127.0.0.2"

// via sends a login from clientAddr through the trusted proxy (from
// 127.0.0.2, with X-Forwarded-For), or, when spoof is set, from 127.0.0.1
// with the same header written by the client itself.
func via(t *testing.T, s *server, clientAddr string, spoof bool, user, password string) (int, string) {
	t.Helper()
	dialer := &net.Dialer{}
	if !spoof {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(proxyAddr)}
	}
	cli := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}}
	body, _ := json.Marshal(map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": user}, "password": password})
	req, err := http.NewRequestWithContext(context.Background(), "POST", s.URL+v3+"/login", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// What a client might have written itself, then what the proxy added.
	req.Header.Add("X-Forwarded-For", "192.0.2.1, "+clientAddr)
	resp, err := cli.Do(req)
	if err != nil {
		t.Fatalf("login from %s: %v", clientAddr, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 500 {
		t.Errorf("login from %s: %d %s", clientAddr, resp.StatusCode, raw)
	}
	return resp.StatusCode, out.ErrCode
}

// failLine is the fail2ban filter of docs/security.md (text log format),
// with fail2ban's <ADDR> written as a Go group.
var failLine = regexp.MustCompile(`msg=audit addr="?(?P<addr>[0-9a-fA-F.:]+)"? audit_action=login\.(?:failed|refused) `)

// TestGuessingBehindProxy: someone guesses alice's password from many
// addresses behind the company's reverse proxy. The guesses are slowed
// down for the account as a whole, so few are tried and even the right
// password is refused from a new address, while alice keeps signing in
// from her usual address. Addresses written by the client itself count
// for nothing, every refusal is in the audit log in the form the fail2ban
// filter matches, and the password policy keeps guessable passwords out
// in the first place.
func TestGuessingBehindProxy(t *testing.T) {
	eachDBEnv(t, []string{
		"HAVEN_TRUSTED_PROXIES=" + proxyAddr,
		"HAVEN_RATE_LIMITS_ENABLED=true",
		"HAVEN_RATE_LIMITS_REGISTER_PER_MINUTE=30",
		"HAVEN_PASSWORD_POLICY_REFUSE_COMMON=true",
		"HAVEN_PASSWORD_POLICY_MIN_LENGTH=10",
		"HAVEN_LOGGING_LEVEL=info",
	}, func(t *testing.T, s *server) {
		dummy := map[string]any{"type": "m.login.dummy"}
		for _, weak := range []string{"short", "password123", "Summer2024!", "qwertyuiop1"} {
			s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": weak, "auth": dummy}).expectErr(t, 400, "M_WEAK_PASSWORD")
		}
		const pw = "gravel kettle orbit lamp"
		s.do(t, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": pw, "auth": dummy}).expect(t, 200)

		const home = "198.51.100.10"
		if st, code := via(t, s, home, false, "alice", pw); st != 200 {
			t.Fatalf("alice's first sign-in from home: %d %s", st, code)
		}

		forbidden, slowed := 0, 0
		for i := 1; i <= 40; i++ {
			attacker := fmt.Sprintf("203.0.113.%d", i)
			for _, guess := range []string{"letmein-" + attacker, "hunter2-" + attacker} {
				switch st, code := via(t, s, attacker, false, "alice", guess); {
				case st == 403 && code == "M_FORBIDDEN":
					forbidden++
				case st == 429 && code == "M_LIMIT_EXCEEDED":
					slowed++
				default:
					t.Fatalf("guess from %s: %d %s", attacker, st, code)
				}
			}
			if i%10 == 0 {
				// Alice, from where she always signs in, is let in.
				if st, code := via(t, s, home, false, "alice", pw); st != 200 {
					t.Fatalf("alice signing in during the attack (after %d guessing addresses): %d %s", i, st, code)
				}
			}
		}
		if forbidden > 4 || slowed < 75 {
			t.Errorf("%d guesses checked and %d slowed down; want at most 4 checked", forbidden, slowed)
		}
		// A guesser holding the right password gets nowhere either.
		if st, code := via(t, s, "203.0.113.200", false, "alice", pw); st != 429 || code != "M_LIMIT_EXCEEDED" {
			t.Errorf("the right password from a new address during the attack: %d %s, want 429", st, code)
		}

		// Without the proxy, X-Forwarded-For is the client's own claim: all
		// of these come from 127.0.0.1 and its address limit stops them.
		limited := false
		for i := 0; i < 15 && !limited; i++ {
			st, _ := via(t, s, fmt.Sprintf("198.51.100.%d", 100+i), true, fmt.Sprintf("bob%d", i), "whatever pw")
			limited = st == 429
		}
		if !limited {
			t.Errorf("forged X-Forwarded-For headers escaped the per-address limit")
		}

		s.mu.Lock()
		logs := s.logs.String()
		s.mu.Unlock()
		matched := map[string]bool{}
		for _, line := range strings.Split(logs, "\n") {
			if m := failLine.FindStringSubmatch(line); m != nil {
				matched[m[1]] = true
			}
			if strings.Contains(line, pw) {
				t.Fatalf("a password reached the log: %s", line)
			}
		}
		for _, want := range []string{"203.0.113.1", "203.0.113.40", "203.0.113.200", "127.0.0.1"} {
			if !matched[want] {
				t.Errorf("no audit line for %s that the fail2ban filter matches", want)
			}
		}
		for _, never := range []string{home, "192.0.2.1", "198.51.100.100", proxyAddr} {
			if matched[never] {
				t.Errorf("the fail2ban filter matched %s, which never guessed (or was forged)", never)
			}
		}
	})
}
