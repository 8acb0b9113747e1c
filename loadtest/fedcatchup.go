package loadtest

// The catchup scenario of loadtest-federation: site B is down while site
// A's members send; then B starts again and we time how long until the
// newest message of every room is in a B member's /sync, and count how
// much of what was sent meanwhile B holds.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// fedCatchupReport is what the catchup scenario measured.
type fedCatchupReport struct {
	Rooms          int `json:"rooms"`
	MembersPerRoom int `json:"members_per_room"`
	// Messages is what A's members sent while B was down (every room the
	// same number; the newest of each room sent after all others answered).
	Messages    int            `json:"messages"`
	SendFailed  int            `json:"send_failed"`
	SendErrors  map[string]int `json:"send_errors,omitempty"`
	SendSeconds float64        `json:"send_seconds"`
	StopSeconds float64        `json:"b_stop_seconds"`
	// From the start of B's process.
	HealthySeconds   float64 `json:"b_start_to_healthy_seconds"`
	FirstRoomSeconds float64 `json:"b_start_to_first_room_caught_up_seconds"`
	CaughtUpSeconds  float64 `json:"b_start_to_all_rooms_caught_up_seconds"`
	RoomsCaughtUp    int     `json:"rooms_caught_up"`
	// Messages / CaughtUpSeconds.
	EventsPerSecond float64 `json:"events_per_second"`
	// Of the messages sent while B was down: how many /messages shows on
	// each site afterwards (in total, and the fewest and most of a room).
	HistoryOnB    int `json:"history_on_b"`
	HistoryOnBMin int `json:"history_on_b_room_min"`
	HistoryOnBMax int `json:"history_on_b_room_max"`
	HistoryOnA    int `json:"history_on_a"`
	// A's federation counters over the outage and the catch-up.
	SkippedPDUsA  float64 `json:"pdus_skipped_a"`
	TransactionsA float64 `json:"transactions_a"`
	// A /sync of B's watcher with a limited timeline (a gap) after the restart.
	LimitedSyncs int64 `json:"limited_syncs_b"`
}

