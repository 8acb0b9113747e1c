package streams

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
)

// PresenceNotice is a user's presence as kept in memory and as the bus
// carries it (the federation forwarder reads it too): stored at a position
// of the presence stream, or, without UserID, the skip of a position whose
// write failed.
type PresenceNotice struct {
	Presence   string `json:"presence"`
	StatusMsg  string `json:"status_msg,omitempty"`
	LastActive int64  `json:"last_active"`
	Pos        int64  `json:"pos"`
	UserID     string `json:"user_id"`
	// Active is currently_active as another server said it of its user;
	// nil for our users, whose currently_active is worked out from
	// LastActive (CurrentlyActive).
	Active *bool `json:"currently_active,omitempty"`
}

// activeWindow: one of our users online and active within it is
// currently_active.
const activeWindow = 5 * 60 * 1000

// CurrentlyActive is the presence's currently_active at time now (ms).
func (e *PresenceNotice) CurrentlyActive(now int64) bool {
	if e.Active != nil {
		return *e.Active
	}
	return e.Presence == "online" && now-e.LastActive < activeWindow
}

// presenceRooms tells who shares rooms with whom (the notifier).
type presenceRooms interface {
	Members(room string) []string
	CoMembers(user string) []string
}

// Presence is the presence stream: every user's latest presence, in
// memory (loaded from the table presence at start, then kept by the
// writer and the bus), so that presence is answered without queries.
type Presence struct {
	mu sync.Mutex
	m  map[string]*PresenceNotice
}

// NewPresence makes an empty presence stream.
func NewPresence() *Presence { return &Presence{m: make(map[string]*PresenceNotice)} }

// Load reads every stored presence into memory.
func (p *Presence) Load(ctx context.Context, db querier) error {
	rows, err := db.Query(ctx, `SELECT user_id, presence, COALESCE(status_msg, ''), last_active_ts, pos, currently_active FROM presence`)
	if err != nil {
		return fmt.Errorf("load presence: %w", err)
	}
	defer rows.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for rows.Next() {
		var e PresenceNotice
		var active sql.NullBool
		if err := rows.Scan(&e.UserID, &e.Presence, &e.StatusMsg, &e.LastActive, &e.Pos, &active); err != nil {
			return err
		}
		if active.Valid {
			e.Active = &active.Bool
		}
		p.m[e.UserID] = &e
	}
	return rows.Err()
}

// Get returns a copy of a user's presence; nil if never set (offline).
func (p *Presence) Get(userID string) *PresenceNotice {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.m[userID]; e != nil {
		cp := *e
		return &cp
	}
	return nil
}

// Touch is the common case of one of our users setting their presence:
// when it is presence already, with the same status message (statusMsg
// nil keeps the current one), only last_active moves to ts, in memory,
// and Touch returns true. msg is the status message a change stores.
func (p *Presence) Touch(userID, presence string, statusMsg *string, ts int64) (touched bool, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.m[userID]
	if cur != nil {
		msg = cur.StatusMsg
	}
	if statusMsg != nil {
		msg = *statusMsg
	}
	if cur != nil && cur.Presence == presence && cur.StatusMsg == msg {
		cur.LastActive = ts
		return true, msg
	}
	return false, msg
}

// TouchRemote is Touch for another server's user, whose currently_active
// is theirs to say.
func (p *Presence) TouchRemote(userID, presence, statusMsg string, active bool, ts int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.m[userID]; cur != nil && cur.Presence == presence && cur.StatusMsg == statusMsg && cur.Active != nil && *cur.Active == active {
		cur.LastActive = ts
		return true
	}
	return false
}

// Put keeps a presence the writer stored.
func (p *Presence) Put(e PresenceNotice) {
	p.mu.Lock()
	p.m[e.UserID] = &e
	p.mu.Unlock()
}

// Apply keeps a presence from the bus, unless memory has a newer one.
func (p *Presence) Apply(e PresenceNotice) {
	p.mu.Lock()
	if cur := p.m[e.UserID]; cur == nil || cur.Pos <= e.Pos {
		p.m[e.UserID] = &e
	}
	p.mu.Unlock()
}

// Changes returns, as m.presence events, the presence of the user and of
// everyone sharing a room with them that changed in (after, upto] (pass
// after 0 for all of it), and that of every member of the rooms in whole
// (rooms new to the client, whose members it did not know before), from
// memory. now (ms) gives last_active_ago.
func (p *Presence) Changes(rooms presenceRooms, userID string, after, upto int64, whole []string, now int64) []json.RawMessage {
	all := map[string]bool{}
	for _, r := range whole {
		for _, u := range rooms.Members(r) {
			all[u] = true
		}
	}
	who := rooms.CoMembers(userID)
	sort.Strings(who)
	var out []json.RawMessage
	for _, u := range who {
		e := p.Get(u)
		if e == nil || e.Pos > upto || (e.Pos <= after && !all[u]) {
			continue
		}
		out = append(out, PresenceEvent(u, e, now))
	}
	return out
}

// PresenceEvent renders an m.presence event.
func PresenceEvent(userID string, e *PresenceNotice, now int64) json.RawMessage {
	b := make([]byte, 0, 160)
	b = append(b, `{"type":"m.presence","sender":`...)
	b = AppendString(b, userID)
	b = append(b, `,"content":{"presence":`...)
	b = AppendString(b, e.Presence)
	if e.LastActive > 0 {
		b = append(b, `,"last_active_ago":`...)
		b = strconv.AppendInt(b, max(0, now-e.LastActive), 10)
	}
	b = append(b, `,"currently_active":`...)
	b = strconv.AppendBool(b, e.CurrentlyActive(now))
	if e.StatusMsg != "" {
		b = append(b, `,"status_msg":`...)
		b = AppendString(b, e.StatusMsg)
	}
	return append(b, "}}"...)
}
