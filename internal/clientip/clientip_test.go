package clientip

import (
	"net/http/httptest"
	"testing"
)

func TestAddr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		peer    string
		xff     []string
		want    string
	}{
		{"no proxies: the peer", nil, "203.0.113.7:5000", nil, "203.0.113.7"},
		{"no proxies: a forged header from loopback is ignored", nil, "127.0.0.1:5000", []string{"198.51.100.1"}, "127.0.0.1"},
		{"no proxies: a forged header from elsewhere is ignored", nil, "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted peer: the entry it added", []string{"127.0.0.1"}, "127.0.0.1:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted peer: forged entries to the left are skipped", []string{"127.0.0.1"}, "127.0.0.1:5000", []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, "198.51.100.1"},
		{"untrusted peer with the trusted proxy's header shape", []string{"10.0.0.0/8"}, "192.0.2.50:443", []string{"198.51.100.1"}, "192.0.2.50"},
		{"chain of trusted proxies", []string{"10.0.0.0/8"}, "10.0.0.2:80", []string{"1.1.1.1, 198.51.100.1, 10.0.0.9"}, "198.51.100.1"},
		{"several headers are one list", []string{"10.0.0.0/8"}, "10.0.0.2:80", []string{"1.1.1.1", "198.51.100.1, 10.0.0.9"}, "198.51.100.1"},
		{"a trusted peer without the header", []string{"127.0.0.1"}, "127.0.0.1:5000", nil, "127.0.0.1"},
		{"every entry trusted: the leftmost", []string{"10.0.0.0/8"}, "10.0.0.2:80", []string{"10.0.0.8, 10.0.0.9"}, "10.0.0.8"},
		{"garbage stops the walk at the last good hop", []string{"10.0.0.0/8"}, "10.0.0.2:80", []string{"198.51.100.1, not-an-ip, 10.0.0.9"}, "10.0.0.9"},
		{"garbage right away: the peer", []string{"127.0.0.1"}, "127.0.0.1:5000", []string{"<script>"}, "127.0.0.1"},
		{"IPv6 peer and entry", []string{"::1"}, "[::1]:5000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"entry with a port", []string{"127.0.0.1"}, "127.0.0.1:5000", []string{"198.51.100.1:4711"}, "198.51.100.1"},
		{"bracketed IPv6 entry with port", []string{"127.0.0.1"}, "127.0.0.1:5000", []string{"[2001:db8::5]:4711"}, "2001:db8::5"},
		{"IPv4-mapped peer counts as IPv4", []string{"127.0.0.1"}, "[::ffff:127.0.0.1]:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"a range of proxies", []string{"192.0.2.0/24"}, "192.0.2.200:5000", []string{"198.51.100.1"}, "198.51.100.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(tc.trusted)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tr.Addr(r); got != tc.want {
				t.Errorf("Addr = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseItem(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.0.0.5", true}, {"10.0.0.0/8", true}, {"::1", true}, {"fd00::/64", true}, {" 127.0.0.1 ", true},
		{"10.0.0.0/33", false}, {"localhost", false}, {"10.0.0", false}, {"", false}, {"fe80::1%eth0", false},
	} {
		if _, err := ParseItem(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseItem(%q) error %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.1":         "198.51.100.1",
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::/64",
		"2001:db8:1:2:bbbb::9": "2001:db8:1:2::/64",
		"::ffff:198.51.100.1":  "198.51.100.1",
		"not an address":       "not an address",
	} {
		if got := Network(in); got != want {
			t.Errorf("Network(%q) = %q, want %q", in, got, want)
		}
	}
}
