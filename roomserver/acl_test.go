package roomserver

import "testing"

func TestServerACL(t *testing.T) {
	no := false
	cases := []struct {
		acl    serverACL
		server string
		want   bool
	}{
		{serverACL{Allow: []string{"*"}}, "a.example", true},
		{serverACL{Allow: []string{"*"}}, "a.example:8448", true},
		{serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.com"}}, "x.evil.com", false},
		{serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.com"}}, "evil.com", true},
		{serverACL{Allow: []string{"site-?.corp"}}, "site-b.corp:8448", true},
		{serverACL{Allow: []string{"site-?.corp"}}, "site-bb.corp", false},
		{serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "10.0.0.5:8448", false},
		{serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "[::1]:8448", false},
		{serverACL{Allow: []string{"*"}}, "10.0.0.5", true},
		{serverACL{}, "a.example", false},
		{serverACL{Allow: []string{"A.EXAMPLE"}}, "a.example", true},
		{serverACL{Allow: []string{"[a]"}}, "[a]", true},
	}
	for _, c := range cases {
		if got := c.acl.allows(c.server); got != c.want {
			t.Errorf("%+v allows %s = %v, want %v", c.acl, c.server, got, c.want)
		}
	}
}
