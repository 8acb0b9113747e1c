package keys

import "testing"

// TestCheckUserIDRefusesUnstorableText: a user ID with a NUL byte or invalid
// UTF-8 is refused as M_INVALID_PARAM (PostgreSQL would fail the query).
func TestCheckUserIDRefusesUnstorableText(t *testing.T) {
	for _, bad := range []string{"@a\x00b:test", "@a:te\x00st", "@\xff\xfe:test", "@a:\xed\xa0\x80", "nosigil", ""} {
		if err := CheckUserID(bad); err == nil {
			t.Errorf("CheckUserID(%q) = nil, want an error", bad)
		}
	}
	for _, good := range []string{"@alice:test", "@☃:test", "@a:example.org:8448"} {
		if err := CheckUserID(good); err != nil {
			t.Errorf("CheckUserID(%q) = %v", good, err)
		}
	}
}
