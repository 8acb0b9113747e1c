package loadtest

// The messages scenario of loadtest-federation, and the room layout the
// catchup scenario shares with it.

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// fedLayout is the users and rooms of a messages or catchup run.
type fedLayout struct {
	users      []*ltUser
	rooms      []*ltRoom
	onB        []bool // by user index
	usersA     int
	usersB     int
	setupSecs  float64
	split      bool
	memberSync float64 // seconds until both sites saw every member
}

// buildLayout registers rooms×members users and builds the rooms: room r
// has users r×members ... r×members+members-1; with split, the odd
// positions live on site B (so that consecutive users, who send in turn,
// alternate between the sites). The first member (on A) creates the room
// (public_chat); the others join, B's through A.
func (r *fedRun) buildLayout(ctx context.Context, split bool) (*fedLayout, error) {
	start := time.Now()
	n := r.o.Rooms * r.o.Members
	lay := &fedLayout{users: make([]*ltUser, n), onB: make([]bool, n), split: split}
	var names [2][]string
	var idx [2][]int
	for i := 0; i < n; i++ {
		side := 0
		if split && (i%r.o.Members)%2 == 1 {
			side = 1
		}
		lay.onB[i] = side == 1
		names[side] = append(names[side], fmt.Sprintf("%s-u%d", r.o.Prefix, i))
		idx[side] = append(idx[side], i)
	}
	lay.usersA, lay.usersB = len(idx[0]), len(idx[1])
	r.logf("%d accounts on A, %d on B", lay.usersA, lay.usersB)
	for side, s := range []*fedSite{r.a, r.b} {
		us, err := r.newUsers(ctx, s, names[side], idx[side])
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			lay.users[u.Index] = u
		}
	}
	lay.rooms = make([]*ltRoom, r.o.Rooms)
	r.logf("%d rooms of %d members", r.o.Rooms, r.o.Members)
	err := forEach(ctx, r.o.Rooms, r.o.Concurrency, func(ctx context.Context, ri int) error {
		room := &ltRoom{Index: ri, pos: map[int]int{}}
		for p := 0; p < r.o.Members; p++ {
			room.Members = append(room.Members, ri*r.o.Members+p)
			room.pos[ri*r.o.Members+p] = p
		}
		creator := lay.users[room.Members[0]]
		err := withRetry(ctx, func(ctx context.Context) error {
			var err error
			room.ID, err = r.a.c.createRoom(ctx, creator.AccessToken, map[string]any{"preset": "public_chat", "name": fmt.Sprintf("federation room %d", ri)})
			return err
		})
		if err != nil {
			return fmt.Errorf("room %d: %w", ri, err)
		}
		for _, m := range room.Members[1:] {
			u := lay.users[m]
			var via []string
			if lay.onB[m] {
				via = []string{r.a.name}
			}
			if err := withRetry(ctx, func(ctx context.Context) error { return u.client.joinVia(ctx, u.AccessToken, room.ID, via...) }); err != nil {
				return fmt.Errorf("room %d: join of %s: %w", ri, u.UserID, err)
			}
		}
		lay.rooms[ri] = room
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, room := range lay.rooms {
		for _, m := range room.Members {
			lay.users[m].Rooms = append(lay.users[m].Rooms, room.Index)
		}
	}
	t := time.Now()
	if err := r.waitMembers(ctx, lay); err != nil {
		return nil, err
	}
	lay.memberSync = time.Since(t).Seconds()
	lay.setupSecs = time.Since(start).Seconds()
	return lay, nil
}

// waitMembers waits (up to two minutes) until both sites count every
// member of every room as joined: the creator asks A; with split, the
// member at position 1 asks B.
func (r *fedRun) waitMembers(ctx context.Context, lay *fedLayout) error {
	deadline := time.Now().Add(2 * time.Minute)
	for _, room := range lay.rooms {
		askers := []*ltUser{lay.users[room.Members[0]]}
		if lay.split {
			askers = append(askers, lay.users[room.Members[1]])
		}
		for _, u := range askers {
			for {
				n, err := u.client.joinedMembers(ctx, u.AccessToken, room.ID)
				if err == nil && n == len(room.Members) {
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					return fmt.Errorf("room %d: %s's server counts %d of %d members joined (%v)", room.Index, u.UserID, n, len(room.Members), err)
				}
				sleepCtx(ctx, 50*time.Millisecond)
			}
		}
	}
	return nil
}

// fedMsgReport is one layout's measured window.
type fedMsgReport struct {
	Layout           string         `json:"layout"`
	Rooms            int            `json:"rooms"`
	MembersPerRoom   int            `json:"members_per_room"`
	UsersA           int            `json:"users_a"`
	UsersB           int            `json:"users_b"`
	SetupSeconds     float64        `json:"setup_seconds"`
	TargetRate       float64        `json:"target_rate"`
	WindowSeconds    float64        `json:"window_seconds"`
	Scheduled        int            `json:"scheduled"`
	Sent             int            `json:"sent"`
	SendFailed       int            `json:"send_failed"`
	SendErrors       map[string]int `json:"send_errors,omitempty"`
	Late             int            `json:"late"`
	Skipped          int            `json:"skipped"`
	AchievedRate     float64        `json:"achieved_rate"`
	SendLatency      ltSummary      `json:"send_latency"`
	DeliveriesWanted int            `json:"deliveries_wanted"`
	DeliveriesSeen   int            `json:"deliveries_seen"`
	Lost             int            `json:"lost_messages"`
	MissingRemote    int            `json:"missing_remote_deliveries"`
	Duplicates       int            `json:"duplicates"`
	LimitedTimelines int64          `json:"limited_timelines"`
	SyncErrors       map[string]int `json:"sync_errors,omitempty"`
	Delivery         ltSummary      `json:"delivery_latency"`
	DeliveryRemote   *ltSummary     `json:"delivery_latency_other_site,omitempty"`
	DeliveryLocal    *ltSummary     `json:"delivery_latency_same_site,omitempty"`
	CPUSecondsA      *float64       `json:"cpu_seconds_a,omitempty"`
	CPUSecondsB      *float64       `json:"cpu_seconds_b,omitempty"`
	CPUMsPerMessage  *float64       `json:"cpu_ms_per_message_both_sites,omitempty"`
	QueriesA         *float64       `json:"db_queries_a,omitempty"`
	QueriesB         *float64       `json:"db_queries_b,omitempty"`
	TransactionsA    *float64       `json:"federation_transactions_a,omitempty"`
	TransactionsB    *float64       `json:"federation_transactions_b,omitempty"`
	MachineBusy      *float64       `json:"machine_busy_cpu_seconds,omitempty"`
	Cores            int            `json:"cores"`
	LoadGenCPU       float64        `json:"loadgen_cpu_seconds"`
}

func (r *fedRun) messages(ctx context.Context) error {
	for _, layout := range r.o.Layouts {
		m, err := r.messagesLayout(ctx, layout)
		if m != nil {
			r.rep.Messages = append(r.rep.Messages, m)
		}
		if err != nil {
			return fmt.Errorf("layout %s: %w", layout, err)
		}
	}
	var split, local *fedMsgReport
	for _, m := range r.rep.Messages {
		if m.Layout == "split" {
			split = m
		} else {
			local = m
		}
	}
	if split != nil {
		if d := split.DeliveryRemote; d != nil {
			r.rep.target("1. delivery p99 to the other site", "<= 50 ms", fmt.Sprintf("%.1f ms (%d deliveries)", d.P99, d.Count), d.P99 <= 50 && d.Count > 0)
		}
		r.rep.target("1. nothing lost", "0 lost", fmt.Sprintf("%d lost of %d sent", split.Lost, split.Sent), split.Lost == 0 && split.Sent > 0)
	}
	if split != nil && local != nil && split.CPUMsPerMessage != nil && local.CPUMsPerMessage != nil && *local.CPUMsPerMessage > 0 {
		ratio := *split.CPUMsPerMessage / *local.CPUMsPerMessage
		r.rep.CPURatio = fp(ratio)
		r.rep.target("1. CPU per message across sites", "<= 2x local", fmt.Sprintf("%.2fx (%.2f vs %.2f ms)", ratio, *split.CPUMsPerMessage, *local.CPUMsPerMessage), ratio <= 2)
	}
	return nil
}

// fedSample is one reading of a site.
type fedSample struct {
	s   ltServerSample
	txn float64
	ok  bool
}

func (r *fedRun) sampleSite(ctx context.Context, s *fedSite) fedSample {
	smp, err := s.probe().sample(ctx, true)
	txn, _ := s.metric(ctx, "haven_federation_transactions_total")
	return fedSample{s: smp, txn: txn, ok: err == nil}
}

func (r *fedRun) messagesLayout(ctx context.Context, layout string) (*fedMsgReport, error) {
	r.logf("messages, layout %s: %d rooms of %d members, %s msg/s for %s", layout, r.o.Rooms, r.o.Members, trimFloat(r.o.Rate), r.o.Duration)
	if err := r.startSites(ctx, "messages-"+layout); err != nil {
		return nil, err
	}
	defer r.stopSites()
	lay, err := r.buildLayout(ctx, layout == "split")
	if err != nil {
		return nil, err
	}
	m := &fedMsgReport{Layout: layout, Rooms: r.o.Rooms, MembersPerRoom: r.o.Members, UsersA: lay.usersA, UsersB: lay.usersB,
		SetupSeconds: lay.setupSecs, TargetRate: r.o.Rate, Cores: runtime.NumCPU()}
	tr := newTracker(lay.rooms)
	if lay.split {
		tr.remote = func(sender, receiver int) bool { return lay.onB[sender] != lay.onB[receiver] }
	}
	syncCtx, stopSyncs := context.WithCancel(ctx)
	defer stopSyncs()
	sy := newSyncers(nil, lay.users, lay.rooms, tr, r.runID, r.o.SyncTimeout)
	if err := sy.initial(ctx, r.o.Concurrency, r.logf); err != nil {
		return m, err
	}
	sy.start(syncCtx)
	r.waitPolls(ctx, sy, lay)
	snd := &ltSender{users: lay.users, rooms: lay.rooms, tr: tr, runID: r.runID, maxInFlight: 2000, sendTimeout: 30 * time.Second}
	if r.o.Warmup > 0 {
		r.logf("warm-up %s", r.o.Warmup)
		snd.run(ctx, r.o.Rate, r.o.Warmup, false)
		snd.waitSends()
	}
	a0, b0 := r.sampleSite(ctx, r.a), r.sampleSite(ctx, r.b)
	cpu0, _ := selfCPU()
	mc0 := readMachineCPU()
	start := time.Now()
	profDone := r.startProfiles(ctx, "messages-"+layout, max(1, int(r.o.Duration.Seconds())))
	r.logf("sending %s msg/s for %s", trimFloat(r.o.Rate), r.o.Duration)
	st := snd.run(ctx, r.o.Rate, r.o.Duration, true)
	sendSecs := time.Since(start).Seconds()
	snd.waitSends()
	waitSettled(ctx, tr, r.o.Grace)
	window := time.Since(start).Seconds()
	a1, b1 := r.sampleSite(ctx, r.a), r.sampleSite(ctx, r.b)
	cpu1, _ := selfCPU()
	mc1 := readMachineCPU()
	profDone()
	stopSyncs()
	sy.wait()

	m.WindowSeconds = window
	var load ltLoadReport
	load.SendSeconds, load.scheduleSeconds = sendSecs, r.o.Duration.Seconds()
	fillSends(&load, st)
	m.Scheduled, m.Sent, m.SendFailed, m.Late, m.Skipped = load.Scheduled, load.Sent, load.SendFailed, load.Late, load.Skipped
	m.AchievedRate, m.SendLatency, m.SendErrors = load.AchievedRate, load.SendLatency, load.SendErrors
	res := tr.result()
	m.DeliveriesWanted, m.DeliveriesSeen, m.Lost, m.MissingRemote, m.Duplicates = res.Expected, res.Seen, res.Lost, res.MissingRemote, res.Duplicates
	m.Delivery = summarize(res.Latencies)
	if lay.split {
		rs, ls := summarize(res.RemoteLatencies), summarize(res.LocalLatencies)
		m.DeliveryRemote, m.DeliveryLocal = &rs, &ls
	}
	m.LimitedTimelines, m.SyncErrors = sy.limited.Load(), sy.errors()
	m.LoadGenCPU = (cpu1 - cpu0).Seconds()
	if mc0.OK && mc1.OK {
		m.MachineBusy = fp(mc1.Busy - mc0.Busy)
	}
	ca0, okA0 := a0.s.cpu()
	ca1, okA1 := a1.s.cpu()
	cb0, okB0 := b0.s.cpu()
	cb1, okB1 := b1.s.cpu()
	if okA0 && okA1 && okB0 && okB1 {
		m.CPUSecondsA, m.CPUSecondsB = fp(ca1-ca0), fp(cb1-cb0)
		if m.Sent > 0 {
			m.CPUMsPerMessage = fp(1000 * (ca1 - ca0 + cb1 - cb0) / float64(m.Sent))
		}
	}
	if q0, ok := a0.s.metric(mQueries); ok {
		if q1, ok := a1.s.metric(mQueries); ok {
			m.QueriesA = fp(q1 - q0)
		}
	}
	if q0, ok := b0.s.metric(mQueries); ok {
		if q1, ok := b1.s.metric(mQueries); ok {
			m.QueriesB = fp(q1 - q0)
		}
	}
	m.TransactionsA, m.TransactionsB = fp(a1.txn-a0.txn), fp(b1.txn-b0.txn)
	if m.Lost > 0 {
		r.rep.note("layout %s: %d message(s) did not reach every member within %s (%d deliveries to the other site missing); examples %v",
			layout, m.Lost, r.o.Grace, m.MissingRemote, res.LostExamples)
	}
	if m.LimitedTimelines > 0 {
		r.rep.note("layout %s: %d limited /sync timelines", layout, m.LimitedTimelines)
	}
	if m.Late > 0 {
		r.rep.note("layout %s: %d sends dispatched late (the load generator shares the CPU with both sites)", layout, m.Late)
	}
	return m, ctx.Err()
}

// waitPolls waits (up to a minute) until every long-poll is open and each
// site counts its users' long-polls as waiting.
func (r *fedRun) waitPolls(ctx context.Context, sy *ltSyncers, lay *fedLayout) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		wa, _ := r.a.metric(ctx, mWaiters)
		wb, _ := r.b.metric(ctx, mWaiters)
		if sy.open.Load() >= int64(len(lay.users)) && int(wa) >= lay.usersA && int(wb) >= lay.usersB {
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	r.rep.note("not every long-poll was open when the window started")
}

func (m *fedMsgReport) write(p func(string, ...any)) {
	p("Messages, layout %s: %d rooms of %d members (%d users on A, %d on B), setup %.1f s", m.Layout, m.Rooms, m.MembersPerRoom, m.UsersA, m.UsersB, m.SetupSeconds)
	p("  window %.1f s: %d scheduled, %d sent (%.1f/s of %s), %d failed, %d late, %d skipped; send %s", m.WindowSeconds, m.Scheduled, m.Sent,
		m.AchievedRate, trimFloat(m.TargetRate), m.SendFailed, m.Late, m.Skipped, fmtSummary(m.SendLatency))
	p("  deliveries %d of %d, LOST messages %d (missing deliveries to the other site %d), duplicates %d, limited timelines %d",
		m.DeliveriesSeen, m.DeliveriesWanted, m.Lost, m.MissingRemote, m.Duplicates, m.LimitedTimelines)
	p("  delivery latency, all:        %s", fmtSummary(m.Delivery))
	if m.DeliveryRemote != nil {
		p("  delivery latency, other site: %s", fmtSummary(*m.DeliveryRemote))
		p("  delivery latency, same site:  %s", fmtSummary(*m.DeliveryLocal))
	}
	if m.CPUSecondsA != nil {
		p("  CPU: site A %.2f s, site B %.2f s; both sites %.3f ms per message; load generator %.2f s; machine busy %.2f CPU-s of %d cores",
			*m.CPUSecondsA, *m.CPUSecondsB, deref(m.CPUMsPerMessage), m.LoadGenCPU, deref(m.MachineBusy), m.Cores)
	}
	if m.QueriesA != nil && m.QueriesB != nil && m.Sent > 0 {
		p("  DB queries per message: A %.1f, B %.1f; federation transactions: A %.0f, B %.0f",
			*m.QueriesA/float64(m.Sent), *m.QueriesB/float64(m.Sent), deref(m.TransactionsA), deref(m.TransactionsB))
	}
	if len(m.SendErrors) > 0 {
		p("  send errors: %s", fmtCounts(m.SendErrors))
	}
	if len(m.SyncErrors) > 0 {
		p("  sync errors: %s", fmtCounts(m.SyncErrors))
	}
}
