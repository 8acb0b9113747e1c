package loadtest

// The todevice scenario of loadtest-federation: a sender on site A PUTs
// /sendToDevice with one message (an Olm-sized stand-in ciphertext) for
// each of --todevice-devices devices on site B (one user each) in one
// request, --todevice-rate times a second, as a client sharing a Megolm
// session with a room on the other site does. Each target keeps a /sync
// long-poll open on B; a message's latency runs from the start of its PUT
// on A to its arrival in the target's /sync on B, and a fan-out's until
// the last target has it. Target: that p99 within 200 ms.

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// fedToDeviceReport is what the todevice scenario measured.
type fedToDeviceReport struct {
	Devices          int            `json:"devices"`
	TargetRate       float64        `json:"target_rate"`
	WindowSeconds    float64        `json:"window_seconds"`
	Scheduled        int            `json:"scheduled"`
	Sent             int            `json:"sent"`
	SendFailed       int            `json:"send_failed"`
	SendErrors       map[string]int `json:"send_errors,omitempty"`
	SendLatency      ltSummary      `json:"send_latency"`
	Delivery         ltSummary      `json:"delivery_latency"`
	AllDelivered     ltSummary      `json:"all_delivered_latency"`
	DeliveriesWanted int            `json:"deliveries_wanted"`
	DeliveriesSeen   int            `json:"deliveries_seen"`
	Lost             int            `json:"fanouts_not_delivered_to_all"`
	Duplicates       int            `json:"duplicates"`
	SyncErrors       map[string]int `json:"sync_errors,omitempty"`
}

func (r *fedRun) toDevice(ctx context.Context) error {
	o := r.o
	n := o.ToDeviceDevices
	r.logf("todevice: fan-outs from A to %d devices on B at %s/s", n, trimFloat(o.ToDeviceRate))
	if err := r.startSites(ctx, "todevice"); err != nil {
		return err
	}
	defer r.stopSites()
	names := make([]string, n)
	idx := make([]int, n)
	for i := range names {
		names[i], idx[i] = fmt.Sprintf("%s-t%d", o.Prefix, i), i
	}
	targets, err := r.newUsers(ctx, r.b, names, idx)
	if err != nil {
		return err
	}
	senders, err := r.newUsers(ctx, r.a, []string{o.Prefix + "-sender"}, []int{n})
	if err != nil {
		return err
	}
	f := newFanout(senders[0], targets)
	rep := &fedToDeviceReport{Devices: n, TargetRate: o.ToDeviceRate}
	r.rep.ToDevice = rep

	syncers := newSyncers(r.b.c, targets, nil, nil, r.runID, o.SyncTimeout)
	syncers.toDevice = f.tr
	if err := syncers.initial(ctx, o.Concurrency, r.logf); err != nil {
		return err
	}
	sctx, stopSync := context.WithCancel(ctx)
	defer func() {
		stopSync()
		syncers.wait()
	}()
	syncers.start(sctx)

	var (
		mu      sync.Mutex
		putLat  []time.Duration
		errs    = map[string]int{}
		wg      sync.WaitGroup
		seq     int64
		started = time.Now()
	)
	send := func(measured bool) {
		seq++
		s := seq
		if measured {
			rep.Scheduled++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := f.body(r.runID, s, time.Now().UnixMilli())
			start := f.tr.begin(s, 0, n, measured)
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := r.a.c.sendToDevice(pctx, f.sender.AccessToken, ltToDeviceType, fmt.Sprintf("lt-ftd-%s-%d", r.runID, s), body)
			cancel()
			lat := time.Since(start)
			f.tr.sent(s, err == nil)
			if !measured {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.SendFailed++
				errs[errKey(err)]++
				return
			}
			rep.Sent++
			putLat = append(putLat, lat)
		}()
	}
	// Warm-up (not counted), then the measured window, at the rate.
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.ToDeviceRate))
	defer tick.Stop()
	warmEnd := started.Add(o.Warmup)
	end := warmEnd.Add(o.Duration)
	profDone := func() {}
	profiling := false
	for now := time.Now(); now.Before(end) && ctx.Err() == nil; now = time.Now() {
		measured := !now.Before(warmEnd)
		if measured && !profiling {
			profiling = true
			profDone = r.startProfiles(ctx, "todevice", o.ProfileSeconds)
		}
		send(measured)
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	graceEnd := time.Now().Add(o.Grace)
	for !f.tr.settled() && time.Now().Before(graceEnd) && ctx.Err() == nil {
		sleepCtx(ctx, 20*time.Millisecond)
	}
	profDone()
	rep.WindowSeconds = time.Since(warmEnd).Seconds()
	res := f.tr.result()
	rep.SendLatency = summarize(putLat)
	rep.Delivery = summarize(res.Latencies)
	rep.AllDelivered = summarize(res.Completions)
	rep.DeliveriesWanted, rep.DeliveriesSeen, rep.Lost, rep.Duplicates = res.Expected, res.Seen, res.Lost, res.Duplicates
	if len(errs) > 0 {
		rep.SendErrors = errs
	}
	if se := syncers.errors(); len(se) > 0 {
		rep.SyncErrors = se
	}
	got := fmt.Sprintf("%.1f ms (%d fan-outs)", rep.AllDelivered.P99, rep.AllDelivered.Count)
	r.rep.target(fmt.Sprintf("to-device fan-out to %d devices on B, p99", n), "<= 200 ms", got, rep.AllDelivered.P99 <= 200 && rep.AllDelivered.Count > 0)
	r.rep.target("to-device: nothing lost or doubled", "0", fmt.Sprintf("%d lost, %d duplicates of %d sent", rep.Lost, rep.Duplicates, rep.Sent),
		rep.Lost == 0 && rep.Duplicates == 0 && rep.Sent > 0)
	if n != 100 {
		r.rep.note("the fan-out went to %d devices, not the target's 100", n)
	}
	return nil
}

func (t *fedToDeviceReport) write(p func(string, ...any)) {
	p("To-device fan-out from A to %d devices on B at %s/s: measured window %.1f s", t.Devices, trimFloat(t.TargetRate), t.WindowSeconds)
	p("  scheduled %d, sent OK %d, failed %d", t.Scheduled, t.Sent, t.SendFailed)
	p("  PUT latency on A          %s", fmtSummary(t.SendLatency))
	p("  delivery latency (each)   %s", fmtSummary(t.Delivery))
	p("  until all %-4d had it     %s", t.Devices, fmtSummary(t.AllDelivered))
	p("  deliveries expected %d, seen %d; fan-outs not delivered to all %d; duplicates %d",
		t.DeliveriesWanted, t.DeliveriesSeen, t.Lost, t.Duplicates)
	if len(t.SendErrors) > 0 {
		p("  send errors: %s", fmtCounts(t.SendErrors))
	}
	if len(t.SyncErrors) > 0 {
		p("  sync errors: %s", fmtCounts(t.SyncErrors))
	}
}
