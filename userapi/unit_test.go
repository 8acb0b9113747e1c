package userapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestValidLocalpart(t *testing.T) {
	long := strings.Repeat("a", MaxUserIDBytes-len("@:example.org")+1)
	tests := []struct {
		lp   string
		code string
	}{
		{"alice", ""},
		{"a.b_c=d-e/f+g", ""},
		{"0123", ""},
		{long[:len(long)-1], ""},
		{long, "M_INVALID_USERNAME"},
		{"", "M_INVALID_USERNAME"},
		{"Alice", "M_INVALID_USERNAME"},
		{"al ice", "M_INVALID_USERNAME"},
		{"al:ice", "M_INVALID_USERNAME"},
		{"al@ice", "M_INVALID_USERNAME"},
		{"alice*", "M_INVALID_USERNAME"},
		{"élise", "M_INVALID_USERNAME"},
	}
	for _, tt := range tests {
		err := ValidLocalpart(tt.lp, "example.org")
		if tt.code == "" && err != nil {
			t.Errorf("ValidLocalpart(%q) = %v, want ok", tt.lp, err)
		}
		if tt.code != "" && !merr.Is(err, tt.code) {
			t.Errorf("ValidLocalpart(%q) = %v, want %s", tt.lp, err, tt.code)
		}
	}
}

