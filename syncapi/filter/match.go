package filter

import "strings"

// The matchers below are built once per filter by Compile and then only
// read, so one matcher may serve many goroutines. Their methods do not
// allocate. A nil matcher matches everything.

// smallSet is the size up to which a set is scanned rather than hashed.
const smallSet = 8

// stringSet is a set of exact strings.
type stringSet struct {
	list []string            // when len <= smallSet
	m    map[string]struct{} // otherwise
}

func newStringSet(l []string) stringSet {
	if len(l) <= smallSet {
		return stringSet{list: append([]string(nil), l...)}
	}
	m := make(map[string]struct{}, len(l))
	for _, s := range l {
		m[s] = struct{}{}
	}
	return stringSet{m: m}
}

func (s *stringSet) has(v string) bool {
	if s.m != nil {
		_, ok := s.m[v]
		return ok
	}
	for _, x := range s.list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *stringSet) empty() bool { return len(s.list) == 0 && len(s.m) == 0 }

// glob is an event type pattern with at least one '*', split at the stars:
// a match starts with prefix, ends with suffix and holds middle in order
// in between.
type glob struct {
	prefix, suffix string
	middle         []string
}

func newGlob(p string) glob {
	parts := strings.Split(p, "*")
	g := glob{prefix: parts[0], suffix: parts[len(parts)-1]}
	for _, m := range parts[1 : len(parts)-1] {
		if m != "" {
			g.middle = append(g.middle, m)
		}
	}
	return g
}

func (g *glob) match(s string) bool {
	if len(s) < len(g.prefix)+len(g.suffix) ||
		!strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	rest := s[len(g.prefix) : len(s)-len(g.suffix)]
	for _, m := range g.middle {
		i := strings.Index(rest, m)
		if i < 0 {
			return false
		}
		rest = rest[i+len(m):]
	}
	return true
}

// typeSet is a set of event type patterns: exact types and '*' globs.
type typeSet struct {
	exact stringSet
	globs []glob
	any   bool // a pattern made only of stars
}

func newTypeSet(patterns []string) typeSet {
	var exact []string
	var t typeSet
	for _, p := range patterns {
		switch {
		case !strings.Contains(p, "*"):
			exact = append(exact, p)
		case strings.Trim(p, "*") == "":
			t.any = true
		default:
			t.globs = append(t.globs, newGlob(p))
		}
	}
	t.exact = newStringSet(exact)
	return t
}

func (t *typeSet) has(typ string) bool {
	if t.any || t.exact.has(typ) {
		return true
	}
	for i := range t.globs {
		if t.globs[i].match(typ) {
			return true
		}
	}
	return false
}

func (t *typeSet) empty() bool { return !t.any && t.exact.empty() && len(t.globs) == 0 }

// MatchType reports whether typ matches the event type pattern, where
// '*' matches any sequence of characters (also an empty one). Prefer a
// compiled matcher in loops.
func MatchType(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	g := newGlob(pattern)
	return g.match(typ)
}

// typeRule is an allow list of type patterns (absent in the filter:
// everything) with a deny list that wins over it.
type typeRule struct {
	set     bool // an allow list was given
	denyAny bool // the deny list is non-empty
	allow   typeSet
	deny    typeSet
}

func newTypeRule(allow *[]string, deny []string) typeRule {
	r := typeRule{deny: newTypeSet(deny)}
	if allow != nil {
		r.set = true
		r.allow = newTypeSet(*allow)
	}
	r.denyAny = !r.deny.empty()
	return r
}

func (r *typeRule) allows(typ string) bool {
	if r.denyAny && r.deny.has(typ) {
		return false
	}
	return !r.set || r.allow.has(typ)
}

func (r *typeRule) all() bool { return !r.set && !r.denyAny }

// idRule is typeRule for exact IDs (senders, rooms): no wildcards.
type idRule struct {
	set     bool
	denyAny bool
	allow   stringSet
	deny    stringSet
}

