package syncapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// Bus topics of the sync engine's own streams, and the account data topic it listens to.
const (
	TopicReceipts    = "receipts"
	TopicTyping      = "typing"
	TopicPresence    = "presence"
	TopicAccountData = "account_data"
)

// ---- typing ----

type typingState struct {
	mu      sync.Mutex
	rooms   map[string]map[string]time.Time
	counter int64
	done    chan struct{}
	once    sync.Once
}

func newTypingState() *typingState {
	// Positions start from the clock so tokens stay ordered across restarts.
	return &typingState{rooms: make(map[string]map[string]time.Time), counter: time.Now().UnixMilli(), done: make(chan struct{})}
}

func (t *typingState) pos() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counter
}

func (t *typingState) stop() { t.once.Do(func() { close(t.done) }) }

// TypingNotice is what TopicTyping carries: a user started or stopped
// typing in a room (the application services' feed and the federation
// EDU forwarder read it too).
type TypingNotice struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	ExpiresMS int64  `json:"expires_ms"`
}

// SetTyping records that a user is (or stopped) typing in a room.
func (s *Service) SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error {
	s.CatchUp(ctx)
	if !s.isJoined(userID, roomID) {
		return merr.Forbidden("You are not in this room")
	}
	if timeout <= 0 || timeout > 2*time.Minute {
		timeout = 30 * time.Second
	}
	data, _ := json.Marshal(TypingNotice{RoomID: roomID, UserID: userID, Typing: typing, ExpiresMS: now().Add(timeout).UnixMilli()})
	return s.bus.Publish(TopicTyping, data)
}

func (s *Service) onTyping(data []byte) {
	var tn TypingNotice
	if err := json.Unmarshal(data, &tn); err != nil {
		return
	}
	t := s.typing
	t.mu.Lock()
	users := t.rooms[tn.RoomID]
	changed := false
	if tn.Typing {
		if users == nil {
			users = make(map[string]time.Time)
			t.rooms[tn.RoomID] = users
		}
		_, was := users[tn.UserID]
		users[tn.UserID] = time.UnixMilli(tn.ExpiresMS)
		changed = !was
	} else if users != nil {
		if _, was := users[tn.UserID]; was {
			delete(users, tn.UserID)
			changed = true
		}
	}
	var pos int64
	if changed {
		t.counter++
		pos = t.counter
	}
	t.mu.Unlock()
	if changed {
		s.n.OnTyping(tn.RoomID, pos)
	}
}

func (t *typingState) expireLoop(s *Service) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		nowT := now()
		var changed []string
		var positions []int64
		t.mu.Lock()
		for room, users := range t.rooms {
			hit := false
			for u, exp := range users {
				if nowT.After(exp) {
					delete(users, u)
					hit = true
				}
			}
			if len(users) == 0 {
				delete(t.rooms, room)
			}
			if hit {
				t.counter++
				changed = append(changed, room)
				positions = append(positions, t.counter)
			}
		}
		t.mu.Unlock()
		for i, room := range changed {
			s.n.OnTyping(room, positions[i])
		}
	}
}

// typingUsers lists who is typing in a room, sorted.
func (t *typingState) typingUsers(roomID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.rooms[roomID]))
	for u := range t.rooms[roomID] {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

func (s *Service) isJoined(userID, roomID string) bool { return s.n.Joined(userID, roomID) }

// ---- receipts ----

// ReceiptNotice is what TopicReceipts carries: a receipt stored at a
// position of the receipts stream, or the skip of a position.
type ReceiptNotice struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id"`
	TS       int64  `json:"ts"`
	Pos      int64  `json:"pos"`
	// EventPos is the events-stream position of the event read.
	EventPos int64 `json:"event_pos"`
	// Skip: nothing was stored at Pos (the write failed).
	Skip bool `json:"skip,omitempty"`
}

