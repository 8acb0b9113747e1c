package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/roomserver"
)

// worker sends one destination its queues, one transaction at a time:
// it takes up to MaxPDUs events and MaxEDUs EDUs, sends them as one
// transaction and retries that transaction, under the same ID, until the
// destination takes it; only then are its messages acknowledged (removed
// from the queues) and the next one taken.
type worker struct {
	q    *Queues
	dest string
	key  string
	pdus jetstream.Consumer
	edus jetstream.Consumer
	tdv  jetstream.Consumer
	// wake tells of new work; retry ends a wait before a retry.
	wake, retry chan struct{}
	// pdusQueued and edusQueued are the stream sequences of the last
	// messages queued for the destination, pdusTaken and edusTaken those
	// of the last it took: a consumer learns of a stored message a moment
	// later, and a queue that looks empty while something is queued
	// beyond what was taken is looked at again at once.
	pdusQueued, edusQueued, tdvQueued atomic.Uint64
	pdusTaken, edusTaken, tdvTaken    uint64
	// failures counts the failed attempts since the last success.
	failures int
	seq      int64
	log      *logrus.Entry

	// mu guards direct and mem (direct.go): the feed hands events over
	// while the sender takes them.
	mu sync.Mutex
	// direct: the feed hands the destination its events in memory (mem)
	// rather than through JetStream.
	direct bool
	mem    []memPDU
	// spilled names events moved into JetStream while a transaction
	// carrying them was retried, and taken with it: their queued copies
	// are acknowledged unsent. The sender's own.
	spilled map[string]bool
}

func newWorker(q *Queues, dest, key string, pdus, edus, tdv jetstream.Consumer) *worker {
	return &worker{q: q, dest: dest, key: key, pdus: pdus, edus: edus, tdv: tdv, wake: make(chan struct{}, 1),
		retry: make(chan struct{}, 1), log: q.log.WithField("destination", dest), spilled: map[string]bool{}}
}

// queued notes a message queued for the destination.
func (w *worker) queued(last *atomic.Uint64, ack *jetstream.PubAck) {
	if ack == nil {
		return
	}
	for {
		cur := last.Load()
		if ack.Sequence <= cur || last.CompareAndSwap(cur, ack.Sequence) {
			return
		}
	}
}