func newIDRule(allow *[]string, deny []string) idRule {
	r := idRule{deny: newStringSet(deny)}
	if allow != nil {
		r.set = true
		r.allow = newStringSet(*allow)
	}
	r.denyAny = !r.deny.empty()
	return r
}

func (r *idRule) allows(id string) bool {
	if r.denyAny && r.deny.has(id) {
		return false
	}
	return !r.set || r.allow.has(id)
}

func (r *idRule) all() bool { return !r.set && !r.denyAny }

// EventMatcher is a compiled EventFilter.
type EventMatcher struct {
	limit   int
	types   typeRule
	senders idRule
	all     bool
}

// Compile builds the matcher of f.
func (f *EventFilter) Compile() *EventMatcher {
	m := &EventMatcher{
		limit:   f.Limit,
		types:   newTypeRule(f.Types, f.NotTypes),
		senders: newIDRule(f.Senders, f.NotSenders),
	}
	m.all = m.types.all() && m.senders.all()
	return m
}

// Match reports whether an event of this type and sender passes: its type
// matches types (if given) and no not_types pattern, and its sender is in
// senders (if given) and not in not_senders.
func (m *EventMatcher) Match(eventType, sender string) bool {
	if m == nil || m.all {
		return true
	}
	return m.types.allows(eventType) && m.senders.allows(sender)
}

// MatchType applies only the types and not_types lists (for events
// without a sender: ephemeral and account data).
func (m *EventMatcher) MatchType(eventType string) bool {
	return m == nil || m.all || m.types.allows(eventType)
}

// MatchSender applies only the senders and not_senders lists (presence:
// the sender is the user whose presence it is).
func (m *EventMatcher) MatchSender(sender string) bool {
	return m == nil || m.all || m.senders.allows(sender)
}

// MatchesAll reports whether the matcher lets every event through, so a
// caller can skip filtering altogether.
func (m *EventMatcher) MatchesAll() bool { return m == nil || m.all }

// MatchesNone reports whether the matcher lets no event through (an empty
// types or senders list), so a caller need not look at any.
func (m *EventMatcher) MatchesNone() bool {
	return m != nil && ((m.types.set && m.types.allow.empty()) || (m.senders.set && m.senders.allow.empty()))
}

// Limit returns the filter's limit, or def when none was set, clamped to
// 1..max (see EffectiveLimit).
func (m *EventMatcher) Limit(def, max int) int {
	if m == nil {
		return EffectiveLimit(0, def, max)
	}
	return EffectiveLimit(m.limit, def, max)
}

// RoomEventMatcher is a compiled RoomEventFilter (or StateFilter).
type RoomEventMatcher struct {
	ev          EventMatcher
	rooms       idRule
	containsURL int8 // 0: not considered, 1: url required, -1: url excluded
	all         bool

	lazy, redundant, threads bool
}

// Compile builds the matcher of f.
func (f *RoomEventFilter) Compile() *RoomEventMatcher {
	m := &RoomEventMatcher{
		ev:        *f.EventFilter.Compile(),
		rooms:     newIDRule(f.Rooms, f.NotRooms),
		lazy:      f.LazyLoadMembers,
		redundant: f.IncludeRedundantMembers,
		threads:   f.UnreadThreadNotifications,
	}
	if f.ContainsURL != nil {
		m.containsURL = -1
		if *f.ContainsURL {
			m.containsURL = 1
		}
	}
	m.all = m.ev.all && m.containsURL == 0
	return m
}

// Compile builds the matcher of f.
func (f *StateFilter) Compile() *RoomEventMatcher { return (*RoomEventFilter)(f).Compile() }

// Match reports whether a room event passes the type, sender and
// contains_url parts of the filter. hasURL tells whether the event's
// content has a string "url" (see HasURL). The room lists are checked
// separately with AllowsRoom.
func (m *RoomEventMatcher) Match(eventType, sender string, hasURL bool) bool {
	if m == nil || m.all {
		return true
	}
	if m.containsURL != 0 && hasURL != (m.containsURL > 0) {
		return false
	}
	return m.ev.Match(eventType, sender)
}

