package loadtest

// The sending side of a load test: an open-loop scheduler that puts
// m.room.message events at a fixed total rate, spread over all users.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ltSendStats are the sends of one phase (warm-up or measured window).
type ltSendStats struct {
	mu        sync.Mutex
	scheduled int
	ok        int
	failed    int
	late      int // dispatched more than one interval after it was due
	skipped   int // not sent: too many PUTs in flight
	latency   []time.Duration
	lag       []time.Duration // dispatch time minus due time
	errs      map[string]int
}

func (st *ltSendStats) record(d time.Duration, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.failed++
		st.errs[errKey(err)]++
		return
	}
	st.ok++
	st.latency = append(st.latency, d)
}

// ltSender sends the messages of a run.
type ltSender struct {
	c           *mxClient
	users       []*ltUser
	rooms       []*ltRoom
	tr          *ltTracker
	runID       string
	maxInFlight int64
	sendTimeout time.Duration
	fanout      *ltFanout // --scenario todevice: send to-device fan-outs instead of room messages

	inflight atomic.Int64
	seq      int64 // next sequence number; only run touches it
	wg       sync.WaitGroup
}

// pick returns who sends message seq and where: users take turns, and a
// user in several rooms takes its rooms in turn.
func (s *ltSender) pick(seq int64) (*ltUser, int, bool) {
	n := int64(len(s.users))
	for i := int64(0); i < n; i++ {
		u := s.users[(seq+i)%n]
		if len(u.Rooms) > 0 {
			return u, u.Rooms[int((seq/n)%int64(len(u.Rooms)))], true
		}
	}
	return nil, 0, false
}

// run sends rate messages per second for d, open-loop: message k is due at
// start + k/rate whatever became of the earlier ones. A message dispatched
// more than one interval after it was due is counted late but still sent;
// one that would exceed maxInFlight PUTs is counted as skipped. run returns
// after d, when the last message is dispatched; waitSends waits for the
// answers.
func (s *ltSender) run(ctx context.Context, rate float64, d time.Duration, measured bool) *ltSendStats {
	st := &ltSendStats{errs: map[string]int{}}
	interval := time.Duration(float64(time.Second) / rate)
	total := int64(d.Seconds() * rate)
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for k := int64(0); k < total; k++ {
		due := start.Add(time.Duration(float64(k) * float64(time.Second) / rate))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return st
			}
		} else if ctx.Err() != nil {
			return st
		}
		lag := time.Since(due)
		st.mu.Lock()
		st.scheduled++
		st.lag = append(st.lag, lag)
		if lag > interval {
			st.late++
		}
		st.mu.Unlock()
		if s.inflight.Load() >= s.maxInFlight {
			st.mu.Lock()
			st.skipped++
			st.mu.Unlock()
			continue
		}
		s.dispatch(ctx, st, measured)
	}
	// The window lasts d even though the last message was due earlier.
	if wait := time.Until(start.Add(d)); wait > 0 {
		sleepCtx(ctx, wait)
	}
	return st
}

// dispatch starts one PUT without waiting for it.
func (s *ltSender) dispatch(ctx context.Context, st *ltSendStats, measured bool) {
	seq := s.seq
	s.seq++
	if s.fanout != nil {
		s.dispatchFanout(ctx, st, seq, measured)
		return
	}
	u, room, ok := s.pick(seq)
	if !ok {
		return
	}
	s.inflight.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.inflight.Add(-1)
		sentMS := time.Now().UnixMilli()
		start := s.tr.begin(seq, room, u.Index, measured)
		content := map[string]any{
			"msgtype": "m.text",
			"body":    fmt.Sprintf("load test %s message #%d sent at %d", s.runID, seq, sentMS),
			"lt_run":  s.runID, "lt_seq": seq, "lt_sent_ms": sentMS,
		}
		sctx, cancel := context.WithTimeout(ctx, s.sendTimeout)
		err := u.on(s.c).send(sctx, u.AccessToken, s.rooms[room].ID, fmt.Sprintf("lt-%s-%d", s.runID, seq), content)
		cancel()
		lat := time.Since(start)
		s.tr.sent(seq, err == nil)
		st.record(lat, err)
	}()
}

// waitSends waits for every PUT dispatched so far to be answered.
func (s *ltSender) waitSends() { s.wg.Wait() }
