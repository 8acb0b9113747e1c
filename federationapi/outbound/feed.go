package outbound

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// The feed: one goroutine follows the committed events stream with a
// roomserver.Follower (every position once and in order), picks our users'
// events, works out their destinations, puts them in the destinations'
// queues and, once JetStream has acknowledged them, moves the stored
// position. A restart resumes from there: nothing acknowledged to a
// client is lost, and what was queued twice (a crash between the queueing
// and the position's write) is kept once by the queue's duplicate window.

const positionName = "events"

const upsertPosition = `INSERT INTO federation_outbound_positions (name, pos) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET pos = excluded.pos`

// pending is one event to queue for one destination.
type pending struct {
	dest, roomID, eventID string
	// pos is the event's position on the events stream.
	pos int64
}

type feed struct {
	q      *Queues
	in     chan []byte
	follow *roomserver.Follower
	// servers caches each room's joined servers; a member event of the
	// room drops its entry.
	servers *lru.Cache[string, []string]
	pend    []pending
	// last is the last position applied, stored the last written.
	last, stored int64
	lastWrite    time.Time
	// broken: an event could not be handled (the queues stopped first);
	// the position stays where it is, for the next start.
	broken bool
}

// start subscribes to the events stream, reads the stored position,
// queues the events committed since, and starts the feed's goroutine.
func (f *feed) start(ctx context.Context) error {
	q := f.q
	f.servers = lru.New[string, []string]("federation_joined_servers", 10000)
	// Subscribe before reading the position: what commits meanwhile is
	// kept and, if read from the database already, skipped by the follower.
	unsub, err := q.opts.Bus.Subscribe(roomserver.Topic, func(data []byte) {
		select {
		case f.in <- data:
		case <-q.stop:
		}
	})
	if err != nil {
		return fmt.Errorf("federation outbound: %w", err)
	}
	q.unsub = unsub
	cur := q.opts.Rooms.Position()
	err = q.opts.DB.QueryRow(ctx, `SELECT pos FROM federation_outbound_positions WHERE name = $1`, positionName).Scan(&f.stored)
	if errors.Is(err, sql.ErrNoRows) {
		// First start: from now on, not from the beginning of history.
		f.stored = cur
		if _, err := q.opts.DB.Exec(ctx, upsertPosition, positionName, cur); err != nil {
			return fmt.Errorf("federation outbound: store position: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("federation outbound: read position: %w", err)
	}
	f.last = f.stored
	ctx = logging.With(ctx, q.log)
	for f.last < cur {
		ns, err := roomserver.NoticesAfter(ctx, q.opts.DB, f.last, cur, 500)
		if err != nil {
			return fmt.Errorf("federation outbound: events after %d: %w", f.last, err)
		}
		if len(ns) == 0 {
			break
		}
		for i := range ns {
			f.apply(ctx, &ns[i])
		}
		if !f.flush(ctx, true) {
			return fmt.Errorf("federation outbound: stopped while catching up")
		}
	}
	if f.last < cur && !f.broken {
		f.last = cur
	}
	f.follow = roomserver.NewFollower(q.opts.DB, max(cur, f.last), f.apply)
	q.wg.Add(1)
	go f.run()
	return nil
}

// run is the feed's goroutine: it takes the notices in order, and queues
// what a burst of them gave.
func (f *feed) run() {
	defer f.q.wg.Done()
	ctx := logging.With(context.Background(), f.q.log)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case data := <-f.in:
			f.take(ctx, data)
		case <-tick.C:
		case <-f.q.stop:
			f.storePosition(ctx)
			return
		}
		for n := 0; n < 1000; n++ {
			select {
			case data := <-f.in:
				f.take(ctx, data)
				continue
			default:
			}
			break
		}
		if !f.flush(ctx, false) {
			return
		}
	}
}

func (f *feed) take(ctx context.Context, data []byte) {
	var n roomserver.Notice
	if err := json.Unmarshal(data, &n); err != nil {
		logging.From(ctx).WithError(err).Error("federation outbound: bad room event notice")
		return
	}
	f.follow.Deliver(ctx, &n)
}

// apply takes one position of the events stream, in order.
func (f *feed) apply(ctx context.Context, n *roomserver.Notice) {
	if f.broken {
		return
	}
	if n.Skip {
		f.last = max(f.last, n.Pos)
		return
	}
	if n.Type == "m.room.member" {
		f.servers.Remove(n.RoomID)
	}
	if n.Redacts != "" {
		// What is sent from now on is the redacted copy.
		if js, err := roomserver.FederationJSON(n.Redacts, n.RedactedJSON); err == nil && len(n.RedactedJSON) > 0 {
			f.q.recent.Put(n.Redacts, js)
		} else {
			f.q.recent.Remove(n.Redacts)
		}
	}
	if ids.ServerOf(n.Sender, '@') != f.q.opts.ServerName {
		f.last = max(f.last, n.Pos)
		return
	}
	dests, ok := f.destinations(ctx, n)
	if !ok {
		f.broken = true
		return
	}
	if len(dests) > 0 {
		if js, err := roomserver.FederationJSON(n.EventID, n.JSON); err == nil {
			f.q.recent.Put(n.EventID, js)
		}
	}
	for _, d := range dests {
		f.pend = append(f.pend, pending{dest: d, roomID: n.RoomID, eventID: n.EventID, pos: n.Pos})
	}
	f.last = max(f.last, n.Pos)
}

