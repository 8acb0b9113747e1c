package push

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// maxEntries bounds the unread notifications kept one by one per user and
// room; older ones are folded into per-thread counters. It also bounds what
// a checkpoint writes for one user and room.
const maxEntries = 128

// entry is one unread notification.
type entry struct {
	pos       int64
	thread    string
	highlight bool
	call      bool // a call invite: a missed call while unread
}

// flags is how an entry's highlight and call are stored: bit 0 the
// highlight, bit 1 the call (records from before calls were counted have
// 0 or 1).
func (e entry) flags() int {
	f := 0
	if e.highlight {
		f |= 1
	}
	if e.call {
		f |= 2
	}
	return f
}

// folded counts the unread notifications of one thread ("" for the main
// timeline) folded out of entries: all at or before pos.
type folded struct {
	thread string
	n, h   int
	pos    int64
}

// roomUnread is a user's unread notifications in one room, by position.
type roomUnread struct {
	entries []entry  // ascending pos, all after every folded pos
	folded  []folded // older notifications, by thread
	// calls counts the entries that are call invites. Folding forgets
	// that a notification was a call: a call 128 notifications back in a
	// room is no longer counted as missed.
	calls int
}

// countCalls sets calls from the entries.
func (ru *roomUnread) countCalls() {
	ru.calls = 0
	for _, e := range ru.entries {
		if e.call {
			ru.calls++
		}
	}
}

func (ru *roomUnread) empty() bool { return len(ru.entries) == 0 && len(ru.folded) == 0 }

// oldest is the position at or before which notifications were folded.
func (ru *roomUnread) foldedUpTo() int64 {
	var p int64
	for _, f := range ru.folded {
		p = max(p, f.pos)
	}
	return p
}

func (ru *roomUnread) fold(e entry) {
	for i := range ru.folded {
		if f := &ru.folded[i]; f.thread == e.thread {
			f.n++
			if e.highlight {
				f.h++
			}
			f.pos = e.pos
			return
		}
	}
	f := folded{thread: e.thread, n: 1, pos: e.pos}
	if e.highlight {
		f.h = 1
	}
	ru.folded = append(ru.folded, f)
}

type userRoom struct{ user, room string }

// counts holds every user's unread notifications in memory: /sync reads them
// without a query. It remembers which (user, room) changed since the last
// checkpoint.
type counts struct {
	mu     sync.Mutex
	byUser map[string]map[string]*roomUnread
	dirty  map[userRoom]struct{}
}

func newCounts() *counts {
	return &counts{byUser: make(map[string]map[string]*roomUnread), dirty: make(map[userRoom]struct{})}
}

func (c *counts) roomOf(user, room string) *roomUnread {
	rooms := c.byUser[user]
	if rooms == nil {
		rooms = make(map[string]*roomUnread)
		c.byUser[user] = rooms
	}
	ru := rooms[room]
	if ru == nil {
		ru = &roomUnread{}
		rooms[room] = ru
	}
	return ru
}

func (c *counts) add(user, room string, e entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ru := c.roomOf(user, room)
	if e.pos <= ru.foldedUpTo() {
		return // counted already (an event evaluated again after a restart)
	}
	// Entries arrive in position order.
	i := len(ru.entries)
	for i > 0 && ru.entries[i-1].pos > e.pos {
		i--
	}
	if i > 0 && ru.entries[i-1].pos == e.pos {
		return
	}
	ru.entries = append(ru.entries, entry{})
	copy(ru.entries[i+1:], ru.entries[i:])
	ru.entries[i] = e
	if e.call {
		ru.calls++
	}
	if len(ru.entries) > maxEntries {
		if ru.entries[0].call {
			ru.calls--
		}
		ru.fold(ru.entries[0])
		clear(ru.entries[:1])
		ru.entries = ru.entries[1:]
	}
	c.dirty[userRoom{user, room}] = struct{}{}
}

// Thread selectors of a receipt.
const (
	threadAll  = ""     // an unthreaded receipt: every thread
	threadMain = "main" // the main timeline only
)

func covers(sel, thread string) bool {
	return sel == threadAll || (sel == threadMain && thread == "") || sel == thread
}

// read marks the user's notifications in the room up to pos read: all of
// them (threadAll), the main timeline's (threadMain) or one thread's. It
// tells whether anything was unread. Folded notifications are read when
// the receipt covers the newest of them.
func (c *counts) read(user, room, thread string, pos int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ru := c.byUser[user][room]
	if ru == nil {
		return false
	}
	before := len(ru.folded) + len(ru.entries)
	ru.folded = slices.DeleteFunc(ru.folded, func(f folded) bool { return f.pos <= pos && covers(thread, f.thread) })
	ru.entries = slices.DeleteFunc(ru.entries, func(e entry) bool { return e.pos <= pos && covers(thread, e.thread) })
	changed := len(ru.folded)+len(ru.entries) < before
	if ru.calls > 0 {
		ru.countCalls()
	}
	if ru.empty() {
		delete(c.byUser[user], room)
		if len(c.byUser[user]) == 0 {
			delete(c.byUser, user)
		}
	}
	if changed {
		c.dirty[userRoom{user, room}] = struct{}{}
	}
	return changed
}

