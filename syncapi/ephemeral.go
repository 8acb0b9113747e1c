package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi/streams"
)

// Bus topics of the sync engine's own streams, and the account data topic it listens to.
const (
	TopicReceipts    = "receipts"
	TopicTyping      = "typing"
	TopicPresence    = "presence"
	TopicAccountData = "account_data"
)

// ---- typing ----

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
	if pos, changed := s.typing.Apply(tn.RoomID, tn.UserID, tn.Typing, time.UnixMilli(tn.ExpiresMS)); changed {
		s.n.OnTyping(tn.RoomID, pos)
	}
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
// TopicPresence carries it (streams.PresenceNotice).
type PresenceNotice = streams.PresenceNotice

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
	if touched, _ := p.Touch(userID, presence, statusMsg, ts); touched {
		return nil
	}
	// One writer per user at a time, so the stored value is the last one set.
	unlock := s.presenceLocks.Lock(userID)
	defer unlock()
	touched, msg := p.Touch(userID, presence, statusMsg, ts)
	if touched {
		return nil
	}
	pos := s.presenceSeq.Next()
	_, err := s.db.Exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, pos) VALUES ($1,$2,$3,$4,$5)
ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, pos = excluded.pos`,
		userID, presence, msg, ts, pos)
	if err != nil {
		s.presenceSeq.Skip(pos)
		return fmt.Errorf("store presence: %w", err)
	}
	entry := PresenceNotice{Presence: presence, StatusMsg: msg, LastActive: ts, Pos: pos, UserID: userID}
	p.Put(entry)
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
	s.presence.Apply(e)
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
	e := s.presence.Get(userID)
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

// loadPresence reads every stored presence into memory, at start: presence
// is then answered without queries.
func (s *Service) loadPresence(ctx context.Context) error { return s.presence.Load(ctx, s.db) }

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
