package federationapi

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/syncapi"
)

// PresenceSource is the sync engine's presence and memberships, as the
// presence forwarder needs them (from memory, no query).
type PresenceSource interface {
	// ServersSharingRoom names the servers of the users sharing a joined
	// room with the user.
	ServersSharingRoom(userID string) []string
	// CurrentPresence is a user's presence (false: never set).
	CurrentPresence(userID string) (syncapi.PresenceNotice, bool)
	// MembersOf lists the users joined to a room.
	MembersOf(roomID string) []string
}

// maxPresencePush bounds the users of one m.presence EDU.
const maxPresencePush = 100

// StartPresence forwards the presence of our users (call it only with
// presence enabled): each change to the servers that share a room with
// the user, when it happens (presenceTopic); and, as the spec wants the
// users who share a room to see each other's presence, the current
// presence of the users concerned when servers start sharing a room
// (roomTopic, the committed events): one of our users joins a room (to
// its other servers), or the first user of another server joins one (that
// server gets the presence of our users in the room). The returned
// function stops it.
func (f *EDUForwarder) StartPresence(ctx context.Context, bus Subscriber, presenceTopic, roomTopic string) (func(), error) {
	stopP, err := bus.Subscribe(presenceTopic, func(data []byte) { f.presenceChanged(ctx, data) })
	if err != nil {
		return nil, err
	}
	stopR, err := bus.Subscribe(roomTopic, func(data []byte) { f.presenceOnJoin(ctx, data) })
	if err != nil {
		stopP()
		return nil, err
	}
	return func() { stopP(); stopR() }, nil
}

// presenceChanged sends a change of one of our users' presence to the
// servers sharing a room with them.
func (f *EDUForwarder) presenceChanged(ctx context.Context, data []byte) {
	var n syncapi.PresenceNotice
	if json.Unmarshal(data, &n) != nil || n.UserID == "" || ids.ServerOf(n.UserID, '@') != f.ServerName {
		return
	}
	var dests []string
	for _, s := range f.Presence.ServersSharingRoom(n.UserID) {
		if s != f.ServerName {
			dests = append(dests, s)
		}
	}
	f.queuePresence(ctx, dests, []syncapi.PresenceNotice{n})
}

// presenceOnJoin sends presence when servers start sharing a room.
func (f *EDUForwarder) presenceOnJoin(ctx context.Context, data []byte) {
	if !bytes.Contains(data, []byte(`"membership":"join"`)) {
		return // most events: not a join
	}
	var n struct {
		RoomID     string  `json:"room_id"`
		Type       string  `json:"type"`
		StateKey   *string `json:"state_key"`
		Membership string  `json:"membership"`
	}
	if json.Unmarshal(data, &n) != nil || n.Type != "m.room.member" || n.StateKey == nil || n.Membership != "join" {
		return
	}
	user := *n.StateKey
	server := ids.ServerOf(user, '@')
	if server == f.ServerName {
		// One of ours joined: its presence to the room's other servers.
		if p, ok := f.Presence.CurrentPresence(user); ok {
			f.queuePresence(ctx, f.remoteServers(ctx, n.RoomID), []syncapi.PresenceNotice{p})
		}
		return
	}
	if server == "" {
		return
	}
	// Another server's user: when it is that server's first in the room,
	// it gets the presence of our users in the room.
	var ours []syncapi.PresenceNotice
	for _, m := range f.Presence.MembersOf(n.RoomID) {
		switch ms := ids.ServerOf(m, '@'); {
		case m == user:
		case ms == server:
			return // the server was in the room already
		case ms == f.ServerName:
			if p, ok := f.Presence.CurrentPresence(m); ok {
				ours = append(ours, p)
			}
		}
	}
	f.queuePresence(ctx, []string{server}, ours)
}

// queuePresence queues m.presence EDUs of users' presence for the
// destinations, at most maxPresencePush users in each.
func (f *EDUForwarder) queuePresence(ctx context.Context, dests []string, users []syncapi.PresenceNotice) {
	if len(dests) == 0 || len(users) == 0 {
		return
	}
	now := time.Now().UnixMilli()
	for len(users) > 0 {
		batch := users[:min(len(users), maxPresencePush)]
		users = users[len(batch):]
		push := make([]map[string]any, 0, len(batch))
		for _, p := range batch {
			u := map[string]any{"user_id": p.UserID, "presence": p.Presence,
				"last_active_ago": max(0, now-p.LastActive), "currently_active": p.CurrentlyActive(now)}
			if p.StatusMsg != "" {
				u["status_msg"] = p.StatusMsg
			}
			push = append(push, u)
		}
		raw, err := json.Marshal(map[string]any{"push": push})
		if err != nil {
			return
		}
		if err := f.Queue.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: "m.presence", Content: raw}); err != nil {
			f.Log.WithError(err).Warn("Presence EDU not queued")
		}
	}
}
