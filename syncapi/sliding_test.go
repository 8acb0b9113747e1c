package syncapi

import (
	"encoding/json"
	"fmt"
	"slices"
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
			r := newSlidingReq(c.req)
			if got := r.covers(c.key, me) || r.lazyMember(c.key, me, senders); got != c.want {
				t.Errorf("required_state %v asks for %v: %v, want %v", c.req, c.key, got, c.want)
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
	p3b := c.put(key, &slidingSnap{}, false)
	for _, p := range []string{p2, p3, p3b} {
		if _, err := c.get(key, p); err != nil {
			t.Errorf("pos %s: %v", p, err)
		}
	}
	unknown(p1) // only the last three are kept
	if _, err := c.get(slidingKey("@a:x", "DEV", "other"), p3); err == nil {
		t.Error("a pos of another connection is known")
	}
	// A new connection on the same key forgets the old positions.
	p4 := c.put(key, &slidingSnap{}, true)
	unknown(p3)
	unknown(p3b)
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

func TestSlidingReqCovers(t *testing.T) {
	me := "@me:x"
	a := newSlidingReq([][]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}, {"m.room.name", ""}, {"m.room.member", "$ME"}})
	b := newSlidingReq([][]string{{"m.room.member", "$ME"}, {"m.room.member", "$LAZY"}, {"m.room.name", ""}})
	if a.key != b.key || !a.lazy || len(a.entries) != 3 {
		t.Errorf("canonical forms differ: %q (%d entries, lazy %v) and %q", a.key, len(a.entries), a.lazy, b.key)
	}
	reqs := slidingReqs{}
	r1, r2 := reqs.get([][]string{{"a", ""}, {"b", ""}}), reqs.get([][]string{{"b", ""}, {"a", ""}})
	if r1 != r2 {
		t.Error("one required_state interned twice")
	}
	// The union of a list's and a subscription's.
	u := reqs.union(r1, reqs.get([][]string{{"c", ""}, {"a", ""}}))
	if u != reqs.get([][]string{{"a", ""}, {"b", ""}, {"c", ""}}) || reqs.union(nil, r1) != r1 || reqs.union(r1, r1) != r1 {
		t.Errorf("union: %q", u.key)
	}
	cases := []struct {
		name string
		req  *slidingReq
		key  [2]string
		want bool
	}{
		{"exact", a, [2]string{"m.room.name", ""}, true},
		{"$ME", a, [2]string{"m.room.member", me}, true},
		{"$LAZY is no cover", a, [2]string{"m.room.member", "@bob:x"}, false},
		{"nil covers nothing", nil, [2]string{"m.room.name", ""}, false},
		{"* *", newSlidingReq([][]string{{"*", "*"}}), [2]string{"m.room.topic", ""}, true},
	}
	for _, c := range cases {
		if got := c.req.covers(c.key, me); got != c.want {
			t.Errorf("%s: covers %v = %v, want %v", c.name, c.key, got, c.want)
		}
	}
}

func TestSlidingRememberLazy(t *testing.T) {
	had := []string{"@a:x", "@b:x", "@c:x"}
	cases := []struct {
		name         string
		sent, forget []string
		senders      map[string]bool
		want         []string
	}{
		{"new member last", []string{"@d:x"}, nil, map[string]bool{"@d:x": true}, []string{"@a:x", "@b:x", "@c:x", "@d:x"}},
		{"senders move last", []string{"@d:x"}, nil, map[string]bool{"@a:x": true, "@d:x": true}, []string{"@b:x", "@c:x", "@a:x", "@d:x"}},
		{"one sent again once", []string{"@b:x"}, nil, nil, []string{"@a:x", "@c:x", "@b:x"}},
		{"changed, not sent: forgotten", nil, []string{"@a:x"}, nil, []string{"@b:x", "@c:x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := rememberLazy(had, slices.Clone(c.sent), c.forget, c.senders)
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			if !slices.Equal(had, []string{"@a:x", "@b:x", "@c:x"}) {
				t.Errorf("the remembered list changed in place: %v", had)
			}
		})
	}
	// Bounded: the least recently sent go.
	var many []string
	for i := range slidingLazyRoom + 10 {
		many = append(many, fmt.Sprintf("@u%03d:x", i))
	}
	got := rememberLazy(nil, many, nil, nil)
	if len(got) != slidingLazyRoom || got[0] != "@u010:x" {
		t.Errorf("%d remembered, first %s; want %d from @u010:x", len(got), got[0], slidingLazyRoom)
	}
}

func TestSlidingTrimLazy(t *testing.T) {
	snap := &slidingSnap{sent: map[string]slidingSent{}}
	per := slidingLazyConn / 4
	members := make([]string, per)
	for i := range 6 {
		snap.sent[fmt.Sprintf("!r%d:x", i)] = slidingSent{pos: int64(i), lazy: members}
	}
	snap.trimLazy()
	total := 0
	for id, v := range snap.sent {
		total += len(v.lazy)
		if (v.pos < 2) != (v.lazy == nil) {
			t.Errorf("%s (pos %d) kept %d members: the oldest rooms forget first", id, v.pos, len(v.lazy))
		}
	}
	if total > slidingLazyConn {
		t.Errorf("%d members remembered, at most %d", total, slidingLazyConn)
	}
}
