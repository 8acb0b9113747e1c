package synctoken

import "testing"

// TestTokens: a token reads back as the positions it was made of; older
// tokens with fewer streams read the missing ones as 0; anything else is
// refused.
func TestTokens(t *testing.T) {
	full := Pos{1, 2, 3, 4, 5, 6, 7, 8}
	if s := full.String(); s != "s1_2_3_4_5_6_7_8" {
		t.Fatalf("String: %s", s)
	}
	for _, tc := range []struct {
		in     string
		want   Pos
		refuse bool
	}{
		{in: "s1_2_3_4_5_6_7_8", want: full},
		{in: "s1_2_3_4_5_6_7", want: Pos{1, 2, 3, 4, 5, 6, 7, 0}},
		{in: "s42", want: Pos{Events: 42}},
		{in: "s1_2_3_4_5_6_7_8_9", refuse: true},
		{in: "s-1", refuse: true},
		{in: "s", refuse: true},
		{in: "t1", refuse: true},
		{in: "s1__2", refuse: true},
	} {
		got, err := Parse(tc.in)
		if tc.refuse != (err != nil) || !tc.refuse && got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v", tc.in, got, err)
		}
	}
	a, b := Pos{Events: 5, Typing: 1}, Pos{Events: 3, Typing: 9}
	if !a.After(b) || !b.After(a) || a.After(a) {
		t.Error("After")
	}
	if a.Max(b) != (Pos{Events: 5, Typing: 9}) || a.Min(b) != (Pos{Events: 3, Typing: 1}) {
		t.Error("Max/Min")
	}
}
