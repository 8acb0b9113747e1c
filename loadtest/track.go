package loadtest

// Delivery tracking: every message from the start of its PUT to its arrival
// in the /sync of each other member of its room.

import (
	"sync"
	"time"
)

type ltMsgState int8

const (
	ltSending ltMsgState = iota // PUT not answered yet
	ltSent                      // PUT answered 200
	ltFailed                    // PUT failed
)

// ltMsg is one message in flight or delivered.
type ltMsg struct {
	room, sender int
	start        time.Time
	measured     bool // sent in the measured window (not warm-up)
	state        ltMsgState
	seen         []bool // by member position in the room
	remaining    int    // other members that have not received it yet
}

// ltTracker follows every message of a run. Safe for concurrent use.
type ltTracker struct {
	rooms []*ltRoom

	mu           sync.Mutex
	msgs         map[int64]*ltMsg
	delivery     []time.Duration // delivery latencies of measured messages
	complete     []time.Duration // measured messages: start until the last member had it
	sending      int             // PUTs not answered yet
	outstanding  int             // deliveries awaited for messages whose PUT succeeded
	duplicates   int
	unknown      int // events of this run with a sequence number never sent
	afterFailure int // deliveries of messages whose PUT failed

	// remote, when set (two-site runs), tells whether a delivery crosses
	// sites; the measured deliveries are then also kept apart.
	remote         func(sender, receiver int) bool
	deliveryRemote []time.Duration
	deliveryLocal  []time.Duration
}

func newTracker(rooms []*ltRoom) *ltTracker {
	return &ltTracker{rooms: rooms, msgs: make(map[int64]*ltMsg)}
}

// begin registers a message about to be sent and returns its start time.
func (t *ltTracker) begin(seq int64, room, sender int, measured bool) time.Time {
	m := &ltMsg{room: room, sender: sender, measured: measured, state: ltSending}
	n := len(t.rooms[room].Members)
	m.seen = make([]bool, n)
	m.remaining = n - 1
	t.mu.Lock()
	t.msgs[seq] = m
	t.sending++
	m.start = time.Now()
	t.mu.Unlock()
	return m.start
}

// sent records the answer to a message's PUT.
func (t *ltTracker) sent(seq int64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.msgs[seq]
	t.sending--
	if ok {
		m.state = ltSent
		t.outstanding += m.remaining
		return
	}
	m.state = ltFailed
	t.afterFailure += len(m.seen) - 1 - m.remaining
}

// deliver records that receiver's /sync brought message seq in room at time at.
func (t *ltTracker) deliver(seq int64, room, receiver int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.msgs[seq]
	if m == nil || m.room != room {
		t.unknown++
		return
	}
	if receiver == m.sender {
		return // the sender's own echo is not a delivery
	}
	p, ok := t.rooms[room].pos[receiver]
	if !ok {
		t.unknown++
		return
	}
	if m.seen[p] {
		t.duplicates++
		return
	}
	m.seen[p] = true
	m.remaining--
	switch m.state {
	case ltSent:
		t.outstanding--
	case ltFailed:
		t.afterFailure++
	}
	if m.measured {
		t.delivery = append(t.delivery, at.Sub(m.start))
		if t.remote != nil {
			if t.remote(m.sender, receiver) {
				t.deliveryRemote = append(t.deliveryRemote, at.Sub(m.start))
			} else {
				t.deliveryLocal = append(t.deliveryLocal, at.Sub(m.start))
			}
		}
		if m.remaining == 0 && m.state != ltFailed {
			t.complete = append(t.complete, at.Sub(m.start))
		}
	}
}

// settled tells whether every PUT is answered and every successful message
// has reached every other member of its room.
func (t *ltTracker) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sending == 0 && t.outstanding == 0
}

// ltDeliveryResult sums up the measured messages.
type ltDeliveryResult struct {
	Expected, Seen, Lost, Missing int
	Duplicates, Unknown           int
	AfterFailure                  int
	Latencies                     []time.Duration
	Completions                   []time.Duration // per message delivered to all: until the last delivery
	LostExamples                  []int64
	// Two-site runs: deliveries to the other site and to the sender's own.
	RemoteLatencies, LocalLatencies []time.Duration
	MissingRemote                   int
}

// result counts the measured messages' deliveries: a message is lost when
// its PUT succeeded and some other member has not received it.
func (t *ltTracker) result() ltDeliveryResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := ltDeliveryResult{Duplicates: t.duplicates, Unknown: t.unknown, AfterFailure: t.afterFailure,
		Latencies: append([]time.Duration(nil), t.delivery...), Completions: append([]time.Duration(nil), t.complete...),
		RemoteLatencies: append([]time.Duration(nil), t.deliveryRemote...), LocalLatencies: append([]time.Duration(nil), t.deliveryLocal...)}
	for seq, m := range t.msgs {
		if !m.measured || m.state != ltSent {
			continue
		}
		want := len(m.seen) - 1
		r.Expected += want
		r.Seen += want - m.remaining
		if m.remaining > 0 {
			r.Lost++
			r.Missing += m.remaining
			if t.remote != nil {
				for p, seen := range m.seen {
					if !seen && t.remote(m.sender, t.rooms[m.room].Members[p]) {
						r.MissingRemote++
					}
				}
			}
			if len(r.LostExamples) < 10 {
				r.LostExamples = append(r.LostExamples, seq)
			}
		}
	}
	return r
}
