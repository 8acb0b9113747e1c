package federationapi

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
)

// The ephemeral EDUs of inbound transactions: typing, read receipts and
// presence. A server speaks only for its own users: an entry about
// another server's user is dropped, as is anything malformed, each entry
// on its own (the rest of the EDU and of the transaction is taken). What
// the entries say is checked by the sync engine (the user must be in the
// room, the event ID must be one, ...).

// remoteTypingTimeout ends the typing of another server's user whose
// server neither says again that they type nor says that they stopped:
// the EDU carries no timeout, and the origin is to send the stop, but a
// server may fail to. Servers repeat a long typing (Haven every
// typingRefresh, Synapse every 40 seconds) within it.
const remoteTypingTimeout = 60 * time.Second

func (a *API) eduLog(from, typ string) *logrus.Entry {
	return a.Log.WithFields(logrus.Fields{"origin": from, "edu_type": typ})
}

// inputTyping takes an m.typing EDU: {room_id, user_id, typing}.
func (a *API) inputTyping(ctx context.Context, from string, content json.RawMessage) {
	var t struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if json.Unmarshal(content, &t) != nil || t.RoomID == "" || ids.ServerOf(t.UserID, '@') != from {
		return
	}
	if a.Rooms.CheckServerACL(ctx, t.RoomID, from) != nil {
		return
	}
	if err := a.Ephemeral.SetTyping(ctx, t.UserID, t.RoomID, t.Typing, remoteTypingTimeout); err != nil {
		a.eduLog(from, "m.typing").WithError(err).WithField("room_id", t.RoomID).Debug("Typing notice dropped")
	}
}

// inputReceipts takes an m.receipt EDU: room → receipt type → user →
// {event_ids, data: {ts, thread_id}}, several rooms, users and events in
// one. Only public m.read receipts cross servers; any other type is
// dropped (m.read.private never leaves its server).
func (a *API) inputReceipts(ctx context.Context, from string, content json.RawMessage) {
	var rooms map[string]json.RawMessage
	if json.Unmarshal(content, &rooms) != nil {
		return
	}
	log := a.eduLog(from, "m.receipt")
	for roomID, rraw := range rooms {
		var types map[string]json.RawMessage
		if json.Unmarshal(rraw, &types) != nil {
			continue
		}
		raw, ok := types["m.read"]
		if !ok || a.Rooms.CheckServerACL(ctx, roomID, from) != nil {
			continue
		}
		var users map[string]json.RawMessage
		if json.Unmarshal(raw, &users) != nil {
			continue
		}
		for userID, rraw := range users {
			if ids.ServerOf(userID, '@') != from {
				continue
			}
			var rc struct {
				EventIDs []string `json:"event_ids"`
				Data     struct {
					TS       int64  `json:"ts"`
					ThreadID string `json:"thread_id"`
				} `json:"data"`
			}
			if json.Unmarshal(rraw, &rc) != nil || len(rc.EventIDs) == 0 {
				continue
			}
			if err := a.Ephemeral.SetRemoteReceipt(ctx, userID, roomID, rc.EventIDs, rc.Data.ThreadID, rc.Data.TS); err != nil {
				log.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": userID}).Debug("Receipt dropped")
			}
		}
	}
}

// inputPresence takes an m.presence EDU: {push: [{user_id, presence,
// last_active_ago, currently_active, status_msg}]}. With presence
// disabled here the sync engine ignores it.
func (a *API) inputPresence(ctx context.Context, from string, content json.RawMessage) {
	var p struct {
		Push []json.RawMessage `json:"push"`
	}
	if json.Unmarshal(content, &p) != nil {
		return
	}
	log := a.eduLog(from, "m.presence")
	for _, raw := range p.Push {
		var u struct {
			UserID          string `json:"user_id"`
			Presence        string `json:"presence"`
			LastActiveAgo   int64  `json:"last_active_ago"`
			CurrentlyActive bool   `json:"currently_active"`
			StatusMsg       string `json:"status_msg"`
		}
		if json.Unmarshal(raw, &u) != nil || ids.ServerOf(u.UserID, '@') != from {
			continue
		}
		if err := a.Ephemeral.SetRemotePresence(ctx, u.UserID, u.Presence, u.StatusMsg, u.LastActiveAgo, u.CurrentlyActive); err != nil {
			log.WithError(err).WithField("user_id", u.UserID).Debug("Presence dropped")
		}
	}
}
