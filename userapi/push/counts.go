package push

import "sync"

// maxEntries bounds the unread notifications kept one by one per user and
// room; older ones are folded into the overflow counters.
const maxEntries = 10000

// entry is one unread notification.
type entry struct {
	pos       int64
	thread    string
	highlight bool
}

// roomUnread is a user's unread notifications in one room, by position.
type roomUnread struct {
	entries []entry // ascending pos
	// Notifications folded out of entries (all older than entries[0]),
	// counted in the main timeline.
	overNotif, overHigh int
	overPos             int64
}

func (ru *roomUnread) empty() bool { return len(ru.entries) == 0 && ru.overNotif == 0 }

// counts holds every user's unread notifications in memory: /sync reads them
// without a query.
type counts struct {
	mu     sync.Mutex
	byUser map[string]map[string]*roomUnread
}

func newCounts() *counts { return &counts{byUser: make(map[string]map[string]*roomUnread)} }

func (c *counts) add(user, room string, e entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	// Entries arrive in position order, except when loading from the database.
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
	if len(ru.entries) > maxEntries {
		old := ru.entries[0]
		ru.overNotif++
		if old.highlight {
			ru.overHigh++
		}
		ru.overPos = old.pos
		ru.entries = ru.entries[1:]
	}
}

// Thread selectors of a receipt.
const (
	threadAll  = ""     // an unthreaded receipt: every thread
	threadMain = "main" // the main timeline only
)

// read marks the user's notifications in the room up to pos read: all of
// them (threadAll), the main timeline's (threadMain) or one thread's. It
// tells whether anything was unread.
func (c *counts) read(user, room, thread string, pos int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ru := c.byUser[user][room]
	if ru == nil {
		return false
	}
	changed := false
	if ru.overNotif > 0 && thread != "" && thread != threadMain {
		// threaded receipts leave the folded (main timeline) ones
	} else if ru.overNotif > 0 && pos >= ru.overPos {
		ru.overNotif, ru.overHigh, ru.overPos = 0, 0, 0
		changed = true
	}
	kept := ru.entries[:0]
	for _, e := range ru.entries {
		if e.pos <= pos && (thread == threadAll || (thread == threadMain && e.thread == "") || e.thread == thread) {
			changed = true
			continue
		}
		kept = append(kept, e)
	}
	clear(ru.entries[len(kept):])
	ru.entries = kept
	if ru.empty() {
		delete(c.byUser[user], room)
		if len(c.byUser[user]) == 0 {
			delete(c.byUser, user)
		}
	}
	return changed
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
	n, h = ru.overNotif, ru.overHigh
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
	ru := c.byUser[user][room]
	var mainN, mainH int
	var threads map[string][2]int
	if ru != nil {
		mainN, mainH = ru.overNotif, ru.overHigh
		for _, e := range ru.entries {
			hl := 0
			if e.highlight {
				hl = 1
			}
			if e.thread == "" {
				mainN++
				mainH += hl
				continue
			}
			if threads == nil {
				threads = make(map[string][2]int)
			}
			t := threads[e.thread]
			threads[e.thread] = [2]int{t[0] + 1, t[1] + hl}
		}
	}
	c.mu.Unlock()
	fn("", mainN, mainH)
	for t, v := range threads {
		fn(t, v[0], v[1])
	}
}

// roomsWithUnread counts the user's rooms with unread notifications (the
// badge number sent to push gateways).
func (c *counts) roomsWithUnread(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byUser[user])
}
