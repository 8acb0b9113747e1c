package outbound

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/logging"
)

// The direct path: while a destination keeps up (its sender found its
// JetStream queue empty and its last transaction was taken), the feed
// hands it our new events in memory instead of through JetStream, and
// the database, not JetStream, keeps them safe: the feed's stored
// position never passes an event handed over and not yet taken by its
// destination (heldPos), so a crash or a stop sends it again from the
// database at the next start. When a transaction carrying such events
// fails, the sender moves every event it holds into JetStream (spill) and
// the destination is back on the durable queue until it has caught up.

// memPDU is an event handed to a sender in memory, with its position on
// the events stream.
type memPDU struct {
	pos             int64
	roomID, eventID string
}

// handDirect gives the sender an event in memory if it is on the direct
// path; false: queue it in JetStream.
func (w *worker) handDirect(p pending) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.direct {
		return false
	}
	w.mem = append(w.mem, memPDU{pos: p.pos, roomID: p.roomID, eventID: p.eventID})
	return true
}

// setDirect puts the sender on the direct path or takes it off.
func (w *worker) setDirect(on bool) {
	w.mu.Lock()
	w.direct = on
	w.mu.Unlock()
}

// heldPos is the position of the oldest event handed over in memory and
// not yet taken by the destination; ok is false when there is none.
func (w *worker) heldPos() (pos int64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.mem) == 0 {
		return 0, false
	}
	return w.mem[0].pos, true
}

// memHead returns up to n of the events held in memory, oldest first.
func (w *worker) memHead(n int) []memPDU {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]memPDU(nil), w.mem[:min(n, len(w.mem))]...)
}

// memTaken forgets the n oldest events held in memory: the destination
// took them (or refused them for good).
func (w *worker) memTaken(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n = min(n, len(w.mem))
	w.mem = append(w.mem[:0:0], w.mem[n:]...)
}

// spill takes the sender off the direct path and moves the events it
// holds in memory into its JetStream queue, in order, waiting for
// JetStream to take each. The first inFlight of them are in the
// transaction being retried: if that transaction is taken, their queued
// copies are skipped (acknowledged unsent) when met. It reports false when
// the queues stopped first (the events then stay held: the position does
// not pass them, and the next start queues them again).
func (w *worker) spill(ctx context.Context, inFlight int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.direct = false
	for i, m := range w.mem {
		data, _ := json.Marshal(queuedPDU{RoomID: m.roomID, EventID: m.eventID})
		msg := &nats.Msg{Subject: w.q.pduSubj + "." + w.key + "." + roomKey(m.roomID), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, w.key+"|"+m.eventID)
		msg.Header.Set(destHeader, w.dest)
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			ack, err := w.q.js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				w.queued(&w.pdusQueued, ack)
				break
			}
			logging.From(ctx).WithError(err).WithFields(logrus.Fields{"subject": msg.Subject, "attempt": attempt}).Error("federation outbound: queue an event")
			if !backoff.Wait(attempt, w.q.stop) {
				w.mem = append(w.mem[:0:0], w.mem[i:]...)
				return false
			}
		}
	}
	for _, m := range w.mem[:min(inFlight, len(w.mem))] {
		w.spilled[m.eventID] = true
	}
	w.mem = nil
	return true
}

// heldPosition is the position up to which the feed may store: before the
// oldest event any sender holds in memory, else last.
func (q *Queues) heldPosition(last int64) int64 {
	q.mu.Lock()
	ws := make([]*worker, 0, len(q.workers))
	for _, w := range q.workers {
		ws = append(ws, w)
	}
	q.mu.Unlock()
	for _, w := range ws {
		if pos, ok := w.heldPos(); ok && pos-1 < last {
			last = pos - 1
		}
	}
	return last
}
