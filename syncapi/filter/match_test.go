package filter

import (
	"encoding/json"
	"testing"
)

func mustMarshal(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMatchType(t *testing.T) {
	tests := []struct {
		pattern, typ string
		want         bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.room.", true},
		{"m.room.*", "m.room", false},
		{"m.room.*", "m.roomx", false},
		{"*", "", true},
		{"*", "anything", true},
		{"**", "x", true},
		{"*.member", "m.room.member", true},
		{"*.member", "m.room.members", false},
		{"m.*.member", "m.room.member", true},
		{"m.*.member", "m.member", false},
		{"m.*.*.b", "m.x.y.b", true},
		{"m.*.*.b", "m..b", false},
		{"m.*.*.b", "m...b", true},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a*b*a", "aba", true},
		{"a*b*a", "aab", false},
		{"*ab*", "xaxbx", false},
		{"*ab*", "xabx", true},
		{"", "", true},
		{"", "x", false},
	}
	for _, tt := range tests {
		if got := MatchType(tt.pattern, tt.typ); got != tt.want {
			t.Errorf("MatchType(%q, %q) = %v, want %v", tt.pattern, tt.typ, got, tt.want)
		}
		ts := newTypeSet([]string{tt.pattern})
		if got := ts.has(tt.typ); got != tt.want {
			t.Errorf("typeSet{%q}.has(%q) = %v, want %v", tt.pattern, tt.typ, got, tt.want)
		}
	}
}

func TestEventMatcher(t *testing.T) {
	tests := []struct {
		name   string
		filter EventFilter
		typ    string
		sender string
		want   bool
	}{
		{"empty matches all", EventFilter{}, "m.x", "@a:x", true},
		{"types hit", EventFilter{Types: strs("m.typing", "m.receipt")}, "m.receipt", "@a:x", true},
		{"types miss", EventFilter{Types: strs("m.typing")}, "m.receipt", "@a:x", false},
		{"empty types match none", EventFilter{Types: strs()}, "m.typing", "@a:x", false},
		{"wildcard types", EventFilter{Types: strs("m.room.*")}, "m.room.topic", "@a:x", true},
		{"not_types wins over types", EventFilter{Types: strs("m.room.*"), NotTypes: []string{"m.room.member"}}, "m.room.member", "@a:x", false},
		{"not_types wildcard wins over exact types", EventFilter{Types: strs("m.room.member"), NotTypes: []string{"m.*"}}, "m.room.member", "@a:x", false},
		{"not_types star excludes all", EventFilter{NotTypes: []string{"*"}}, "x", "@a:x", false},
		{"not_types miss", EventFilter{NotTypes: []string{"m.room.member"}}, "m.room.message", "@a:x", true},
		{"senders hit", EventFilter{Senders: strs("@a:x")}, "m.x", "@a:x", true},
		{"senders miss", EventFilter{Senders: strs("@a:x")}, "m.x", "@b:x", false},
		{"senders have no wildcards", EventFilter{Senders: strs("@*")}, "m.x", "@b:x", false},
		{"empty senders match none", EventFilter{Senders: strs()}, "m.x", "@a:x", false},
		{"not_senders wins over senders", EventFilter{Senders: strs("@a:x"), NotSenders: []string{"@a:x"}}, "m.x", "@a:x", false},
		{"types and senders both needed", EventFilter{Types: strs("m.x"), Senders: strs("@a:x")}, "m.y", "@a:x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.filter.Compile()
			if got := m.Match(tt.typ, tt.sender); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.typ, tt.sender, got, tt.want)
			}
			rf := RoomEventFilter{EventFilter: tt.filter}
			if got := rf.Compile().Match(tt.typ, tt.sender, false); got != tt.want {
				t.Errorf("RoomEventMatcher.Match(%q, %q) = %v, want %v", tt.typ, tt.sender, got, tt.want)
			}
		})
	}
}

func TestEventMatcherParts(t *testing.T) {
	f := EventFilter{Types: strs("m.presence"), NotSenders: []string{"@spam:x"}}
	m := f.Compile()
	if !m.MatchType("m.presence") || m.MatchType("m.other") {
		t.Error("MatchType ignores types")
	}
	if !m.MatchSender("@a:x") || m.MatchSender("@spam:x") {
		t.Error("MatchSender ignores not_senders")
	}
	if m.MatchesAll() {
		t.Error("MatchesAll with lists set")
	}
	if !(&EventFilter{Limit: 4}).Compile().MatchesAll() {
		t.Error("a filter with only a limit must match all")
	}
}

func TestBigSets(t *testing.T) {
	// More than smallSet entries switch to a map; behaviour is the same.
	var types, senders []string
	for i := range 50 {
		types = append(types, "t."+string(rune('a'+i%26))+string(rune('a'+i/26)))
		senders = append(senders, "@u"+string(rune('a'+i%26))+string(rune('a'+i/26))+":x")
	}
	f := EventFilter{Types: &types, NotSenders: senders}
	m := f.Compile()
	for _, ty := range types {
		if !m.Match(ty, "@ok:x") {
			t.Fatalf("type %q should match", ty)
		}
	}
	for _, s := range senders {
		if m.Match(types[0], s) {
			t.Fatalf("sender %q should be excluded", s)
		}
	}
	if m.Match("t.zz", "@ok:x") {
		t.Fatal("unknown type matched")
	}
}