// isUnread tells whether the user's notification at pos in the room is unread.
func (c *counts) isUnread(user, room string, pos int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ru := c.byUser[user][room]
	if ru == nil {
		return false
	}
	for _, e := range ru.entries {
		if e.pos == pos {
			return true
		}
	}
	for _, f := range ru.folded {
		if pos <= f.pos {
			return true // folded: only the counts are known
		}
	}
	return false
}

// hasUnread tells whether the user has unread notifications in the room.
func (c *counts) hasUnread(user, room string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.byUser[user][room]
	return ok
}

// total returns the user's unread notification and highlight counts in a room.
func (c *counts) total(user, room string) (n, h int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ru := c.byUser[user][room]
	if ru == nil {
		return 0, 0
	}
	for _, f := range ru.folded {
		n += f.n
		h += f.h
	}
	for _, e := range ru.entries {
		n++
		if e.highlight {
			h++
		}
	}
	return n, h
}

// byThread calls fn with the counts of the main timeline ("", always) and of
// each thread with unread notifications.
func (c *counts) byThread(user, room string, fn func(thread string, n, h int)) {
	c.mu.Lock()
	threads := map[string][2]int{"": {}}
	if ru := c.byUser[user][room]; ru != nil {
		for _, f := range ru.folded {
			t := threads[f.thread]
			threads[f.thread] = [2]int{t[0] + f.n, t[1] + f.h}
		}
		for _, e := range ru.entries {
			hl := 0
			if e.highlight {
				hl = 1
			}
			t := threads[e.thread]
			threads[e.thread] = [2]int{t[0] + 1, t[1] + hl}
		}
	}
	c.mu.Unlock()
	m := threads[""]
	fn("", m[0], m[1])
	for t, v := range threads {
		if t != "" {
			fn(t, v[0], v[1])
		}
	}
}

// badge returns the counts sent to push gateways: the user's rooms with
// unread notifications, and their unread call invites (missed calls).
func (c *counts) badge(user string) (rooms, missedCalls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ru := range c.byUser[user] {
		missedCalls += ru.calls
	}
	return len(c.byUser[user]), missedCalls
}

// unreadRecord is the stored form of a roomUnread: entries as
// [pos, flags (see entry.flags), thread] and folded counters as
// [thread, n, h, pos].
type unreadRecord struct {
	E [][3]any `json:"e,omitempty"`
	F [][4]any `json:"f,omitempty"`
}

// snapshot is the state of one user's unread notifications in one room;
// data nil means none (the stored row is deleted).
type snapshot struct {
	user, room string
	data       []byte
}

// takeDirty returns the records of the (user, room) pairs changed since the
// last call, and forgets that they changed.
func (c *counts) takeDirty() []snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]snapshot, 0, len(c.dirty))
	for k := range c.dirty {
		s := snapshot{user: k.user, room: k.room}
		if ru := c.byUser[k.user][k.room]; ru != nil {
			var rec unreadRecord
			for _, e := range ru.entries {
				rec.E = append(rec.E, [3]any{e.pos, e.flags(), e.thread})
			}
			for _, f := range ru.folded {
				rec.F = append(rec.F, [4]any{f.thread, f.n, f.h, f.pos})
			}
			s.data, _ = json.Marshal(rec) // numbers and strings only
		}
		out = append(out, s)
	}
	clear(c.dirty)
	return out
}

// markDirty makes the next takeDirty include every pair loaded so far.
func (c *counts) markAllDirty() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u, rooms := range c.byUser {
		for r := range rooms {
			c.dirty[userRoom{u, r}] = struct{}{}
		}
	}
}

// load sets a user's unread notifications in a room from a stored record.
// threads interns the thread IDs.
func (c *counts) load(user, room string, data []byte, threads map[string]string) error {
	var rec struct {
		E [][3]json.RawMessage `json:"e"`
		F [][4]json.RawMessage `json:"f"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("unread of %s in %s: %w", user, room, err)
	}
	intern := func(t string) string {
		if t == "" {
			return ""
		}
		if c, ok := threads[t]; ok {
			return c
		}
		threads[t] = t
		return t
	}
	ru := &roomUnread{}
	for _, e := range rec.E {
		var en entry
		var flags int
		if json.Unmarshal(e[0], &en.pos) != nil || json.Unmarshal(e[1], &flags) != nil || json.Unmarshal(e[2], &en.thread) != nil {
			return fmt.Errorf("unread of %s in %s: bad entry %s", user, room, e)
		}
		en.highlight, en.call = flags&1 != 0, flags&2 != 0
		en.thread = intern(en.thread)
		ru.entries = append(ru.entries, en)
	}
	for _, f := range rec.F {
		var fo folded
		if json.Unmarshal(f[0], &fo.thread) != nil || json.Unmarshal(f[1], &fo.n) != nil || json.Unmarshal(f[2], &fo.h) != nil || json.Unmarshal(f[3], &fo.pos) != nil {
			return fmt.Errorf("unread of %s in %s: bad folded count %s", user, room, f)
		}
		fo.thread = intern(fo.thread)
		ru.folded = append(ru.folded, fo)
	}
	ru.countCalls()
	if ru.empty() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rooms := c.byUser[user]
	if rooms == nil {
		rooms = make(map[string]*roomUnread)
		c.byUser[user] = rooms
	}
	rooms[room] = ru
	return nil
}
