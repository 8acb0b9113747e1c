package push

import (
	"fmt"
	"testing"
)

func threadCounts(c *counts, user, room string) map[string][2]int {
	out := map[string][2]int{}
	c.byThread(user, room, func(th string, n, h int) { out[th] = [2]int{n, h} })
	return out
}

// TestCountsFoldAndReload: past maxEntries the oldest notifications are
// folded by thread; a stored record loads back to the same counts; receipts
// read folded counts they cover.
func TestCountsFoldAndReload(t *testing.T) {
	c := newCounts()
	const n = maxEntries + 40
	for i := 1; i <= n; i++ {
		th := ""
		if i%4 == 0 {
			th = "$thread"
		}
		c.add("@a:t", "!r:t", entry{pos: int64(i), thread: th, highlight: i%10 == 0})
	}
	c.add("@a:t", "!r:t", entry{pos: 3}) // again (after a restart): not counted twice
	wantN, wantH := n, n/10
	if gn, gh := c.total("@a:t", "!r:t"); gn != wantN || gh != wantH {
		t.Fatalf("total %d/%d, want %d/%d", gn, gh, wantN, wantH)
	}
	before := threadCounts(c, "@a:t", "!r:t")
	if before["$thread"][0] != n/4 || before[""][0] != n-n/4 {
		t.Fatalf("by thread: %v", before)
	}
	snaps := c.takeDirty()
	if len(snaps) != 1 || snaps[0].data == nil {
		t.Fatalf("dirty: %+v", snaps)
	}
	if again := c.takeDirty(); len(again) != 0 {
		t.Errorf("dirty twice: %+v", again)
	}
	r := newCounts()
	if err := r.load("@a:t", "!r:t", snaps[0].data, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if got := threadCounts(r, "@a:t", "!r:t"); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("reloaded %v, want %v", got, before)
	}
	if !r.isUnread("@a:t", "!r:t", 1) || !r.isUnread("@a:t", "!r:t", n) {
		t.Error("folded or newest notification not unread")
	}
	// A main-timeline receipt past every folded one: the thread stays.
	r.read("@a:t", "!r:t", threadMain, n)
	if got := threadCounts(r, "@a:t", "!r:t"); got[""][0] != 0 || got["$thread"][0] != n/4 {
		t.Errorf("after main receipt: %v", got)
	}
	// A thread receipt before the newest folded one leaves the folded count.
	r.read("@a:t", "!r:t", "$thread", 8)
	if got := threadCounts(r, "@a:t", "!r:t"); got["$thread"][0] != n/4 {
		t.Errorf("after early thread receipt: %v", got)
	}
	r.read("@a:t", "!r:t", threadAll, n)
	if gn, _ := r.total("@a:t", "!r:t"); gn != 0 || r.hasUnread("@a:t", "!r:t") {
		t.Errorf("after full receipt: %d unread", gn)
	}
	snaps = r.takeDirty()
	if len(snaps) != 1 || snaps[0].data != nil {
		t.Errorf("emptied pair: %+v (want a deletion)", snaps)
	}
	if err := r.load("@a:t", "!r:t", []byte(`{"e":[["x",0,""]]}`), map[string]string{}); err == nil {
		t.Error("bad record loaded")
	}
}
