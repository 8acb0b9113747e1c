package regtokens

import "testing"

// Random tokens hold letters and digits only: one beginning with "-" could
// not be named on a command line (haven admin tokens delete TOKEN).
func TestRandomTokenAlphanumeric(t *testing.T) {
	for i := 0; i < 2000; i++ {
		tok := randomToken(16)
		if len(tok) != 16 {
			t.Fatalf("length %d: %q", len(tok), tok)
		}
		for _, c := range tok {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				t.Fatalf("token %q holds %q", tok, c)
			}
		}
	}
}