func TestRoomEventMatcher(t *testing.T) {
	tests := []struct {
		name   string
		filter RoomEventFilter
		room   string
		want   bool
	}{
		{"no lists: all rooms", RoomEventFilter{}, "!a:x", true},
		{"rooms hit", RoomEventFilter{Rooms: strs("!a:x")}, "!a:x", true},
		{"rooms miss", RoomEventFilter{Rooms: strs("!a:x")}, "!b:x", false},
		{"empty rooms: none", RoomEventFilter{Rooms: strs()}, "!a:x", false},
		{"not_rooms wins over rooms", RoomEventFilter{Rooms: strs("!a:x"), NotRooms: []string{"!a:x"}}, "!a:x", false},
		{"not_rooms miss", RoomEventFilter{NotRooms: []string{"!a:x"}}, "!b:x", true},
	}
	for _, tt := range tests {
		if got := tt.filter.Compile().AllowsRoom(tt.room); got != tt.want {
			t.Errorf("%s: AllowsRoom(%q) = %v, want %v", tt.name, tt.room, got, tt.want)
		}
	}
}

func TestContainsURL(t *testing.T) {
	tests := []struct {
		containsURL *bool
		hasURL      bool
		want        bool
	}{
		{nil, true, true},
		{nil, false, true},
		{boolp(true), true, true},
		{boolp(true), false, false},
		{boolp(false), true, false},
		{boolp(false), false, true},
	}
	for _, tt := range tests {
		f := RoomEventFilter{ContainsURL: tt.containsURL}
		m := f.Compile()
		if got := m.Match("m.room.message", "@a:x", tt.hasURL); got != tt.want {
			t.Errorf("contains_url=%v hasURL=%v: Match = %v, want %v", fmtBool(tt.containsURL), tt.hasURL, got, tt.want)
		}
		if m.UsesURL() != (tt.containsURL != nil) {
			t.Errorf("contains_url=%v: UsesURL = %v", fmtBool(tt.containsURL), m.UsesURL())
		}
	}
	// contains_url combines with the type lists.
	f := RoomEventFilter{EventFilter: EventFilter{Types: strs("m.room.message")}, ContainsURL: boolp(true)}
	if f.Compile().Match("m.room.topic", "@a:x", true) {
		t.Error("type list ignored when contains_url is set")
	}
}

func fmtBool(b *bool) string {
	if b == nil {
		return "absent"
	}
	if *b {
		return "true"
	}
	return "false"
}

