package outbound

import (
	"strings"
	"testing"
)

func TestDestKey(t *testing.T) {
	seen := map[string]string{}
	for _, d := range []string{"matrix.org", "matrix.org:8448", "matrix_org", "MATRIX.org", "[::1]:8448", "1.2.3.4",
		"a-very-long-server-name-that-goes-on.and-on.and-on.example.com", "a-very-long-server-name-that-goes-on.and-on.and-on.example.net"} {
		k := destKey(d)
		if k == "" || len(k) > 60 || strings.ContainsAny(k, ".*> \t:[]") {
			t.Errorf("destKey(%q) = %q: not a subject token", d, k)
		}
		if o, dup := seen[k]; dup {
			t.Errorf("%q and %q share the key %q", d, o, k)
		}
		seen[k] = d
		if destKey(d) != k {
			t.Errorf("destKey(%q) is not stable", d)
		}
	}
	if k := destKey("matrix.org:8448"); !strings.HasPrefix(k, "matrix_org_8448_") {
		t.Errorf("destKey keeps the name readable: %q", k)
	}
}
