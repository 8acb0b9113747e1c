package syncapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
)

func TestSlidingRequiredState(t *testing.T) {
	me := "@me:x"
	senders := map[string]bool{"@bob:x": true}
	cases := []struct {
		name string
		req  [][]string
		key  [2]string
		want bool
	}{
		{"everything", [][]string{{"*", "*"}}, [2]string{"m.room.topic", ""}, true},
		{"type wildcard", [][]string{{"m.room.member", "*"}}, [2]string{"m.room.member", "@carol:x"}, true},
		{"other type", [][]string{{"m.room.member", "*"}}, [2]string{"m.room.topic", ""}, false},
		{"exact", [][]string{{"m.room.name", ""}}, [2]string{"m.room.name", ""}, true},
		{"exact other key", [][]string{{"m.room.member", "@bob:x"}}, [2]string{"m.room.member", "@carol:x"}, false},
		{"$ME", [][]string{{"m.room.member", "$ME"}}, [2]string{"m.room.member", me}, true},
		{"$ME not others", [][]string{{"m.room.member", "$ME"}}, [2]string{"m.room.member", "@bob:x"}, false},
		{"$LAZY sender", [][]string{{"m.room.member", "$LAZY"}}, [2]string{"m.room.member", "@bob:x"}, true},
		{"$LAZY me", [][]string{{"m.room.member", "$LAZY"}}, [2]string{"m.room.member", me}, true},
		{"$LAZY not a sender", [][]string{{"m.room.member", "$LAZY"}}, [2]string{"m.room.member", "@carol:x"}, false},
		{"any type, one key", [][]string{{"*", ""}}, [2]string{"m.room.create", ""}, true},
		{"nothing asked", nil, [2]string{"m.room.create", ""}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := requiredState(c.req, c.key, me, senders); got != c.want {
				t.Errorf("requiredState(%v, %v) = %v, want %v", c.req, c.key, got, c.want)
			}
		})
	}
}

func TestSlidingBodyCheck(t *testing.T) {
	cases := []struct {
		body string
		ok   bool
	}{
		{`{}`, true},
		{`{"lists": {"a": {"ranges": [[0, 9]], "timeline_limit": 5, "required_state": [["*", "*"]]}}}`, true},
		{`{"lists": {"a": {"ranges": [[9, 0]]}}}`, false},
		{`{"lists": {"a": {"ranges": [[-1, 0]]}}}`, false},
		{`{"lists": {"a": {"ranges": [[0, 1, 2]]}}}`, false},
		{`{"lists": {"a": {"required_state": [["a", "b", "c"]]}}}`, false},
		{`{"room_subscriptions": {"!r:x": {"timeline_limit": -2}}}`, false},
	}
	for _, c := range cases {
		var b SlidingBody
		if err := json.Unmarshal([]byte(c.body), &b); err != nil {
			t.Fatal(err)
		}
		err := b.check()
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", c.body, err, c.ok)
		}
		if err != nil {
			if me, ok := merr.As(err); !ok || me.Status != 400 {
				t.Errorf("%s: %v is not a 400", c.body, err)
			}
		}
	}
	var b SlidingBody
	_ = json.Unmarshal([]byte(`{"lists": {"a": {"timeline_limit": 100000}}, "room_subscriptions": {"!r:x": {"timeline_limit": 1000}}}`), &b)
	if err := b.check(); err != nil || b.Lists["a"].TimelineLimit != maxSlidingTimeline || b.RoomSubscriptions["!r:x"].TimelineLimit != maxSlidingTimeline {
		t.Errorf("timeline_limit not capped: %d, %d (%v)", b.Lists["a"].TimelineLimit, b.RoomSubscriptions["!r:x"].TimelineLimit, err)
	}
}

