package appservice

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
)

// clientEvent renders a stored event in the client format that
// transactions carry: content, event_id, origin_server_ts, room_id,
// sender, state_key, type, redacts and the stored unsigned with its age.
func clientEvent(e *roomserver.Event) (json.RawMessage, error) {
	var stored struct {
		Content  json.RawMessage            `json:"content"`
		Redacts  string                     `json:"redacts"`
		Unsigned map[string]json.RawMessage `json:"unsigned"`
	}
	if err := json.Unmarshal(e.JSON, &stored); err != nil {
		return nil, err
	}
	if len(stored.Content) == 0 {
		stored.Content = json.RawMessage("{}")
	}
	if stored.Redacts == "" && e.Type == "m.room.redaction" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(stored.Content, &c)
		stored.Redacts = c.Redacts
	}
	unsigned := stored.Unsigned
	if unsigned == nil {
		unsigned = map[string]json.RawMessage{}
	}
	age, _ := json.Marshal(max(0, time.Now().UnixMilli()-e.OriginTS))
	unsigned["age"] = age
	return json.Marshal(struct {
		Content  json.RawMessage            `json:"content"`
		EventID  string                     `json:"event_id"`
		TS       int64                      `json:"origin_server_ts"`
		RoomID   string                     `json:"room_id"`
		Sender   string                     `json:"sender"`
		StateKey *string                    `json:"state_key,omitempty"`
		Type     string                     `json:"type"`
		Redacts  string                     `json:"redacts,omitempty"`
		Unsigned map[string]json.RawMessage `json:"unsigned"`
	}{stored.Content, e.EventID, e.OriginTS, e.RoomID, e.Sender, e.StateKey, e.Type, stored.Redacts, unsigned})
}

// Ephemeral events (MSC2409) for the services whose registration asks for
// them: m.typing and m.receipt of the rooms they are interested in, and
// m.presence of their users and of the users who share a room with them.

func (f *feed) ephemeralTargets(ctx context.Context, roomID string, fn func(p *pending)) {
	for _, r := range f.targets {
		if r.Ephemeral && f.interestedInRoom(ctx, r, roomID) {
			fn(f.pendingOf(r.ID))
		}
	}
}

func (f *feed) onTyping(ctx context.Context, data []byte) {
	var n syncapi.TypingNotice
	if json.Unmarshal(data, &n) != nil || n.RoomID == "" {
		return
	}
	now := time.Now().UnixMilli()
	users := f.typing[n.RoomID]
	if n.Typing {
		if users == nil {
			users = map[string]int64{}
			f.typing[n.RoomID] = users
		}
		users[n.UserID] = n.ExpiresMS
	} else {
		delete(users, n.UserID)
	}
	ids := []string{}
	for u, exp := range users {
		if exp > now {
			ids = append(ids, u)
		} else {
			delete(users, u)
		}
	}
	if len(users) == 0 {
		delete(f.typing, n.RoomID)
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": n.RoomID, "content": map[string]any{"user_ids": ids}})
	f.ephemeralTargets(ctx, n.RoomID, func(p *pending) {
		// The room's newest m.typing replaces one still waiting.
		if i, ok := p.typingAt[n.RoomID]; ok {
			p.ephemeral[i] = ev
			return
		}
		if p.typingAt == nil {
			p.typingAt = map[string]int{}
		}
		p.typingAt[n.RoomID] = len(p.ephemeral)
		p.ephemeral = append(p.ephemeral, ev)
	})
}

func (f *feed) onReceipt(ctx context.Context, data []byte) {
	var n syncapi.ReceiptNotice
	// Private receipts are for their owner only.
	if json.Unmarshal(data, &n) != nil || n.Skip || n.RoomID == "" || n.Type == "m.read.private" {
		return
	}
	receipt := map[string]any{"ts": n.TS}
	if n.ThreadID != "" {
		receipt["thread_id"] = n.ThreadID
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "room_id": n.RoomID,
		"content": map[string]any{n.EventID: map[string]any{n.Type: map[string]any{n.UserID: receipt}}}})
	f.ephemeralTargets(ctx, n.RoomID, func(p *pending) { p.ephemeral = append(p.ephemeral, ev) })
}