func (r *fedRun) catchup(ctx context.Context) error {
	o := r.o
	r.logf("catchup: %d rooms of %d members, %d messages while B is down", o.Rooms, o.Members, o.CatchupMessages)
	if err := r.startSites(ctx, "catchup"); err != nil {
		return err
	}
	defer r.stopSites()
	lay, err := r.buildLayout(ctx, true)
	if err != nil {
		return err
	}
	c := &fedCatchupReport{Rooms: o.Rooms, MembersPerRoom: o.Members}
	r.rep.Catchup = c
	// The watcher of room r is its member at position 1 (on B). A warm-up
	// message per room checks the path and sets the watchers' since.
	watchers := make([]*ltUser, o.Rooms)
	since := make([]string, o.Rooms)
	warmSeq := int64(1) << 40
	for i, room := range lay.rooms {
		watchers[i] = lay.users[room.Members[1]]
		resp, _, err := watchers[i].client.sync(ctx, watchers[i].AccessToken, "", watchers[i].Filter, 0)
		if err != nil {
			return fmt.Errorf("initial sync of %s: %w", watchers[i].UserID, err)
		}
		since[i] = resp.NextBatch
		creator := lay.users[room.Members[0]]
		if err := r.sendSeq(ctx, creator, room.ID, warmSeq+int64(i)); err != nil {
			return fmt.Errorf("warm-up message: %w", err)
		}
	}
	var limited atomic.Int64
	if _, err := r.watch(ctx, watchers, since, lay, func(i int) int64 { return warmSeq + int64(i) }, time.Now().Add(time.Minute), &limited); err != nil {
		return fmt.Errorf("warm-up messages: %w", err)
	}
	limited.Store(0)
	skipped0, _ := r.a.metric(ctx, "haven_federation_pdus_skipped_total")
	txn0, _ := r.a.metric(ctx, "haven_federation_transactions_total")

	t := time.Now()
	r.b.stop()
	c.StopSeconds = time.Since(t).Seconds()
	r.logf("site B stopped (%.1f s); A's members send %d messages", c.StopSeconds, o.CatchupMessages)

	perRoom := o.CatchupMessages / o.Rooms
	total := perRoom * o.Rooms
	st := newOpStats()
	t = time.Now()
	// All but the last message of each room, on --catchup-workers workers;
	// then the last of each room, so that it is the room's newest.
	var next atomic.Int64
	var wg sync.WaitGroup
	bulk := int64(total - o.Rooms)
	for w := 0; w < o.CatchupWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1) - 1; k < bulk && ctx.Err() == nil; k = next.Add(1) - 1 {
				room := lay.rooms[int(k)%o.Rooms]
				sender := lay.users[room.Members[2*(int(k/int64(o.Rooms))%((o.Members+1)/2))]]
				start := time.Now()
				err := r.sendSeq(ctx, sender, room.ID, k)
				st.record(time.Since(start), err)
			}
		}()
	}
	wg.Wait()
	err = forEach(ctx, o.Rooms, o.Rooms, func(ctx context.Context, i int) error {
		start := time.Now()
		err := r.sendSeq(ctx, lay.users[lay.rooms[i].Members[0]], lay.rooms[i].ID, bulk+int64(i))
		st.record(time.Since(start), err)
		return err
	})
	c.SendSeconds = time.Since(t).Seconds()
	ops := opReport(st, c.SendSeconds)
	c.Messages, c.SendFailed, c.SendErrors = ops.OK, ops.Failed, ops.Errors
	if err != nil {
		return fmt.Errorf("the newest message of a room: %w", err)
	}
	r.logf("%d sent in %.1f s (%d failed); starting B", ops.OK, c.SendSeconds, ops.Failed)

	started, healthy, err := r.b.start(ctx, r.bin)
	if err != nil {
		return err
	}
	c.HealthySeconds = healthy.Sub(started).Seconds()
	profDone := r.startProfiles(ctx, "catchup", o.ProfileSeconds)
	seen, err := r.watch(ctx, watchers, since, lay, func(i int) int64 { return bulk + int64(i) }, time.Now().Add(o.CatchupTimeout), &limited)
	c.LimitedSyncs = limited.Load()
	first, last := time.Duration(0), time.Duration(0)
	for _, at := range seen {
		if at.IsZero() {
			continue
		}
		c.RoomsCaughtUp++
		d := at.Sub(started)
		if first == 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	c.FirstRoomSeconds, c.CaughtUpSeconds = first.Seconds(), last.Seconds()
	if err != nil {
		profDone()
		return fmt.Errorf("catch-up: %d of %d rooms caught up: %w", c.RoomsCaughtUp, o.Rooms, err)
	}
	c.EventsPerSecond = float64(c.Messages) / c.CaughtUpSeconds
	r.logf("B caught up %.2f s after its start (healthy after %.2f s)", c.CaughtUpSeconds, c.HealthySeconds)
	profDone()
	skipped1, _ := r.a.metric(ctx, "haven_federation_pdus_skipped_total")
	txn1, _ := r.a.metric(ctx, "haven_federation_transactions_total")
	c.SkippedPDUsA, c.TransactionsA = skipped1-skipped0, txn1-txn0

	// History: what /messages shows of the outage's messages on each site.
	c.HistoryOnBMin = -1
	for i, room := range lay.rooms {
		nb, err := r.countHistory(ctx, watchers[i], room.ID, int64(total), warmSeq+int64(i))
		if err != nil {
			return fmt.Errorf("history on B: %w", err)
		}
		na, err := r.countHistory(ctx, lay.users[room.Members[0]], room.ID, int64(total), warmSeq+int64(i))
		if err != nil {
			return fmt.Errorf("history on A: %w", err)
		}
		c.HistoryOnB += nb
		c.HistoryOnA += na
		c.HistoryOnBMax = max(c.HistoryOnBMax, nb)
		if c.HistoryOnBMin < 0 || nb < c.HistoryOnBMin {
			c.HistoryOnBMin = nb
		}
	}
	r.rep.target("2. catch-up rate after an outage", ">= 1000 events/s", fmt.Sprintf("%.0f events/s (%d in %.2f s)", c.EventsPerSecond, c.Messages, c.CaughtUpSeconds),
		c.EventsPerSecond >= 1000)
	return nil
}