func TestFilterCompile(t *testing.T) {
	f, err := Parse([]byte(specExample))
	if err != nil {
		t.Fatal(err)
	}
	m := f.Compile()
	checks := []struct {
		name string
		got  bool
		want bool
	}{
		{"presence type", m.Presence.Match("m.presence", "@bob:example.com"), true},
		{"presence not_senders", m.Presence.Match("m.presence", "@alice:example.com"), false},
		{"account data matches all", m.AccountData.MatchesAll(), true},
		{"room filter: all rooms", m.Room.AllowsRoom("!726s6s6q:example.com"), true},
		{"timeline not_rooms", m.Room.Timeline.AllowsRoom("!726s6s6q:example.com"), false},
		{"timeline other room", m.Room.Timeline.AllowsRoom("!other:example.com"), true},
		{"timeline message", m.Room.Timeline.Match("m.room.message", "@bob:example.com", false), true},
		{"timeline spam", m.Room.Timeline.Match("m.room.message", "@spam:example.com", false), false},
		{"timeline other type", m.Room.Timeline.Match("m.room.topic", "@bob:example.com", false), false},
		{"state wildcard", m.Room.State.Match("m.room.topic", "@bob:example.com", false), true},
		{"state other namespace", m.Room.State.Match("org.example.x", "@bob:example.com", false), false},
		{"ephemeral typing", m.Room.Ephemeral.MatchType("m.typing"), true},
		{"ephemeral presence", m.Room.Ephemeral.MatchType("m.presence"), false},
		{"federation format", m.FederationFormat(), false},
		{"include leave", m.Room.IncludeLeave(), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if got := m.Room.Timeline.Limit(DefaultTimelineLimit, MaxTimelineLimit); got != 10 {
		t.Errorf("timeline limit = %d", got)
	}
	if got := m.Room.State.Limit(DefaultTimelineLimit, MaxTimelineLimit); got != DefaultTimelineLimit {
		t.Errorf("state limit default = %d", got)
	}
	if got := m.EventFields(); len(got) != 3 {
		t.Errorf("EventFields = %v", got)
	}
	// The matcher does not alias the filter.
	(*f.Room.Timeline.Types)[0] = "changed"
	f.EventFields[0] = "changed"
	if !m.Room.Timeline.Match("m.room.message", "@bob:example.com", false) || m.EventFields()[0] != "type" {
		t.Error("matcher changed with the filter")
	}

	lf, err := Parse([]byte(`{"event_format":"federation","room":{"rooms":["!a:x","!b:x"],"not_rooms":["!b:x"],
		"include_leave":true,"state":{"lazy_load_members":true,"include_redundant_members":true},
		"timeline":{"include_redundant_members":true,"unread_thread_notifications":true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	lm := lf.Compile()
	if !lm.FederationFormat() || !lm.Room.IncludeLeave() {
		t.Error("format or include_leave lost")
	}
	if !lm.Room.AllowsRoom("!a:x") || lm.Room.AllowsRoom("!b:x") || lm.Room.AllowsRoom("!c:x") {
		t.Error("room filter rooms/not_rooms wrong")
	}
	if !lm.Room.State.LazyLoadMembers() || !lm.Room.State.IncludeRedundantMembers() {
		t.Error("state lazy loading lost")
	}
	if lm.Room.Timeline.IncludeRedundantMembers() {
		t.Error("include_redundant_members applies only with lazy_load_members")
	}
	if !lm.Room.Timeline.UnreadThreadNotifications() {
		t.Error("unread_thread_notifications lost")
	}
}

func TestNilMatchers(t *testing.T) {
	var em *EventMatcher
	var rm *RoomEventMatcher
	var room *RoomMatcher
	var m *Matcher
	if !em.Match("a", "b") || !em.MatchType("a") || !em.MatchSender("b") || !em.MatchesAll() {
		t.Error("nil EventMatcher must match all")
	}
	if !rm.Match("a", "b", true) || !rm.AllowsRoom("!r") || !rm.MatchType("a") || !rm.MatchesAll() || rm.UsesURL() {
		t.Error("nil RoomEventMatcher must match all")
	}
	if rm.LazyLoadMembers() || rm.IncludeRedundantMembers() || rm.UnreadThreadNotifications() {
		t.Error("nil RoomEventMatcher flags must be false")
	}
	if em.Limit(10, 100) != 10 || rm.Limit(10, 100) != 10 {
		t.Error("nil matcher limit must be the default")
	}
	if !room.AllowsRoom("!r") || room.IncludeLeave() || m.FederationFormat() || m.EventFields() != nil {
		t.Error("nil RoomMatcher/Matcher defaults wrong")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	f, err := Parse([]byte(`{"room":{"not_rooms":["!x:y"],"timeline":{"types":["m.room.*","m.sticker","a","b","c","d","e","f","g","h","i"],
		"not_types":["m.room.*.secret"],"not_senders":["@spam:x"],"contains_url":false,"rooms":["!a:x","!b:x"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	m := f.Compile()
	tl := &m.Room.Timeline
	typ, sender, room := "m.room.message", "@bob:x", "!a:x"
	n := testing.AllocsPerRun(1000, func() {
		_ = m.Room.AllowsRoom(room) && tl.AllowsRoom(room) && tl.Match(typ, sender, false) && tl.MatchType("m.sticker")
	})
	if n != 0 {
		t.Fatalf("Match allocates %v times per call", n)
	}
}

func BenchmarkRoomEventMatch(b *testing.B) {
	f, err := Parse([]byte(`{"room":{"timeline":{"types":["m.room.message","m.room.encrypted","m.sticker","m.room.*"],
		"not_types":["m.room.*.secret"],"not_senders":["@spam:x","@spam2:x"],"rooms":["!a:x","!b:x"]}}}`))
	if err != nil {
		b.Fatal(err)
	}
	tl := &f.Compile().Room.Timeline
	b.ReportAllocs()
	for b.Loop() {
		if !tl.AllowsRoom("!b:x") || !tl.Match("m.room.topic", "@bob:x", false) {
			b.Fatal("no match")
		}
	}
}

func TestMatchesNone(t *testing.T) {
	none, some := []string{}, []string{"m.room.message"}
	for _, c := range []struct {
		name string
		f    RoomEventFilter
		want bool
	}{
		{"no lists", RoomEventFilter{}, false},
		{"empty types", RoomEventFilter{EventFilter: EventFilter{Types: &none}}, true},
		{"empty senders", RoomEventFilter{EventFilter: EventFilter{Senders: &none}}, true},
		{"a type", RoomEventFilter{EventFilter: EventFilter{Types: &some}}, false},
		{"only not_types", RoomEventFilter{EventFilter: EventFilter{NotTypes: some}}, false},
	} {
		m := c.f.Compile()
		if got := m.MatchesNone(); got != c.want {
			t.Errorf("%s: MatchesNone %v, want %v", c.name, got, c.want)
		}
		if c.want && m.Match("m.room.message", "@a:x", false) {
			t.Errorf("%s: MatchesNone but an event matches", c.name)
		}
	}
	var nilM *RoomEventMatcher
	if nilM.MatchesNone() {
		t.Error("a nil matcher matches none")
	}
}