// lagging tells whether messages were queued beyond those taken.
func (w *worker) lagging() bool {
	return w.pdusQueued.Load() > w.pdusTaken || w.edusQueued.Load() > w.edusTaken || w.tdvQueued.Load() > w.tdvTaken
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// txn is a transaction being sent, with the queue messages it carries.
type txn struct {
	t    gomatrixserverlib.Transaction
	msgs []jetstream.Msg
	// pdus is the number of events taken from the queue (some may be
	// gone from the database by now).
	pdus int
	// mem is the number of events taken from those the sender holds in
	// memory (the oldest ones), spilled whether they were moved into
	// JetStream meanwhile.
	mem     int
	spilled bool
}

func (t *txn) empty() bool { return len(t.msgs) == 0 && t.mem == 0 }

func (w *worker) run() {
	defer w.q.wg.Done()
	ctx, cancel := context.WithCancel(logging.With(context.Background(), w.log))
	defer cancel()
	go func() {
		select {
		case <-w.q.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	// At a start nobody knows how long the destination has waited.
	behind := true
	lag := 0
	lagLooked := false
	for ctx.Err() == nil {
		if behind {
			w.catchUp(ctx)
		}
		// Caught up, the consumers are asked only where the feed queued
		// something since (no empty fetch after each transaction).
		t, err := w.take(ctx, behind)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.WithError(err).Warn("federation outbound: read the queue")
			if !w.sleep(time.Second, nil) {
				return
			}
			continue
		}
		if t.empty() {
			if w.lagging() && lag < 100 {
				// Queued, not yet visible to the consumer.
				lag++
				if !w.sleep(time.Millisecond, nil) {
					return
				}
				continue
			}
			if lag >= 100 {
				if !lagLooked {
					// Queued and still not visible (a busy machine), or
					// gone: look at everything again in a moment.
					lagLooked, lag, behind = true, 0, true
					if !w.sleep(100*time.Millisecond, nil) {
						return
					}
					continue
				}
				// Nothing after a full look either: gone meanwhile (an
				// EDU's age, a purge).
				w.pdusTaken, w.edusTaken = max(w.pdusTaken, w.pdusQueued.Load()), max(w.edusTaken, w.edusQueued.Load())
				w.tdvTaken = max(w.tdvTaken, w.tdvQueued.Load())
			}
			lag, lagLooked = 0, false
			behind = false
			// Caught up: the feed may hand the next events over in memory.
			clear(w.spilled)
			w.setDirect(w.failures == 0)
			if _, held := w.heldPos(); held {
				// Handed over while the queue was looked at again.
				continue
			}
			queueDepth.WithLabelValues(w.dest).Set(0)
			toDeviceDepth.WithLabelValues(w.dest).Set(0)
			ok, looked := w.idle()
			if !ok {
				return
			}
			// Every half minute, or when told to retry, everything is
			// fetched (a message redelivered after its ack was lost).
			behind = looked
			continue
		}
		lag, lagLooked = 0, false
		if w.send(ctx, t) {
			behind = true
		}
	}
}

// idle waits for new work; every half minute it looks anyway. It reports
// false when the queues stop, and whether it woke to look at everything
// (the half minute, a retry) rather than for new work.
func (w *worker) idle() (ok, looked bool) {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-w.wake:
	case <-w.retry:
		return true, true
	case <-t.C:
		return true, true
	case <-w.q.stop:
		return false, false
	}
	return true, false
}

// take reads the next transaction's messages: what the queues hold now,
// up to the limits. An empty txn means nothing is queued. Unless all is
// set, a queue is asked only when the feed queued beyond what was taken.
func (w *worker) take(ctx context.Context, all bool) (*txn, error) {
	t := &txn{}
	var pdus, edus, tdv []jetstream.Msg
	if all || w.pdusQueued.Load() > w.pdusTaken {
		pb, err := w.pdus.FetchNoWait(w.q.opts.MaxPDUs)
		if err != nil {
			return nil, err
		}
		var perr error
		if pdus, perr = collect(pb); firstErr(perr, pb.Error()) != nil {
			nakAll(pdus)
			return nil, firstErr(perr, pb.Error())
		}
	}
	// To-device EDUs first, up to half of the transaction's EDUs: the
	// other EDUs get the rest.
	if all || w.tdvQueued.Load() > w.tdvTaken {
		var err error
		if tdv, err = fetchNow(w.tdv, toDevicePerTxn(w.q.opts.MaxEDUs)); err != nil {
			nakAll(pdus)
			nakAll(tdv)
			return nil, err
		}
	}
	if all || w.edusQueued.Load() > w.edusTaken {
		var err error
		if edus, err = fetchNow(w.edus, w.q.opts.MaxEDUs-len(tdv)); err != nil {
			nakAll(pdus)
			nakAll(tdv)
			nakAll(edus)
			return nil, err
		}
	}
	for _, m := range pdus {
		if md, err := m.Metadata(); err == nil {
			w.pdusTaken = max(w.pdusTaken, md.Sequence.Stream)
			queueDepth.WithLabelValues(w.dest).Set(float64(md.NumPending))
		}
	}
	if len(w.spilled) > 0 {
		kept := pdus[:0]
		for _, m := range pdus {
			var p queuedPDU
			if json.Unmarshal(m.Data(), &p) == nil && w.spilled[p.EventID] {
				// Sent with the transaction it was taken for.
				delete(w.spilled, p.EventID)
				_ = m.Ack()
				continue
			}
			kept = append(kept, m)
		}
		pdus = kept
	}
	// Events held in memory are newer than all the queue holds: they go
	// after it, and not while something queued is not yet visible.
	var mem []memPDU
	if n := w.q.opts.MaxPDUs - len(pdus); n > 0 && w.pdusQueued.Load() <= w.pdusTaken {
		mem = w.memHead(n)
	}
	t.mem = len(mem)
	for _, m := range edus {
		if md, err := m.Metadata(); err == nil {
			w.edusTaken = max(w.edusTaken, md.Sequence.Stream)
		}
	}
	for _, m := range tdv {
		if md, err := m.Metadata(); err == nil {
			w.tdvTaken = max(w.tdvTaken, md.Sequence.Stream)
			toDeviceDepth.WithLabelValues(w.dest).Set(float64(md.NumPending))
		}
	}
	edus = append(tdv, edus...)
	t.msgs = append(pdus, edus...)
	t.pdus = len(pdus)
	if t.empty() {
		return t, nil
	}
	w.seq++
	t.t = gomatrixserverlib.Transaction{
		TransactionID:  gomatrixserverlib.TransactionID(w.q.epoch + "_" + strconv.FormatInt(w.seq, 10)),
		Origin:         spec.ServerName(w.q.opts.ServerName),
		Destination:    spec.ServerName(w.dest),
		OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs:           []json.RawMessage{},
	}
	for _, m := range edus {
		var e gomatrixserverlib.EDU
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			w.log.WithError(err).Error("federation outbound: bad queued EDU dropped")
			continue
		}
		e.Destination = w.dest
		t.t.EDUs = append(t.t.EDUs, e)
	}
	order := make([]string, 0, len(pdus)+len(mem))
	for _, m := range pdus {
		var p queuedPDU
		if err := json.Unmarshal(m.Data(), &p); err != nil || p.EventID == "" {
			w.log.WithError(err).Error("federation outbound: bad queued event dropped")
			continue
		}
		order = append(order, p.EventID)
	}
	for _, m := range mem {
		order = append(order, m.eventID)
	}
	if err := w.readPDUs(ctx, t, order); err != nil {
		nakAll(t.msgs)
		return nil, err
	}
	return t, nil
}