// destinations are the servers that get an event of ours: those with
// joined members in the room, and the target's of a membership event
// that takes a remote user out (a leave, kick or ban), so that it learns
// of it; never ours. ok is false when the queues stopped before the
// room's servers could be read.
func (f *feed) destinations(ctx context.Context, n *roomserver.Notice) ([]string, bool) {
	servers, found := f.servers.Get(n.RoomID)
	for attempt := 0; !found; attempt++ {
		var err error
		servers, err = f.q.opts.Rooms.JoinedServers(ctx, n.RoomID)
		if err == nil {
			f.servers.Put(n.RoomID, servers)
			break
		}
		logging.From(ctx).WithError(err).WithField("room_id", n.RoomID).Error("federation outbound: joined servers")
		if !backoff.Wait(attempt, f.q.stop) {
			return nil, false
		}
	}
	out := make([]string, 0, len(servers)+1)
	for _, s := range servers {
		if f.q.remote(s) {
			out = append(out, s)
		}
	}
	if n.Type == "m.room.member" && n.StateKey != nil && (n.Membership == "leave" || n.Membership == "ban") {
		if t := ids.ServerOf(*n.StateKey, '@'); f.q.remote(t) {
			known := false
			for _, s := range out {
				known = known || s == t
			}
			if !known {
				out = append(out, t)
			}
		}
	}
	return out, true
}

// flush queues the pending events, in order, and then stores the
// position (at once when force, else at most every second). It reports
// false when the queues stopped before JetStream took them all.
func (f *feed) flush(ctx context.Context, force bool) bool {
	touched := map[*worker]bool{}
	for len(f.pend) > 0 {
		n := min(len(f.pend), 1000)
		if !f.publish(ctx, f.pend[:n], touched) {
			f.broken = true
			return false
		}
		f.pend = f.pend[n:]
	}
	f.pend = nil
	for w := range touched {
		w.poke()
	}
	if force || time.Since(f.lastWrite) >= time.Second {
		f.storePosition(ctx)
	}
	return true
}

// publish puts events in their queues and waits for JetStream to take
// them: all at once, then one by one in order for those that failed,
// until they are taken or the queues stop. Each is named by its
// destination and event ID, so that one queued twice is kept once.
func (f *feed) publish(ctx context.Context, items []pending, touched map[*worker]bool) bool {
	q := f.q
	type sent struct {
		w   *worker
		msg *nats.Msg
		fut jetstream.PubAckFuture
	}
	list := make([]sent, 0, len(items))
	// A destination given an event through JetStream in this batch gets
	// the rest through JetStream too: its events stay in order.
	queuedHere := map[*worker]bool{}
	for _, it := range items {
		var w *worker
		for attempt := 0; ; attempt++ {
			var err error
			if w, err = q.worker(ctx, it.dest); err == nil {
				break
			}
			logging.From(ctx).WithError(err).WithField("destination", it.dest).Error("federation outbound: open a queue")
			if !backoff.Wait(attempt, q.stop) {
				return false
			}
		}
		touched[w] = true
		if !queuedHere[w] && w.handDirect(it) {
			continue
		}
		queuedHere[w] = true
		data, _ := json.Marshal(queuedPDU{RoomID: it.roomID, EventID: it.eventID})
		msg := &nats.Msg{Subject: q.pduSubj + "." + w.key + "." + roomKey(it.roomID), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, w.key+"|"+it.eventID)
		msg.Header.Set(destHeader, it.dest)
		fut, err := q.js.PublishMsgAsync(msg)
		if err != nil {
			fut = nil
		}
		list = append(list, sent{w: w, msg: msg, fut: fut})
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	var failed []sent
	for _, s := range list {
		if s.fut == nil {
			failed = append(failed, s)
			continue
		}
		select {
		case ack := <-s.fut.Ok():
			s.w.queued(&s.w.pdusQueued, ack)
		case <-s.fut.Err():
			failed = append(failed, s)
		case <-timeout.C:
			failed = append(failed, s)
			timeout.Reset(0)
		case <-q.stop:
			return false
		}
	}
	for _, s := range failed {
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ack, err := q.js.PublishMsg(pctx, s.msg)
			cancel()
			if err == nil {
				s.w.queued(&s.w.pdusQueued, ack)
				break
			}
			logging.From(ctx).WithError(err).WithFields(logrus.Fields{"subject": s.msg.Subject, "attempt": attempt}).Error("federation outbound: queue an event")
			if !backoff.Wait(attempt, q.stop) {
				return false
			}
		}
	}
	return true
}

// storePosition writes the position up to which everything is queued in
// JetStream or taken by its destination: not past an event a sender holds
// in memory (direct.go).
func (f *feed) storePosition(ctx context.Context) {
	if f.broken || len(f.pend) > 0 {
		return
	}
	pos := f.q.heldPosition(f.last)
	if pos <= f.stored {
		return
	}
	err := f.q.opts.DB.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, upsertPosition, positionName, pos)
		return err
	})
	if err != nil {
		// The events are queued; a restart before the next write queues
		// them again, and the queue keeps them once.
		logging.From(ctx).WithError(err).Warn("federation outbound: store position")
		return
	}
	f.stored, f.lastWrite = pos, time.Now()
}