// SetReceipt stores a read receipt (m.read or m.read.private) and tells the room.
func (s *Service) SetReceipt(ctx context.Context, userID, roomID, rtype, eventID, threadID string) error {
	switch rtype {
	case "m.read", "m.read.private":
	default:
		return merr.BadJSON("Unknown receipt type %q", rtype)
	}
	if len(threadID) > 255 {
		return merr.InvalidParam("thread_id too long")
	}
	if !storage.StorableText(threadID) {
		return merr.InvalidParam("thread_id must not contain NUL characters")
	}
	s.CatchUp(ctx)
	if !s.isJoined(userID, roomID) {
		return merr.Forbidden("You are not in this room")
	}
	evs, err := roomserver.EventsByID(ctx, s.db, []string{eventID})
	if err != nil {
		return err
	}
	if len(evs) == 0 || evs[0].RoomID != roomID {
		return merr.NotFound("Event %s not found in this room", eventID)
	}
	return s.storeReceipt(ctx, ReceiptNotice{RoomID: roomID, UserID: userID, Type: rtype, EventID: eventID, ThreadID: threadID, TS: nowMS(), EventPos: evs[0].Pos})
}

// storeReceipt stores a receipt at the next position of the receipts
// stream and tells it.
func (s *Service) storeReceipt(ctx context.Context, n ReceiptNotice) error {
	n.Pos = s.receiptSeq.Next()
	_, err := s.db.Exec(ctx, `INSERT INTO receipts (room_id, rtype, user_id, thread_id, event_id, ts, pos) VALUES ($1,$2,$3,$4,$5,$6,$7)
ON CONFLICT (room_id, rtype, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, pos = excluded.pos`,
		n.RoomID, n.Type, n.UserID, n.ThreadID, n.EventID, n.TS, n.Pos)
	if err != nil {
		s.receiptSeq.Skip(n.Pos)
		return fmt.Errorf("store receipt: %w", err)
	}
	s.receiptSeq.Done(n.Pos, n)
	return nil
}

// publishTo is the publish function of one of the sync engine's streams:
// it tells topic of every position, a failed one as the notice skip makes.
func (s *Service) publishTo(topic string, skip func(pos int64) any) stream.Publish {
	return func(pos int64, payload any) {
		if payload == nil {
			payload = skip(pos)
		}
		s.publishNotice(topic, payload)
	}
}

// publishNotice sends a notice of one of the sync engine's streams.
func (s *Service) publishNotice(topic string, v any) {
	data, err := json.Marshal(v)
	if err == nil {
		err = s.bus.Publish(topic, data)
	}
	if err != nil {
		logging.From(context.Background()).WithError(err).WithField("topic", topic).Error("publish notice")
	}
}

func (s *Service) onReceipt(data []byte) {
	var rn ReceiptNotice
	if err := json.Unmarshal(data, &rn); err != nil {
		return
	}
	if rn.Skip {
		s.n.Skipped(Pos{Receipts: rn.Pos})
		return
	}
	if s.opts.Push != nil && rn.EventPos > 0 {
		s.opts.Push.OnReceipt(context.Background(), rn.RoomID, rn.UserID, rn.ThreadID, rn.EventPos, rn.Pos)
	}
	s.n.OnReceipt(rn.RoomID, rn.UserID, rn.Type == "m.read.private", rn.Pos)
}

// ---- presence ----

// PresenceNotice is a user's presence as kept in memory and as
// TopicPresence carries it (the federation forwarder reads it too): stored
// at a position of the presence stream, or, without UserID, the skip of a
// position whose write failed.
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

type presenceState struct {
	mu sync.Mutex
	m  map[string]*PresenceNotice
}

func newPresenceState() *presenceState { return &presenceState{m: make(map[string]*PresenceNotice)} }