// collect reads what a fetch returned. The answer to a pull can be lost
// (a reconnection to an external NATS): after ten seconds it gives up.
func collect(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	var out []jetstream.Msg
	for {
		select {
		case m, ok := <-b.Messages():
			if !ok {
				return out, nil
			}
			out = append(out, m)
		case <-t.C:
			return out, errors.New("no answer to a pull from the queue")
		}
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
	}
	return nil
}

func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// readPDUs reads the events' JSON (recent ones from memory, the others
// from the database), in order; an event no longer there (purged) is left
// out.
func (w *worker) readPDUs(ctx context.Context, t *txn, order []string) error {
	if len(order) == 0 {
		return nil
	}
	// Events sent soon after their commit come from memory; the rest
	// (a backlog, a restart) from the database.
	byID := make(map[string]json.RawMessage, len(order))
	var ask []string
	for _, id := range order {
		if js, ok := w.q.recent.Get(id); ok {
			byID[id] = js
		} else {
			ask = append(ask, id)
		}
	}
	if len(ask) > 0 {
		evs, err := roomserver.EventsByID(ctx, w.q.opts.DB, ask)
		if err != nil {
			return err
		}
		for _, e := range evs {
			js, err := roomserver.FederationJSON(e.EventID, e.JSON)
			if err != nil {
				w.log.WithError(err).WithField("event_id", e.EventID).Error("federation outbound: unreadable stored event; not sent")
				continue
			}
			byID[e.EventID] = js
		}
	}
	for _, id := range order {
		js, ok := byID[id]
		if !ok {
			w.log.WithField("event_id", id).Warn("federation outbound: a queued event is gone; not sent")
			continue
		}
		t.t.PDUs = append(t.t.PDUs, js)
	}
	return nil
}

// send sends a transaction until the destination takes it, the Sender
// says it is refused, or the queues stop. It reports whether the
// destination failed first (it comes back from a failure: catch up).
func (w *worker) send(ctx context.Context, t *txn) bool {
	// The messages stay ours while the transaction is being sent.
	kept := make(chan struct{})
	defer close(kept)
	go func() {
		tk := time.NewTicker(ackWait / 3)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				for _, m := range t.msgs {
					_ = m.InProgress()
				}
			case <-kept:
				return
			}
		}
	}()
	failed := w.failures > 0
	log := w.log.WithFields(logrus.Fields{"txn_id": string(t.t.TransactionID), "pdus": len(t.t.PDUs), "edus": len(t.t.EDUs)})
	for {
		sctx, cancel := context.WithTimeout(ctx, w.q.opts.SendTimeout)
		res, err := w.q.opts.Sender.SendTransaction(sctx, t.t)
		cancel()
		if err == nil {
			txnAttempts.WithLabelValues("sent").Inc()
			for _, m := range t.msgs {
				_ = m.Ack()
			}
			if !t.spilled {
				w.memTaken(t.mem)
			}
			if w.failures > 0 {
				log.WithField("failures", w.failures).Info("federation outbound: the destination takes transactions again")
			}
			w.failures = 0
			for id, r := range res.PDUs {
				if r.Error != "" {
					log.WithFields(logrus.Fields{"event_id": id, "error": r.Error}).Warn("federation outbound: the destination refused an event")
				}
			}
			return failed
		}
		if ctx.Err() != nil {
			nakAll(t.msgs) // stopping: first again at the next start
			return failed
		}
		if w.q.opts.Refused(err) {
			txnAttempts.WithLabelValues("refused").Inc()
			log.WithError(err).Warn("federation outbound: destination refused; its queue is dropped")
			for _, m := range t.msgs {
				_ = m.Term()
			}
			w.memTaken(math.MaxInt)
			w.drop(ctx)
			return false
		}
		txnAttempts.WithLabelValues("retry").Inc()
		w.failures++
		failed = true
		if w.failures == 1 {
			// Off the direct path: what it holds goes into the durable
			// queue, and the feed's position may move past it.
			if !w.spill(ctx, t.mem) {
				nakAll(t.msgs)
				return failed
			}
			t.spilled = true
		}
		delay := w.delay()
		if w.failures == 1 || w.failures%10 == 0 {
			log.WithError(err).WithFields(logrus.Fields{"failures": w.failures, "retry_in": delay.Round(time.Millisecond).String()}).Warn("federation outbound: transaction failed; will retry")
		}
		if !w.sleep(delay, w.retry) {
			nakAll(t.msgs)
			return failed
		}
	}
}

