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

// TestCountsMissedCalls: unread call invites are the missed calls of the
// badge, across rooms; a receipt reads them, a checkpoint keeps them, a
// record from before calls were counted loads with none, and a call folded
// out of the entries is no longer counted.
func TestCountsMissedCalls(t *testing.T) {
	c := newCounts()
	c.add("@a:t", "!r1:t", entry{pos: 1, call: true, highlight: true})
	c.add("@a:t", "!r1:t", entry{pos: 2})
	c.add("@a:t", "!r2:t", entry{pos: 3, call: true})
	c.add("@a:t", "!r2:t", entry{pos: 3, call: true}) // again: not counted twice
	if rooms, calls := c.badge("@a:t"); rooms != 2 || calls != 2 {
		t.Fatalf("badge %d rooms %d calls, want 2 and 2", rooms, calls)
	}
	snaps := c.takeDirty()
	r := newCounts()
	for _, s := range snaps {
		if err := r.load(s.user, s.room, s.data, map[string]string{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, calls := r.badge("@a:t"); calls != 2 {
		t.Errorf("reloaded: %d calls", calls)
	}
	if _, h := r.total("@a:t", "!r1:t"); h != 1 {
		t.Errorf("reloaded highlight count %d", h)
	}
	r.read("@a:t", "!r1:t", threadAll, 1)
	if rooms, calls := r.badge("@a:t"); rooms != 2 || calls != 1 {
		t.Errorf("after a receipt: %d rooms %d calls", rooms, calls)
	}
	if err := r.load("@a:t", "!old:t", []byte(`{"e":[[5,1,""]]}`), map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if _, h := r.total("@a:t", "!old:t"); h != 1 {
		t.Errorf("old record: highlight count %d", h)
	}
	if _, calls := r.badge("@a:t"); calls != 1 {
		t.Errorf("old record counted %d calls", calls)
	}
	for i := int64(10); i < 10+maxEntries; i++ {
		r.add("@a:t", "!r2:t", entry{pos: i})
	}
	if _, calls := r.badge("@a:t"); calls != 0 {
		t.Errorf("a folded call still counted: %d", calls)
	}
}
