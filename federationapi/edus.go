package federationapi

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/syncapi"
)

// EDUQueue queues EDUs for other servers (the outbound queues).
type EDUQueue interface {
	QueueEDU(ctx context.Context, destinations []string, edu gomatrixserverlib.EDU) error
}

// RoomServers names the servers with members joined to a room.
type RoomServers interface {
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
}

// Subscriber is the bus, as the EDU forwarder needs it.
type Subscriber interface {
	Subscribe(topic string, fn func(data []byte)) (func(), error)
}

// EDUForwarder sends the typing notices and public read receipts of this
// server's users to the other servers in their rooms.
type EDUForwarder struct {
	ServerName string
	Rooms      RoomServers
	Queue      EDUQueue
	Log        *logrus.Logger
}

// Start subscribes to the sync engine's typing and receipt notices (the
// topics' names given by the caller); the returned function stops it.
func (f *EDUForwarder) Start(ctx context.Context, bus Subscriber, typingTopic, receiptTopic string) (func(), error) {
	stopT, err := bus.Subscribe(typingTopic, func(data []byte) { f.typing(ctx, data) })
	if err != nil {
		return nil, err
	}
	stopR, err := bus.Subscribe(receiptTopic, func(data []byte) { f.receipt(ctx, data) })
	if err != nil {
		stopT()
		return nil, err
	}
	return func() { stopT(); stopR() }, nil
}

func (f *EDUForwarder) remoteServers(ctx context.Context, roomID string) []string {
	servers, err := f.Rooms.JoinedServers(ctx, roomID)
	if err != nil {
		f.Log.WithError(err).WithField("room_id", roomID).Warn("EDU not forwarded")
		return nil
	}
	out := servers[:0:0]
	for _, s := range servers {
		if s != f.ServerName {
			out = append(out, s)
		}
	}
	return out
}

func (f *EDUForwarder) queue(ctx context.Context, roomID, typ string, content any) {
	dests := f.remoteServers(ctx, roomID)
	if len(dests) == 0 {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return
	}
	if err := f.Queue.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: typ, Content: raw}); err != nil {
		f.Log.WithError(err).WithField("room_id", roomID).Warn("EDU not queued")
	}
}

func (f *EDUForwarder) typing(ctx context.Context, data []byte) {
	var n syncapi.TypingNotice
	if json.Unmarshal(data, &n) != nil || ids.ServerOf(n.UserID, '@') != f.ServerName {
		return
	}
	f.queue(ctx, n.RoomID, "m.typing", map[string]any{"room_id": n.RoomID, "user_id": n.UserID, "typing": n.Typing})
}

func (f *EDUForwarder) receipt(ctx context.Context, data []byte) {
	var n syncapi.ReceiptNotice
	if json.Unmarshal(data, &n) != nil || n.Skip || n.Type != "m.read" || ids.ServerOf(n.UserID, '@') != f.ServerName {
		return
	}
	rdata := map[string]any{"ts": n.TS}
	if n.ThreadID != "" {
		rdata["thread_id"] = n.ThreadID
	}
	f.queue(ctx, n.RoomID, "m.receipt", map[string]any{n.RoomID: map[string]any{"m.read": map[string]any{
		n.UserID: map[string]any{"event_ids": []string{n.EventID}, "data": rdata}}}})
}
