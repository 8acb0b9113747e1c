package loadtest

// The /sync side of a load test: one initial sync per user, then one
// long-poll per user held open until the run ends (with --sync sliding,
// sliding sync requests instead: sliding.go).

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ltSyncers runs the users' /sync loops.
type ltSyncers struct {
	c        *mxClient
	users    []*ltUser
	roomByID map[string]int
	tr       *ltTracker
	toDevice *ltTracker // --scenario todevice: the fan-outs (one pseudo-room of the targets)
	runID    string
	timeout  time.Duration
	// sliding: sliding sync instead of /sync, with this timeline_limit;
	// since then holds each user's pos, toDeviceSince the to-device
	// extension's next_batch.
	sliding       bool
	timelineLimit int
	toDeviceSince []string

	since     []string // per user, written by its own loop only
	open      atomic.Int64
	completed atomic.Int64 // long-poll answers
	empty     atomic.Int64 // long-poll answers without any room event (timeouts, presence, ...)
	limited   atomic.Int64 // joined-room timelines marked limited

	mu   sync.Mutex
	errs map[string]int

	wg sync.WaitGroup
}

func newSyncers(c *mxClient, users []*ltUser, rooms []*ltRoom, tr *ltTracker, runID string, timeout time.Duration) *ltSyncers {
	s := &ltSyncers{c: c, users: users, tr: tr, runID: runID, timeout: timeout,
		roomByID: make(map[string]int, len(rooms)), since: make([]string, len(users)), toDeviceSince: make([]string, len(users)), errs: map[string]int{}}
	for _, r := range rooms {
		s.roomByID[r.ID] = r.Index
	}
	return s
}

func (s *ltSyncers) countErr(err error) {
	s.mu.Lock()
	s.errs[errKey(err)]++
	s.mu.Unlock()
}

// errors returns a copy of the error counts.
func (s *ltSyncers) errors() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.errs))
	for k, v := range s.errs {
		out[k] = v
	}
	return out
}

// initial runs every user's initial sync on a bounded pool.
func (s *ltSyncers) initial(ctx context.Context, workers int, logf func(string, ...any)) error {
	var done atomic.Int64
	return forEach(ctx, len(s.users), workers, func(ctx context.Context, i int) error {
		u := s.users[i]
		var resp *ltSyncResponse
		err := withRetry(ctx, func(ctx context.Context) error {
			var err error
			if s.sliding {
				s.since[i] = ""
				_, err = s.slidingOnce(ctx, i, 0)
				return err
			}
			resp, _, err = u.on(s.c).sync(ctx, u.AccessToken, "", u.Filter, 0)
			return err
		})
		if err != nil {
			return fmt.Errorf("initial sync of %s: %w", u.UserID, err)
		}
		if !s.sliding {
			s.since[i] = resp.NextBatch
		}
		if n := done.Add(1); n%2000 == 0 {
			logf("  %d/%d initial syncs done", n, len(s.users))
		}
		return nil
	})
}

// start launches one long-poll loop per user; they run until ctx ends.
func (s *ltSyncers) start(ctx context.Context) {
	for i := range s.users {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.loop(ctx, i)
		}()
	}
}

// wait waits for every loop to end (after ctx has ended).
func (s *ltSyncers) wait() { s.wg.Wait() }

func (s *ltSyncers) loop(ctx context.Context, i int) {
	u := s.users[i]
	for ctx.Err() == nil {
		s.open.Add(1)
		var resp *ltSyncResponse
		var sresp *ltSlidingResponse
		var err error
		if s.sliding {
			sresp, err = s.slidingOnce(ctx, i, s.timeout)
		} else {
			resp, _, err = u.on(s.c).sync(ctx, u.AccessToken, s.since[i], u.Filter, s.timeout)
		}
		s.open.Add(-1)
		at := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.countErr(err)
			_, wait := retryable(err)
			select {
			case <-time.After(max(wait, time.Second)):
			case <-ctx.Done():
				return
			}
			continue
		}
		s.completed.Add(1)
		if s.sliding {
			if !s.handleSliding(i, sresp, at) {
				s.empty.Add(1)
			}
			continue
		}
		if !s.handle(i, resp, at) {
			s.empty.Add(1)
		}
		s.since[i] = resp.NextBatch
	}
}

// handle hands the run's events in resp to the tracker and tells whether
// resp had any timeline event (or, in the todevice scenario, to-device event).
func (s *ltSyncers) handle(user int, resp *ltSyncResponse, at time.Time) bool {
	hadEvents := false
	if s.toDevice != nil {
		for _, ev := range resp.ToDevice.Events {
			hadEvents = true
			if ev.Type == ltToDeviceType && ev.Content.Run == s.runID {
				s.toDevice.deliver(ev.Content.Seq, 0, user, at)
			}
		}
	}
	for roomID, jr := range resp.Rooms.Join {
		if s.timeline(user, roomID, jr.Timeline.Events, jr.Timeline.Limited, at) {
			hadEvents = true
		}
	}
	return hadEvents
}

// timeline hands the run's messages of one room's timeline (of /sync or
// sliding sync) to the tracker and tells whether it had any event.
func (s *ltSyncers) timeline(user int, roomID string, evs []ltEvent, limited bool, at time.Time) bool {
	if limited {
		s.limited.Add(1)
	}
	room, ok := s.roomByID[roomID]
	for _, ev := range evs {
		if !ok || ev.Type != "m.room.message" || ev.Content.Run != s.runID {
			continue
		}
		s.tr.deliver(ev.Content.Seq, room, user, at)
	}
	return len(evs) > 0
}