// sendSeq sends one message of the run with sequence number seq.
func (r *fedRun) sendSeq(ctx context.Context, u *ltUser, roomID string, seq int64) error {
	content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("federation load test %s message #%d", r.runID, seq),
		"lt_run": r.runID, "lt_seq": seq}
	return withRetry(ctx, func(ctx context.Context) error {
		return u.client.send(ctx, u.AccessToken, roomID, fmt.Sprintf("fl-%s-%d", r.runID, seq), content)
	})
}

// watch runs each room's watcher's /sync from its since until the room's
// event want(i) shows, or deadline; it returns when each room's was seen
// (zero: not seen) and moves since on.
func (r *fedRun) watch(ctx context.Context, watchers []*ltUser, since []string, lay *fedLayout, want func(i int) int64, deadline time.Time, limited *atomic.Int64) ([]time.Time, error) {
	seen := make([]time.Time, len(watchers))
	err := forEach(ctx, len(watchers), len(watchers), func(ctx context.Context, i int) error {
		u, roomID, seq := watchers[i], lay.rooms[i].ID, want(i)
		var lastErr error
		for time.Now().Before(deadline) {
			timeout := min(5*time.Second, max(time.Until(deadline), time.Millisecond))
			resp, _, err := u.client.sync(ctx, u.AccessToken, since[i], u.Filter, timeout)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				lastErr = err
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			at := time.Now()
			since[i] = resp.NextBatch
			jr, ok := resp.Rooms.Join[roomID]
			if !ok {
				continue
			}
			if jr.Timeline.Limited {
				limited.Add(1)
			}
			for _, ev := range jr.Timeline.Events {
				if ev.Content.Run == r.runID && ev.Content.Seq == seq {
					seen[i] = at
					return nil
				}
			}
		}
		return fmt.Errorf("%s did not see message %d in room %d in time (last error: %v)", u.UserID, seq, i, lastErr)
	})
	return seen, err
}

// countHistory counts the run's messages with a sequence number below
// below that u's server shows in /messages, paging back from the newest
// until the message stop (or the room's start).
func (r *fedRun) countHistory(ctx context.Context, u *ltUser, roomID string, below, stop int64) (int, error) {
	got := map[int64]bool{}
	from := ""
	for page := 0; page < 10000; page++ {
		evs, end, err := u.client.messagesPage(ctx, u.AccessToken, roomID, from, 500)
		if err != nil {
			return 0, err
		}
		for _, ev := range evs {
			if ev.Content.Run != r.runID {
				continue
			}
			if ev.Content.Seq == stop {
				return len(got), nil
			}
			if ev.Content.Seq >= 0 && ev.Content.Seq < below {
				got[ev.Content.Seq] = true
			}
		}
		if len(evs) == 0 || end == "" || end == from {
			break
		}
		from = end
	}
	return len(got), nil
}

func (c *fedCatchupReport) write(p func(string, ...any)) {
	p("Catch-up: %d rooms of %d members (half on each site); site B down while A's members sent %d messages (%d failed) in %.1f s",
		c.Rooms, c.MembersPerRoom, c.Messages, c.SendFailed, c.SendSeconds)
	p("  B restarted: /health after %.2f s; newest message of the first room in B's /sync after %.2f s, of all %d rooms (%d caught up) after %.2f s",
		c.HealthySeconds, c.FirstRoomSeconds, c.Rooms, c.RoomsCaughtUp, c.CaughtUpSeconds)
	p("  => %.0f events/s (messages sent while down / time from B's start until the newest of every room was visible)", c.EventsPerSecond)
	p("  history of the outage in /messages: B holds %d of %d (per room %d..%d), A %d; A skipped %.0f PDUs for B (catch-up rule), sent %.0f transactions; limited /syncs on B %d",
		c.HistoryOnB, c.Messages, c.HistoryOnBMin, c.HistoryOnBMax, c.HistoryOnA, c.SkippedPDUsA, c.TransactionsA, c.LimitedSyncs)
}