func TestSlidingConns(t *testing.T) {
	c := newSlidingConns()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	key := slidingKey("@a:x", "DEV", "main")
	unknown := func(pos string) {
		t.Helper()
		_, err := c.get(key, pos)
		if me, ok := merr.As(err); !ok || me.Code != "M_UNKNOWN_POS" {
			t.Errorf("pos %q: %v, want M_UNKNOWN_POS", pos, err)
		}
	}
	unknown("")
	unknown("nonsense")
	p1 := c.put(key, &slidingSnap{}, true)
	p2 := c.put(key, &slidingSnap{}, false)
	p3 := c.put(key, &slidingSnap{}, false)
	for _, p := range []string{p2, p3} {
		if _, err := c.get(key, p); err != nil {
			t.Errorf("pos %s: %v", p, err)
		}
	}
	unknown(p1) // only the last two are kept
	if _, err := c.get(slidingKey("@a:x", "DEV", "other"), p3); err == nil {
		t.Error("a pos of another connection is known")
	}
	// A new connection on the same key forgets the old positions.
	p4 := c.put(key, &slidingSnap{}, true)
	unknown(p3)
	if _, err := c.get(key, p4); err != nil {
		t.Error(err)
	}
	// Idle too long: expired.
	now = now.Add(slidingConnIdle + time.Second)
	unknown(p4)
}

func TestSlidingConnsBounded(t *testing.T) {
	c := newSlidingConns()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	for i := range slidingConnsMax + 10 {
		now = now.Add(time.Millisecond)
		c.put(slidingKey("@a:x", "DEV", string(rune('a'+i%26))+time.Duration(i).String()), &slidingSnap{}, true)
	}
	if n := len(c.conns); n > slidingConnsMax {
		t.Errorf("%d connections kept, at most %d", n, slidingConnsMax)
	}
}

func TestSlidingScope(t *testing.T) {
	win := &slidingWindows{
		lists: map[string][]string{"a": {"!1:x", "!2:x"}, "b": {"!2:x", "!3:x"}},
		subs:  map[string]bool{"!4:x": true},
	}
	cases := []struct {
		name  string
		scope SlidingScope
		want  []string
	}{
		{"absent: all", SlidingScope{}, []string{"!1:x", "!2:x", "!3:x", "!4:x"}},
		{"wildcards", SlidingScope{Lists: []string{"*"}, Rooms: []string{"*"}}, []string{"!1:x", "!2:x", "!3:x", "!4:x"}},
		{"one list, no rooms", SlidingScope{Lists: []string{"b"}, Rooms: []string{}}, []string{"!2:x", "!3:x"}},
		{"no lists, one room", SlidingScope{Lists: []string{}, Rooms: []string{"!4:x"}}, []string{"!4:x"}},
		{"a list room is no subscription", SlidingScope{Lists: []string{}, Rooms: []string{"!1:x"}}, nil},
		{"unknown list", SlidingScope{Lists: []string{"c"}, Rooms: []string{}}, nil},
		{"none", SlidingScope{Lists: []string{}, Rooms: []string{}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := win.pick(c.scope)
			if len(got) != len(c.want) {
				t.Fatalf("pick = %v, want %v", got, c.want)
			}
			for _, id := range c.want {
				if !got[id] {
					t.Errorf("pick = %v, want %v", got, c.want)
				}
			}
		})
	}

	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	bad := []SlidingScope{
		{Rooms: []string{"room"}},
		{Rooms: []string{""}},
		{Lists: []string{""}},
		{Lists: []string{string(long)}},
		{Rooms: make([]string, maxSlidingSubscriptions+2)},
		{Lists: make([]string, maxSlidingLists+2)},
	}
	for i, sc := range bad {
		if me, ok := merr.As(sc.check("typing")); !ok || me.Code != "M_INVALID_PARAM" {
			t.Errorf("bad scope %d: %v, want M_INVALID_PARAM", i, sc.check("typing"))
		}
	}
	if err := (&SlidingScope{Lists: []string{"*", "all"}, Rooms: []string{"*", "!r:x"}}).check("typing"); err != nil {
		t.Errorf("good scope: %v", err)
	}
}