func (f *feed) onPresence(ctx context.Context, data []byte) {
	var n struct {
		UserID     string `json:"user_id"`
		Presence   string `json:"presence"`
		StatusMsg  string `json:"status_msg"`
		LastActive int64  `json:"last_active"`
	}
	if json.Unmarshal(data, &n) != nil || n.UserID == "" {
		return
	}
	content := map[string]any{"presence": n.Presence, "currently_active": n.Presence == "online"}
	if n.LastActive > 0 {
		content["last_active_ago"] = max(0, time.Now().UnixMilli()-n.LastActive)
	}
	if n.StatusMsg != "" {
		content["status_msg"] = n.StatusMsg
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": n.UserID, "content": content})
	f.sharing(ctx, n.UserID, func(r *Registration) bool { return r.Ephemeral }, func(p *pending) {
		p.ephemeral = append(p.ephemeral, ev)
	})
}

// sharing calls fn with the pending items of each service (that want
// says) which controls the user or has a user joined to one of the user's
// rooms; the user's rooms are read once, when needed.
func (f *feed) sharing(ctx context.Context, userID string, want func(r *Registration) bool, fn func(p *pending)) {
	var joined []string
	read := false
	for _, r := range f.targets {
		if !want(r) {
			continue
		}
		shares := r.ControlsUser(userID)
		if !shares && !read {
			read = true
			rooms, err := f.s.d.Rooms.RoomsOf(ctx, userID)
			if err != nil {
				logging.From(ctx).WithError(err).WithField("user_id", userID).Warn("appservice: rooms of a user")
			}
			for id, m := range rooms {
				if m == "join" {
					joined = append(joined, id)
				}
			}
		}
		for _, room := range joined {
			if shares {
				break
			}
			for u := range f.members[room] {
				if r.ControlsUser(u) {
					shares = true
					break
				}
			}
		}
		if shares {
			fn(f.pendingOf(r.ID))
		}
	}
}

// onDeviceList tells MSC3202 services that a user who shares a room with
// theirs (or is theirs) changed devices or keys: device_lists.changed.
// (Users who stopped sharing a room, device_lists.left, are not told.)
func (f *feed) onDeviceList(ctx context.Context, data []byte) {
	var n struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal(data, &n) != nil || n.UserID == "" {
		return
	}
	f.sharing(ctx, n.UserID, func(r *Registration) bool { return r.MSC3202 }, func(p *pending) {
		if !slices.Contains(p.deviceLists, n.UserID) {
			p.deviceLists = append(p.deviceLists, n.UserID)
		}
	})
}

// onToDevice gives the services their users' to-device messages
// (MSC2409's to_device, with to_user_id and to_device_id), for services
// that push ephemeral events or use MSC3202. Once queued, the messages
// are deleted from the devices' queues.
func (f *feed) onToDevice(ctx context.Context, data []byte) {
	var n struct {
		Targets []struct {
			UserID   string `json:"user_id"`
			DeviceID string `json:"device_id"`
			Pos      int64  `json:"pos"`
		} `json:"targets"`
	}
	if json.Unmarshal(data, &n) != nil {
		return
	}
	for _, t := range n.Targets {
		var target *pending
		for _, r := range f.targets {
			if (r.Ephemeral || r.MSC3202) && r.ControlsUser(t.UserID) {
				target = f.pendingOf(r.ID)
				break
			}
		}
		if target == nil {
			continue
		}
		msgs, last, err := f.s.d.Keys.ToDeviceMessages(ctx, t.UserID, t.DeviceID, t.Pos-1, t.Pos, 100)
		if err != nil {
			logging.From(ctx).WithError(err).WithFields(logrus.Fields{"user_id": t.UserID, "device_id": t.DeviceID}).Warn("appservice: read to-device messages")
			continue
		}
		for _, m := range msgs {
			var ev map[string]json.RawMessage
			if json.Unmarshal(m, &ev) != nil {
				continue
			}
			ev["to_user_id"], _ = json.Marshal(t.UserID)
			ev["to_device_id"], _ = json.Marshal(t.DeviceID)
			b, _ := json.Marshal(ev)
			target.toDevice = append(target.toDevice, b)
		}
		if last > 0 {
			target.acks = append(target.acks, toDeviceAck{t.UserID, t.DeviceID, last})
		}
	}
}
