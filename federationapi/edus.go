package federationapi

import (
	"context"
	"encoding/json"
	"sync"
	"time"

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

// EDUForwarder sends the typing notices, public read receipts and (with
// StartPresence, presence.go) the presence of this server's users to the
// other servers that share their rooms.
//
// Typing: the EDU carries no timeout, and the spec leaves the stop to the
// user's server. The forwarder keeps the typing users of this server
// (typers): it sends typing:true when one starts, again every
// typingRefresh while they type (the other server's safety timeout ends a
// typing it hears nothing more of), and typing:false when they stop or
// their own timeout passes.
type EDUForwarder struct {
	ServerName string
	Rooms      RoomServers
	Queue      EDUQueue
	// Presence is the sync engine's presence, for StartPresence.
	Presence PresenceSource
	Log      *logrus.Logger

	mu     sync.Mutex
	typers map[typerKey]*typer
}

// typingRefresh is how often a user who goes on typing is said again to
// type; other servers end a typing they hear nothing of after a timeout
// (Haven's remoteTypingTimeout, 60 s; Synapse's 60 s).
const typingRefresh = 20 * time.Second

type typerKey struct{ room, user string }

// typer is one of our users typing in a room with other servers in it.
type typer struct {
	expires time.Time // their own timeout
	sent    time.Time // typing:true last queued
}

// Start subscribes to the sync engine's typing and receipt notices (the
// topics' names given by the caller) and starts the typing ticker; the
// returned function stops them.
func (f *EDUForwarder) Start(ctx context.Context, bus Subscriber, typingTopic, receiptTopic string) (func(), error) {
	stopT, err := bus.Subscribe(typingTopic, func(data []byte) { f.typing(ctx, data, time.Now()) })
	if err != nil {
		return nil, err
	}
	stopR, err := bus.Subscribe(receiptTopic, func(data []byte) { f.receipt(ctx, data) })
	if err != nil {
		stopT()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				f.typingTick(ctx, now)
			}
		}
	}()
	var once sync.Once
	return func() { stopT(); stopR(); once.Do(func() { close(done) }) }, nil
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

// typing takes a typing notice: a start (or a renewal, sent on only
// every typingRefresh) or a stop of one of our users typing.
func (f *EDUForwarder) typing(ctx context.Context, data []byte, now time.Time) {
	var n syncapi.TypingNotice
	if json.Unmarshal(data, &n) != nil || ids.ServerOf(n.UserID, '@') != f.ServerName {
		return
	}
	k := typerKey{n.RoomID, n.UserID}
	f.mu.Lock()
	t := f.typers[k]
	send := false
	if n.Typing {
		if t == nil {
			if f.typers == nil {
				f.typers = make(map[typerKey]*typer)
			}
			t = &typer{}
			f.typers[k] = t
		}
		t.expires = time.UnixMilli(n.ExpiresMS)
		if send = now.Sub(t.sent) >= typingRefresh; send {
			t.sent = now
		}
	} else if t != nil {
		delete(f.typers, k)
		send = true
	}
	f.mu.Unlock()
	if send {
		f.sendTyping(ctx, k, n.Typing)
	}
}

// typingTick sends the stop of the typings whose timeout passed and says
// again that those who go on typing type.
func (f *EDUForwarder) typingTick(ctx context.Context, now time.Time) {
	var stops, renews []typerKey
	f.mu.Lock()
	for k, t := range f.typers {
		switch {
		case now.After(t.expires):
			delete(f.typers, k)
			stops = append(stops, k)
		case now.Sub(t.sent) >= typingRefresh:
			t.sent = now
			renews = append(renews, k)
		}
	}
	f.mu.Unlock()
	for _, k := range stops {
		f.sendTyping(ctx, k, false)
	}
	for _, k := range renews {
		f.sendTyping(ctx, k, true)
	}
}

func (f *EDUForwarder) sendTyping(ctx context.Context, k typerKey, typing bool) {
	f.queue(ctx, k.room, "m.typing", map[string]any{"room_id": k.room, "user_id": k.user, "typing": typing})
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
