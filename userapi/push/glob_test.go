package push

import (
	"strings"
	"testing"
	"time"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		glob, s string
		want    bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything", true},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.roomx", false},
		{"m.?oom", "m.room", true},
		{"m.?oom", "m.oom", false},
		{"*.message", "m.room.message", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"é?", "éa", true},
		{"??", "é", false},
		{"a**", "a", true},
	}
	for _, tc := range tests {
		if got := globMatch(tc.glob, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.glob, tc.s, got)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, s   string
		whole, words bool
	}{
		{"Alice", "alice", true, true},
		{"alice", "hi alice!", false, true},
		{"alice", "malice", false, false},
		{"alice", "alice_x", false, false},
		{"alice", "(alice)", false, true},
		{"alice", "x alice", false, true},
		{"cat*", "cats and dogs", true, true},
		{"cat?", "a cats b", false, true},
		{"cat*", "cats", true, true},
		{"c?t", "the cut", false, true},
		{"c?t", "the cult", false, false},
		{"straße", "die straße hier", false, true},
		{"ünïcode", "ÜNÏCODE", true, true},
		{"@room", "@room hello", false, true},
		{"", "", true, false},
	}
	for _, tc := range tests {
		p := compilePattern(tc.pattern)
		if got := p.matchWhole(tc.s); got != tc.whole {
			t.Errorf("%q whole %q = %v", tc.pattern, tc.s, got)
		}
		if got := p.matchWords(strings.ToLower(tc.s)); got != tc.words {
			t.Errorf("%q words %q = %v", tc.pattern, tc.s, got)
		}
	}
}

func TestCountsReceipts(t *testing.T) {
	c := newCounts()
	add := func(pos int64, thread string, hl bool) {
		c.add("@u:t", "!r", entry{pos: pos, thread: thread, highlight: hl})
	}
	add(1, "", false)
	add(2, "$t", true)
	add(3, "", true)
	add(4, "$t", false)
	add(5, "$u", false)
	check := func(step string, n, h int, threads map[string]int) {
		t.Helper()
		gn, gh := c.total("@u:t", "!r")
		if gn != n || gh != h {
			t.Errorf("%s: total %d/%d, want %d/%d", step, gn, gh, n, h)
		}
		got := map[string]int{}
		c.byThread("@u:t", "!r", func(thread string, n, _ int) { got[thread] = n })
		for k, v := range threads {
			if got[k] != v {
				t.Errorf("%s: thread %q %d, want %d (%v)", step, k, got[k], v, got)
			}
		}
	}
	check("start", 5, 2, map[string]int{"": 2, "$t": 2, "$u": 1})
	if c.read("@u:t", "!r", threadMain, 3) != true {
		t.Error("main receipt changed nothing")
	}
	check("main read to 3", 3, 1, map[string]int{"": 0, "$t": 2, "$u": 1})
	c.read("@u:t", "!r", "$t", 2)
	check("thread $t read to 2", 2, 0, map[string]int{"$t": 1, "$u": 1})
	if c.read("@u:t", "!r", "$t", 2) {
		t.Error("the same receipt again changed something")
	}
	c.read("@u:t", "!r", threadAll, 4)
	check("unthreaded to 4", 1, 0, map[string]int{"$u": 1})
	c.read("@u:t", "!r", threadAll, 5)
	check("all read", 0, 0, map[string]int{"": 0})
	if rooms, _ := c.badge("@u:t"); c.hasUnread("@u:t", "!r") || rooms != 0 {
		t.Error("empty entry kept")
	}
}

func TestCountsOverflow(t *testing.T) {
	c := newCounts()
	for i := int64(1); i <= maxEntries+5; i++ {
		c.add("@u:t", "!r", entry{pos: i, highlight: i%2 == 0})
	}
	if n, h := c.total("@u:t", "!r"); n != maxEntries+5 || h != (maxEntries+5)/2 {
		t.Fatalf("total %d/%d", n, h)
	}
	c.read("@u:t", "!r", threadAll, maxEntries)
	if n, _ := c.total("@u:t", "!r"); n != 5 {
		t.Fatalf("after reading to %d: %d left", maxEntries, n)
	}
	// Out-of-order adds (loading) keep the order; duplicates are ignored.
	c.add("@u:t", "!s", entry{pos: 5})
	c.add("@u:t", "!s", entry{pos: 3})
	c.add("@u:t", "!s", entry{pos: 3})
	c.read("@u:t", "!s", threadAll, 4)
	if n, _ := c.total("@u:t", "!s"); n != 1 {
		t.Fatalf("out of order: %d left", n)
	}
}

// TestHostilePatternsAreCheap: a user's own push rule can hold a pattern of
// tens of thousands of wildcards, evaluated against every event of their
// rooms while the evaluation of all events waits. Such patterns must cost
// little (they match nothing); runs of stars are merged.
func TestHostilePatternsAreCheap(t *testing.T) {
	body := strings.Repeat("a", 5000)
	for _, p := range []string{strings.Repeat("*", 20000) + "z", strings.Repeat("?*", 5000) + "z", strings.Repeat("a*", 5000) + "z"} {
		pt := compilePattern(p)
		start := time.Now()
		pt.matchWords(body)
		pt.matchWhole(body)
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("a pattern of %d bytes took %v to match", len(p), d)
		}
	}
	pt := compilePattern("a" + strings.Repeat("*", 1000) + "b")
	if !pt.matchWhole("AxyzB") || !pt.matchWords("x axyzb y") {
		t.Error("a run of stars does not match as one star")
	}
	if pt := compilePattern(strings.Repeat("?", maxPatternWildcards+1)); pt.matchWhole(strings.Repeat("a", maxPatternWildcards+1)) {
		t.Error("a pattern with too many wildcards matched")
	}
}
