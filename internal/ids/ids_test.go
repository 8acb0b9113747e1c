package ids

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidServerName(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"example.com", true},
		{"localhost", true},
		{"example.com:8448", true},
		{"localhost:1", true},
		{"localhost:65535", true},
		{"1.2.3.4", true},
		{"1.2.3.4:8448", true},
		{"[::1]", true},
		{"[::1]:8448", true},
		{"[2001:db8::7]:443", true},
		{"matrix-1.example.org", true},
		{"", false},
		{":8448", false},
		{"example.com:", false},
		{"example.com:0", false},
		{"example.com:65536", false},
		{"example.com:123456", false},
		{"example.com:+80", false},
		{"example.com:80:80", false},
		{"https://example.com", false},
		{"example.com/path", false},
		{"a b", false},
		{"-a.com", false},
		{"a..com", false},
		{"[1.2.3.4]", false},
		{"[::1", false},
		{"[::1]x", false},
		{"[::1]:", false},
		{"[fe80::1%eth0]", false},
		{"::1", false},
		{strings.Repeat("a", 231), false},
	} {
		if got := ValidServerName(c.in); got != c.ok {
			t.Errorf("ValidServerName(%q) = %v, want %v", c.in, got, c.ok)
		}
	}
}

func TestSplitAndValidate(t *testing.T) {
	for _, c := range []struct {
		in             string
		user, alias    bool
		opaque, server string
	}{
		{in: "@alice:example.com", user: true, opaque: "alice", server: "example.com"},
		{in: "@alice:example.com:8448", user: true, opaque: "alice", server: "example.com:8448"},
		{in: "@alice:[::1]:8448", user: true, opaque: "alice", server: "[::1]:8448"},
		{in: "@alice:1.2.3.4:8448", user: true, opaque: "alice", server: "1.2.3.4:8448"},
		{in: "@a+b=c/d:example.com", user: true, opaque: "a+b=c/d", server: "example.com"},
		{in: "@Historical!:example.com", user: true, opaque: "Historical!", server: "example.com"},
		{in: "@:example.com"},
		{in: "@alice"},
		{in: "@alice:"},
		{in: "@alice:example.com:0"},
		{in: "@al ice:example.com"},
		{in: "@al\x00ice:example.com"},
		{in: "@☃:example.com"},
		{in: "alice:example.com"},
		{in: "@" + strings.Repeat("a", 250) + ":example.com"},
		{in: "#room:example.com", alias: true, opaque: "room", server: "example.com"},
		{in: "#room:example.com:8448", alias: true, opaque: "room", server: "example.com:8448"},
		{in: "#☕:example.com", alias: true, opaque: "☕", server: "example.com"},
		{in: "#room:[::1]:8448", alias: true, opaque: "room", server: "[::1]:8448"},
		{in: "#:example.com"},
		{in: "#ro om:example.com"},
		{in: "#ro#om:example.com"},
		{in: "#room"},
		{in: "#room:bad host"},
		{in: "##room:example.com"},
	} {
		if got := ValidUserID(c.in); got != c.user {
			t.Errorf("ValidUserID(%q) = %v, want %v", c.in, got, c.user)
		}
		if got := ValidRoomAlias(c.in); got != c.alias {
			t.Errorf("ValidRoomAlias(%q) = %v, want %v", c.in, got, c.alias)
		}
		if c.user || c.alias {
			opaque, server, ok := Split(c.in, c.in[0])
			if !ok || opaque != c.opaque || server != c.server || ServerOf(c.in, c.in[0]) != c.server {
				t.Errorf("Split(%q) = %q, %q, %v; want %q, %q", c.in, opaque, server, ok, c.opaque, c.server)
			}
		}
	}
}

// FuzzIDs: whatever the input, the validators do not panic, agree with
// each other, and what they accept splits back into its parts.
func FuzzIDs(f *testing.F) {
	for _, s := range []string{"@alice:example.com:8448", "#room:[::1]:8448", "!r:example.com:8448", "@a:b:c", "#☕:x", "[::1]", "example.com:65535", "@\xff:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidServerName(s) {
			if strings.ContainsAny(s, " /@#!\x00") || len(s) > maxServerName {
				t.Fatalf("server name %q accepted", s)
			}
		}
		for _, sigil := range []byte{'@', '#', '!'} {
			opaque, server, ok := Split(s, sigil)
			if !ok {
				continue
			}
			if string(sigil)+opaque+":"+server != s || strings.Contains(opaque, ":") || !ValidServerName(server) {
				t.Fatalf("Split(%q) = %q, %q", s, opaque, server)
			}
		}
		if ValidUserID(s) && (!utf8.ValidString(s) || len(s) > MaxIDBytes || ServerOf(s, '@') == "") {
			t.Fatalf("user ID %q accepted", s)
		}
		if ValidRoomAlias(s) && (!utf8.ValidString(s) || ServerOf(s, '#') == "") {
			t.Fatalf("alias %q accepted", s)
		}
	})
}