func TestSplitUserID(t *testing.T) {
	tests := []struct {
		in, lp, server string
		ok             bool
	}{
		{"@alice:example.org", "alice", "example.org", true},
		{"@alice:example.org:8448", "alice", "example.org:8448", true},
		{"alice:example.org", "", "", false},
		{"@alice", "", "", false},
		{"@:example.org", "", "", false},
		{"@alice:", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		lp, server, ok := SplitUserID(tt.in)
		if lp != tt.lp || server != tt.server || ok != tt.ok {
			t.Errorf("SplitUserID(%q) = %q %q %v", tt.in, lp, server, ok)
		}
	}
}

func TestResolveLogin(t *testing.T) {
	s := &Service{opts: Options{ServerName: "example.org"}}
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice", "@alice:example.org", true},
		{"Alice", "@alice:example.org", true},
		{"@ALICE:example.org", "@alice:example.org", true},
		{"@alice:EXAMPLE.org", "@alice:example.org", true},
		{" alice ", "@alice:example.org", true},
		{"@alice:other.org", "", false},
		{"", "", false},
		{"@alice", "", false},
		{strings.Repeat("a", 300), "", false},
	}
	for _, tt := range tests {
		got, ok := s.resolveLogin(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("resolveLogin(%q) = %q %v, want %q %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRandomIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		lp := randomLocalpart()
		if err := ValidLocalpart(lp, "example.org"); err != nil {
			t.Fatalf("random localpart %q invalid: %v", lp, err)
		}
		d := randomDeviceID()
		if len(d) != 10 || strings.ToUpper(d) != d {
			t.Fatalf("device ID %q", d)
		}
		if seen[lp] {
			t.Fatalf("random localpart repeated: %q", lp)
		}
		seen[lp] = true
	}
}

func TestPasswordHashing(t *testing.T) {
	long := strings.Repeat("x", 100)
	h, err := HashPassword(long+"A", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, hashPrefix) {
		t.Fatalf("hash %q lacks the scheme prefix", h)
	}
	plain, _ := bcrypt.GenerateFromPassword([]byte("old secret"), bcrypt.MinCost)
	tests := []struct {
		name, stored, pw string
		want             bool
	}{
		{"right", h, long + "A", true},
		// bcrypt alone would ignore everything after byte 72.
		{"differs after byte 72", h, long + "B", false},
		{"prefix only", h, long, false},
		{"empty", h, "", false},
		{"imported bcrypt", string(plain), "old secret", true},
		{"imported bcrypt wrong", string(plain), "old secreT", false},
		{"unknown scheme", "md5$abc", "abc", false},
		{"garbage", hashPrefix + "nonsense", "x", false},
	}
	for _, tt := range tests {
		if got := CheckPassword(tt.stored, tt.pw); got != tt.want {
			t.Errorf("%s: CheckPassword = %v, want %v", tt.name, got, tt.want)
		}
	}
	for _, pw := range []string{"", strings.Repeat("p", MaxPasswordBytes+1)} {
		if err := ValidNewPassword(pw); !merr.Is(err, "M_WEAK_PASSWORD") {
			t.Errorf("ValidNewPassword(len %d) = %v", len(pw), err)
		}
	}
}

func TestTokens(t *testing.T) {
	a, ha, err := newAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	b, hb, _ := newAccessToken()
	if a == b || ha == hb {
		t.Fatal("tokens repeat")
	}
	if !strings.HasPrefix(a, tokenPrefix) || len(a) < len(tokenPrefix)+43 {
		t.Fatalf("token %q too short", a)
	}
	if HashToken(a) != ha || len(ha) != 64 || strings.Contains(ha, a) {
		t.Fatalf("hash %q", ha)
	}
}

func TestBackoff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Unix(1000, 0)
		b := newBackoff(db, func() time.Time { return now })
		u, other := failureKey{user: "u"}, failureKey{user: "u", addr: "198.51.100.1"}
		for i := 0; i < freeAttempts-1; i++ {
			b.fail(ctx, u)
			if w := b.wait(ctx, u); w != 0 {
				t.Fatalf("after %d failures wait %v", i+1, w)
			}
		}
		b.fail(ctx, u)
		if w := b.wait(ctx, u); w != time.Second {
			t.Fatalf("first delay %v", w)
		}
		b.fail(ctx, u)
		if w := b.wait(ctx, u); w != 2*time.Second {
			t.Fatalf("second delay %v", w)
		}
		if w := b.wait(ctx, other); w != 0 {
			t.Fatalf("other key waits %v", w)
		}
		for i := 0; i < 30; i++ {
			b.fail(ctx, u)
		}
		if w := b.wait(ctx, u); w != maxDelay {
			t.Fatalf("capped delay %v", w)
		}
		now = now.Add(maxDelay)
		if w := b.wait(ctx, u); w != 0 {
			t.Fatalf("after the delay wait %v", w)
		}
		b.reset(ctx, u)
		b.fail(ctx, u)
		if w := b.wait(ctx, u); w != 0 {
			t.Fatalf("after reset wait %v", w)
		}
		b.fail(ctx, u)
		b.fail(ctx, u)
		now = now.Add(forgetAfter + time.Second)
		if w := b.wait(ctx, u); w != 0 {
			t.Fatalf("forgotten failures still wait %v", w)
		}
		// A failure after the forgetting starts the count again, and the
		// sweep deletes forgotten counters.
		b.fail(ctx, u)
		if w := b.wait(ctx, u); w != 0 {
			t.Fatalf("a fresh count waits %v", w)
		}
		b.fail(ctx, other)
		now = now.Add(forgetAfter + time.Minute)
		b.fail(ctx, failureKey{user: "v"})
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM login_failures`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d counters after the sweep (%v)", n, err)
		}
	})
}

func TestDefaultPushRules(t *testing.T) {
	rs, err := DefaultPushRules("@alice:example.org")
	if err != nil {
		t.Fatal(err)
	}
	ids := func(list []PushRule) []string {
		var out []string
		for _, r := range list {
			out = append(out, r.RuleID)
			if !r.Default {
				t.Errorf("%s is not marked default", r.RuleID)
			}
			if r.Actions == nil {
				t.Errorf("%s has nil actions", r.RuleID)
			}
		}
		return out
	}
	want := map[string][]string{
		"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		"content":   {".m.rule.contains_user_name"},
		"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"},
	}
	for _, kind := range PushRuleKinds {
		got := ids(*rs.Kind(kind))
		if strings.Join(got, ",") != strings.Join(want[kind], ",") {
			t.Errorf("%s rules = %v, want %v", kind, got, want[kind])
		}
	}
	if rs.Override[0].Enabled {
		t.Error("master rule enabled by default")
	}
	if *rs.Content[0].Pattern != "alice" {
		t.Errorf("contains_user_name pattern %q", *rs.Content[0].Pattern)
	}
	raw, _ := json.Marshal(rs)
	for _, s := range []string{`"pattern":"@alice:example.org"`, `"value":"@alice:example.org"`, `"conditions":[]`, `"content.m\\.mentions.user_ids"`, `"is":"2"`} {
		if !strings.Contains(string(raw), s) {
			t.Errorf("default rules lack %s", s)
		}
	}
	if strings.Contains(string(raw), "USER_ID") || strings.Contains(string(raw), "LOCALPART") {
		t.Error("placeholders left in the default rules")
	}
}

func TestValidPushActions(t *testing.T) {
	tests := []struct {
		in   string
		code string
	}{
		{`[]`, ""},
		{`["notify"]`, ""},
		{`["dont_notify", "coalesce"]`, ""},
		{`["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]`, ""},
		{`["explode"]`, "M_INVALID_PARAM"},
		{`[{"value": 1}]`, "M_INVALID_PARAM"},
		{`[3]`, "M_BAD_JSON"},
		{`[null]`, "M_BAD_JSON"},
	}
	for _, tt := range tests {
		var acts []json.RawMessage
		if err := json.Unmarshal([]byte(tt.in), &acts); err != nil {
			t.Fatal(err)
		}
		err := ValidPushActions(acts)
		if (tt.code == "" && err != nil) || (tt.code != "" && !merr.Is(err, tt.code)) {
			t.Errorf("ValidPushActions(%s) = %v, want %q", tt.in, err, tt.code)
		}
	}
}

func TestSharedSecretMAC(t *testing.T) {
	// Worked by hand from the protocol: HMAC-SHA1 over nonce NUL user NUL password NUL "notadmin".
	a := SharedSecretMAC("secret", "n", "u", "p", false, nil)
	b := SharedSecretMAC("secret", "n", "u", "p", true, nil)
	ut := "bot"
	c := SharedSecretMAC("secret", "n", "u", "p", false, &ut)
	if a == b || a == c || len(a) != 40 {
		t.Fatalf("macs %s %s %s", a, b, c)
	}
	if SharedSecretMAC("secret", "n", "u\x00p", "", false, nil) == SharedSecretMAC("secret", "n", "u", "\x00p", false, nil) {
		t.Log("NUL-joined fields are ambiguous by design of the protocol; NUL is refused in names and passwords")
	}
}