// delay is the wait after the latest failure: RetryBase doubling with
// each failure up to RetryMax, ±20%.
func (w *worker) delay() time.Duration {
	d := w.q.opts.RetryBase
	for i := 1; i < w.failures && d < w.q.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.q.opts.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits d; a message on early ends the wait. It reports false when
// the queues stop.
func (w *worker) sleep(d time.Duration, early <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-early:
		return true
	case <-w.q.stop:
		return false
	}
}

// catchUp applies the catch-up rule: a room with more than CatchUpPDUs
// events queued for the destination keeps only its newest CatchUpPDUs.
// The destination fetches the gap itself (/get_missing_events from the
// prev_events of the first event it gets, or backfill).
func (w *worker) catchUp(ctx context.Context) {
	keep := uint64(w.q.opts.CatchUpPDUs)
	// The acknowledgements of the last transaction first: the counts are
	// of what is still to send.
	_ = w.q.opts.Bus.Conn().FlushWithContext(ctx)
	filter := w.q.pduSubj + "." + w.key + ".>"
	info, err := w.q.pdus.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		w.log.WithError(err).Warn("federation outbound: read the queue's rooms")
		return
	}
	for subj, n := range info.State.Subjects {
		if n <= keep {
			continue
		}
		if err := w.q.pdus.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(keep)); err != nil {
			w.log.WithError(err).Warn("federation outbound: catch-up")
			continue
		}
		pdusSkipped.Add(float64(n - keep))
		w.log.WithFields(logrus.Fields{"queued": n, "kept": keep}).Info("federation outbound: catching up a room: only its newest events are sent")
	}
}

// drop empties the destination's queues.
func (w *worker) drop(ctx context.Context) {
	if info, err := w.q.pdus.Info(ctx, jetstream.WithSubjectFilter(w.q.pduSubj+"."+w.key+".>")); err == nil {
		for _, n := range info.State.Subjects {
			pdusSkipped.Add(float64(n))
		}
	}
	if err := w.q.pdus.Purge(ctx, jetstream.WithPurgeSubject(w.q.pduSubj+"."+w.key+".>")); err != nil {
		w.log.WithError(err).Warn("federation outbound: drop the queue")
	}
	if err := w.q.edus.Purge(ctx, jetstream.WithPurgeSubject(w.q.eduSubj+"."+w.key)); err != nil {
		w.log.WithError(err).Warn("federation outbound: drop the EDU queue")
	}
	if err := w.q.tdv.Purge(ctx, jetstream.WithPurgeSubject(w.q.tdvSubj+"."+w.key)); err != nil {
		w.log.WithError(err).Warn("federation outbound: drop the to-device queue")
	}
	w.pdusTaken, w.edusTaken = max(w.pdusTaken, w.pdusQueued.Load()), max(w.edusTaken, w.edusQueued.Load())
	w.tdvTaken = max(w.tdvTaken, w.tdvQueued.Load())
	queueDepth.WithLabelValues(w.dest).Set(0)
	toDeviceDepth.WithLabelValues(w.dest).Set(0)
}