// SetPresence sets a user's presence. A change of state or status message
// is stored and told; mere activity only updates last_active in memory.
func (s *Service) SetPresence(ctx context.Context, userID, presence string, statusMsg *string) error {
	switch presence {
	case "online", "offline", "unavailable":
	default:
		return merr.InvalidParam("presence must be online, offline or unavailable")
	}
	if statusMsg != nil && len(*statusMsg) > 1024 {
		return merr.TooLarge("status_msg is too long")
	}
	ts := nowMS()
	p := s.presence
	// The common case, a syncing client staying online: only the time moves.
	p.mu.Lock()
	if cur := p.m[userID]; cur != nil && cur.Presence == presence && (statusMsg == nil || *statusMsg == cur.StatusMsg) {
		cur.LastActive = ts
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	// One writer per user at a time, so the stored value is the last one set.
	unlock := s.presenceLocks.Lock(userID)
	defer unlock()
	p.mu.Lock()
	cur := p.m[userID]
	msg := ""
	if cur != nil {
		msg = cur.StatusMsg
	}
	if statusMsg != nil {
		msg = *statusMsg
	}
	if cur != nil && cur.Presence == presence && cur.StatusMsg == msg {
		cur.LastActive = ts
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	pos := s.presenceSeq.Next()
	_, err := s.db.Exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, pos) VALUES ($1,$2,$3,$4,$5)
ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, pos = excluded.pos`,
		userID, presence, msg, ts, pos)
	if err != nil {
		s.presenceSeq.Skip(pos)
		return fmt.Errorf("store presence: %w", err)
	}
	entry := PresenceNotice{Presence: presence, StatusMsg: msg, LastActive: ts, Pos: pos, UserID: userID}
	p.mu.Lock()
	stored := entry
	p.m[userID] = &stored
	p.mu.Unlock()
	s.presenceSeq.Done(pos, entry)
	return nil
}

func (s *Service) onPresence(data []byte) {
	var e PresenceNotice
	if err := json.Unmarshal(data, &e); err != nil {
		return
	}
	if e.UserID == "" {
		s.n.Skipped(Pos{Presence: e.Pos})
		return
	}
	s.presence.mu.Lock()
	if cur := s.presence.m[e.UserID]; cur == nil || cur.Pos <= e.Pos {
		cp := e
		s.presence.m[e.UserID] = &cp
	}
	s.presence.mu.Unlock()
	s.n.OnPresence(e.UserID, e.Pos)
}

// Presence returns a user's presence as the /presence endpoint shows it.
func (s *Service) Presence(ctx context.Context, viewer, userID string) (map[string]any, error) {
	if viewer != userID && !s.n.SharesRoom(viewer, userID) {
		// A join that just committed may not have reached the in-memory
		// membership yet: catch up before refusing.
		s.CatchUp(ctx)
		if !s.n.SharesRoom(viewer, userID) {
			return nil, merr.Forbidden("You do not share a room with %s", userID)
		}
	}
	e := s.presenceOf(userID)
	out := map[string]any{"presence": "offline"}
	if e != nil {
		out["presence"] = e.Presence
		if e.LastActive > 0 {
			out["last_active_ago"] = max(0, nowMS()-e.LastActive)
		}
		out["currently_active"] = e.CurrentlyActive(nowMS())
		if e.StatusMsg != "" {
			out["status_msg"] = e.StatusMsg
		}
	}
	return out, nil
}

// presenceEvent renders an m.presence event for sync.
func presenceEvent(userID string, e *PresenceNotice, now int64) json.RawMessage {
	b := make([]byte, 0, 160)
	b = append(b, `{"type":"m.presence","sender":`...)
	b = appendString(b, userID)
	b = append(b, `,"content":{"presence":`...)
	b = appendString(b, e.Presence)
	if e.LastActive > 0 {
		b = append(b, `,"last_active_ago":`...)
		b = strconv.AppendInt(b, max(0, now-e.LastActive), 10)
	}
	b = append(b, `,"currently_active":`...)
	b = strconv.AppendBool(b, e.CurrentlyActive(now))
	if e.StatusMsg != "" {
		b = append(b, `,"status_msg":`...)
		b = appendString(b, e.StatusMsg)
	}
	return append(b, "}}"...)
}

// presenceOf returns a copy of a user's presence; nil if never set (offline).
func (s *Service) presenceOf(userID string) *PresenceNotice {
	p := s.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.m[userID]; e != nil {
		cp := *e
		return &cp
	}
	return nil
}

// loadPresence reads every stored presence into memory, at start: presence
// is then answered without queries.
func (s *Service) loadPresence(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, presence, COALESCE(status_msg, ''), last_active_ts, pos, currently_active FROM presence`)
	if err != nil {
		return fmt.Errorf("load presence: %w", err)
	}
	defer rows.Close()
	s.presence.mu.Lock()
	defer s.presence.mu.Unlock()
	for rows.Next() {
		var e PresenceNotice
		var active sql.NullBool
		if err := rows.Scan(&e.UserID, &e.Presence, &e.StatusMsg, &e.LastActive, &e.Pos, &active); err != nil {
			return err
		}
		if active.Valid {
			e.Active = &active.Bool
		}
		s.presence.m[e.UserID] = &e
	}
	return rows.Err()
}

func (s *Service) onAccountData(data []byte) {
	var n struct {
		UserID string `json:"user_id"`
		Pos    int64  `json:"pos"`
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return
	}
	if n.UserID == "" {
		s.n.Skipped(Pos{AccountData: n.Pos})
		return
	}
	s.n.OnAccountData(n.UserID, n.Pos)
}
