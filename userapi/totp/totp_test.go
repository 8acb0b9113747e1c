package totp

import (
	"strings"
	"testing"
	"time"
)

// RFC 6238 appendix B, SHA-1 rows (8 digits), with the RFC's 20-byte seed.
func TestRFC6238Vectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	for _, tc := range []struct {
		unix int64
		want string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		if got := Code(secret, Step(time.Unix(tc.unix, 0)), 8); got != tc.want {
			t.Errorf("T=%d: code %s, want %s", tc.unix, got, tc.want)
		}
		// The 6-digit code is the last six digits of the 8-digit one.
		if got := Code(secret, Step(time.Unix(tc.unix, 0)), 6); got != tc.want[2:] {
			t.Errorf("T=%d: 6-digit code %s, want %s", tc.unix, got, tc.want[2:])
		}
	}
}

// RFC 4226 appendix D: HOTP values for counters 0 to 9.
func TestRFC4226Vectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for i, w := range want {
		if got := Code(secret, int64(i), 6); got != w {
			t.Errorf("counter %d: %s, want %s", i, got, w)
		}
	}
}

func TestMatch(t *testing.T) {
	secret := []byte("12345678901234567890")
	now := time.Unix(1111111111, 0)
	cur := Step(now)
	for _, tc := range []struct {
		name string
		code string
		step int64
		ok   bool
	}{
		{"current", Code(secret, cur, 6), cur, true},
		{"previous step", Code(secret, cur-1, 6), cur - 1, true},
		{"next step", Code(secret, cur+1, 6), cur + 1, true},
		{"two steps old", Code(secret, cur-2, 6), 0, false},
		{"two steps ahead", Code(secret, cur+2, 6), 0, false},
		{"spaces", Code(secret, cur, 6)[:3] + " " + Code(secret, cur, 6)[3:], cur, true},
		{"empty", "", 0, false},
		{"too short", "12345", 0, false},
		{"letters", "abcdef", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			step, ok := Match(secret, tc.code, now)
			if ok != tc.ok || (ok && step != tc.step) {
				t.Fatalf("Match(%q) = %d, %v; want %d, %v", tc.code, step, ok, tc.step, tc.ok)
			}
		})
	}
}

func TestSecretAndURI(t *testing.T) {
	s := NewSecret()
	enc := EncodeSecret(s)
	if strings.Contains(enc, "=") || len(enc) != 32 {
		t.Fatalf("encoded secret %q", enc)
	}
	back, err := DecodeSecret(strings.ToLower(enc[:4]) + " " + enc[4:])
	if err != nil || string(back) != string(s) {
		t.Fatalf("decode: %v", err)
	}
	u := URI("example.com", "@alice:example.com", s)
	if !strings.HasPrefix(u, "otpauth://totp/example.com:@alice:example.com?") || !strings.Contains(u, "secret="+enc) || !strings.Contains(u, "issuer=example.com") {
		t.Fatalf("uri %s", u)
	}
}
