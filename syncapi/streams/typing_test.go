package streams

import (
	"strings"
	"testing"
	"time"
)

// TestTyping: the position moves only when a room's typing users change,
// expiry drops users whose time ran out, and the event lists them sorted.
func TestTyping(t *testing.T) {
	ty := NewTyping()
	start := ty.Pos()
	t0 := time.UnixMilli(1_000_000)
	steps := []struct {
		room, user string
		typing     bool
		expires    time.Time
		changed    bool
	}{
		{"!a", "@bob", true, t0.Add(time.Second), true},
		{"!a", "@bob", true, t0.Add(2 * time.Second), false}, // still typing: only the expiry moves
		{"!a", "@alice", true, t0.Add(10 * time.Second), true},
		{"!b", "@carol", false, time.Time{}, false}, // was not typing
		{"!b", "@carol", true, t0.Add(time.Second), true},
	}
	for i, s := range steps {
		pos, changed := ty.Apply(s.room, s.user, s.typing, s.expires)
		if changed != s.changed || changed && pos != ty.Pos() {
			t.Fatalf("step %d: %d %v", i, pos, changed)
		}
	}
	if ty.Pos() != start+3 {
		t.Fatalf("position %d, want %d", ty.Pos(), start+3)
	}
	if got := strings.Join(ty.Users("!a"), ","); got != "@alice,@bob" {
		t.Fatalf("users %s", got)
	}
	rooms, positions := ty.Expire(t0.Add(3 * time.Second))
	if len(rooms) != 2 || len(positions) != 2 || positions[1] != start+5 {
		t.Fatalf("expired %v %v", rooms, positions)
	}
	if got := strings.Join(ty.Users("!a"), ","); got != "@alice" || len(ty.Users("!b")) != 0 {
		t.Fatalf("after expiry: %v %v", ty.Users("!a"), ty.Users("!b"))
	}
	if ev := string(TypingEvent([]string{})); ev != `{"content":{"user_ids":[]},"type":"m.typing"}` {
		t.Fatalf("event %s", ev)
	}
}