// MatchType applies only the types and not_types lists.
func (m *RoomEventMatcher) MatchType(eventType string) bool {
	return m == nil || m.ev.MatchType(eventType)
}

// AllowsRoom reports whether roomID passes rooms and not_rooms (not_rooms
// wins).
func (m *RoomEventMatcher) AllowsRoom(roomID string) bool {
	return m == nil || m.rooms.allows(roomID)
}

// MatchesAll reports whether Match is true for every event (rooms aside).
func (m *RoomEventMatcher) MatchesAll() bool { return m == nil || m.all }

// MatchesNone reports whether Match is false for every event.
func (m *RoomEventMatcher) MatchesNone() bool { return m != nil && m.ev.MatchesNone() }

// UsesURL reports whether Match looks at hasURL, so a caller can skip
// computing it.
func (m *RoomEventMatcher) UsesURL() bool { return m != nil && m.containsURL != 0 }

// Limit returns the filter's limit, or def when none was set, clamped to
// 1..max (see EffectiveLimit).
func (m *RoomEventMatcher) Limit(def, max int) int {
	if m == nil {
		return EffectiveLimit(0, def, max)
	}
	return m.ev.Limit(def, max)
}

// LazyLoadMembers reports lazy_load_members.
func (m *RoomEventMatcher) LazyLoadMembers() bool { return m != nil && m.lazy }

// IncludeRedundantMembers reports include_redundant_members; it is only
// true together with lazy_load_members, as the spec says it does not
// apply otherwise.
func (m *RoomEventMatcher) IncludeRedundantMembers() bool { return m != nil && m.lazy && m.redundant }

// UnreadThreadNotifications reports unread_thread_notifications.
func (m *RoomEventMatcher) UnreadThreadNotifications() bool { return m != nil && m.threads }

// RoomMatcher is a compiled RoomFilter.
type RoomMatcher struct {
	rooms        idRule
	includeLeave bool

	Ephemeral   RoomEventMatcher
	State       RoomEventMatcher
	Timeline    RoomEventMatcher
	AccountData RoomEventMatcher
}

// Compile builds the matcher of f.
func (f *RoomFilter) Compile() *RoomMatcher {
	return &RoomMatcher{
		rooms:        newIDRule(f.Rooms, f.NotRooms),
		includeLeave: f.IncludeLeave,
		Ephemeral:    *f.Ephemeral.Compile(),
		State:        *f.State.Compile(),
		Timeline:     *f.Timeline.Compile(),
		AccountData:  *f.AccountData.Compile(),
	}
}

// AllowsRoom reports whether roomID passes the room filter's rooms and
// not_rooms (not_rooms wins). This is applied before the section filters,
// which may restrict rooms further with their own AllowsRoom.
func (m *RoomMatcher) AllowsRoom(roomID string) bool {
	return m == nil || m.rooms.allows(roomID)
}

// IncludeLeave reports include_leave.
func (m *RoomMatcher) IncludeLeave() bool { return m != nil && m.includeLeave }

// Matcher is a compiled Filter.
type Matcher struct {
	Presence    EventMatcher
	AccountData EventMatcher
	Room        RoomMatcher

	federation bool
	fields     []string
}

// Compile builds the matcher of f. The matcher does not share memory with
// f, so f may change afterwards.
func (f *Filter) Compile() *Matcher {
	return &Matcher{
		Presence:    *f.Presence.Compile(),
		AccountData: *f.AccountData.Compile(),
		Room:        *f.Room.Compile(),
		federation:  f.FederationFormat(),
		fields:      append([]string(nil), f.EventFields...),
	}
}

// FederationFormat reports whether events go out in the federation format.
func (m *Matcher) FederationFormat() bool { return m != nil && m.federation }

// EventFields returns the event_fields list (nil: all fields). The caller
// must not modify it.
func (m *Matcher) EventFields() []string {
	if m == nil {
		return nil
	}
	return m.fields
}
