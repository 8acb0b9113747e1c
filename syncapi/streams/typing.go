package streams

import (
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// Typing is the typing stream: who is typing in which room, in memory
// only (typing is not stored), with a position that moves on every change.
// Positions start from the clock so that tokens stay ordered across
// restarts.
type Typing struct {
	mu      sync.Mutex
	rooms   map[string]map[string]time.Time // room → user → expiry
	counter int64
	done    chan struct{}
	once    sync.Once
}

// NewTyping starts an empty typing stream at the clock's position.
func NewTyping() *Typing {
	return &Typing{rooms: make(map[string]map[string]time.Time), counter: time.Now().UnixMilli(), done: make(chan struct{})}
}

// Pos is the stream's position.
func (t *Typing) Pos() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counter
}

// Stop ends ExpireLoop.
func (t *Typing) Stop() { t.once.Do(func() { close(t.done) }) }

// Apply records that a user started (until expires) or stopped typing in
// a room. changed tells whether the room's typing users changed; pos is
// then the change's position.
func (t *Typing) Apply(roomID, userID string, typing bool, expires time.Time) (pos int64, changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	users := t.rooms[roomID]
	if typing {
		if users == nil {
			users = make(map[string]time.Time)
			t.rooms[roomID] = users
		}
		_, was := users[userID]
		users[userID] = expires
		changed = !was
	} else if users != nil {
		if _, was := users[userID]; was {
			delete(users, userID)
			changed = true
		}
	}
	if changed {
		t.counter++
		pos = t.counter
	}
	return pos, changed
}

// Forget drops who types in a room (the room was purged). Nobody is woken:
// the room has no members left to tell.
func (t *Typing) Forget(roomID string) {
	t.mu.Lock()
	delete(t.rooms, roomID)
	t.mu.Unlock()
}

// Expire drops the users whose typing ran out before now and returns the
// rooms that changed, each with its new position.
func (t *Typing) Expire(now time.Time) (rooms []string, positions []int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for room, users := range t.rooms {
		hit := false
		for u, exp := range users {
			if now.After(exp) {
				delete(users, u)
				hit = true
			}
		}
		if len(users) == 0 {
			delete(t.rooms, room)
		}
		if hit {
			t.counter++
			rooms = append(rooms, room)
			positions = append(positions, t.counter)
		}
	}
	return rooms, positions
}

// ExpireLoop expires typing once a second (by clock) and tells changed of
// every room that changed, until Stop.
func (t *Typing) ExpireLoop(clock func() time.Time, changed func(room string, pos int64)) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		rooms, positions := t.Expire(clock())
		for i, room := range rooms {
			changed(room, positions[i])
		}
	}
}

// Users lists who is typing in a room, sorted.
func (t *Typing) Users(roomID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.rooms[roomID]))
	for u := range t.rooms[roomID] {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// TypingEvent is the m.typing ephemeral event of a room with these users typing.
func TypingEvent(users []string) json.RawMessage {
	ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
	return ev
}
