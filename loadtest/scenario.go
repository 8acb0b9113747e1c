package loadtest

// What the scenarios other than room messages share: their flags' checks,
// the closed-loop workers of claim, media and search, the measured window
// without long-polls, and their report sections.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

var ltScenarios = map[string]bool{"messages": true, "todevice": true, "claim": true, "media": true, "search": true}

// checkScenario checks the flags of the scenario modes.
func (o ltOptions) checkScenario() []error {
	var errs []error
	if !ltScenarios[o.Scenario] {
		return []error{fmt.Errorf("--scenario %q: use messages, todevice, claim, media or search", o.Scenario)}
	}
	if o.Workers < 1 {
		errs = append(errs, errors.New("--workers must be at least 1"))
	}
	switch o.Scenario {
	case "messages":
		return errs
	case "todevice":
		if o.Rate <= 0 {
			errs = append(errs, errors.New("--scenario todevice needs --rate above 0 (fan-outs per second)"))
		}
	case "claim":
		if o.OTKs < 1 || o.OTKs > 1000 {
			errs = append(errs, errors.New("--otks must be between 1 and 1000 (the server takes at most 1000 one-time keys per upload)"))
		}
	case "media":
		if o.MediaBytes < 1 {
			errs = append(errs, errors.New("--media-bytes must be at least 1"))
		}
	case "search":
		if o.Messages < 1 {
			errs = append(errs, errors.New("--messages must be at least 1"))
		}
	}
	if o.Scenario != "todevice" {
		if o.Duration <= 0 || o.Users < 1 {
			errs = append(errs, fmt.Errorf("--scenario %s needs --duration and --users above 0", o.Scenario))
		}
	}
	if o.InitialSyncRooms > 0 {
		errs = append(errs, fmt.Errorf("--initial-sync-rooms goes with --scenario messages only, not %s", o.Scenario))
	}
	return errs
}

// scenarioLine describes the configuration of a scenario other than messages.
func (c ltConfigReport) scenarioLine() string {
	switch c.Scenario {
	case "todevice":
		return fmt.Sprintf("%d users (one device each) in %d rooms, %s fan-outs/s from one sender for %s (warm-up %s, grace %s), %s registration, prefix %q",
			c.Users, c.Rooms, trimFloat(c.Rate), c.Duration, c.Warmup, c.Grace, c.Registration, c.Prefix)
	case "claim":
		return fmt.Sprintf("/keys/claim of %d devices at once, %d one-time keys per device per round, %d worker(s), for %s (warm-up %s), prefix %q",
			c.Users, c.OTKs, c.Workers, c.Duration, c.Warmup, c.Prefix)
	case "media":
		return fmt.Sprintf("%d-byte files, %d users, %d worker(s): uploads for half of %s, then downloads (warm-up %s), prefix %q",
			c.MediaBytes, c.Users, c.Workers, c.Duration, c.Warmup, c.Prefix)
	case "search":
		return fmt.Sprintf("%d messages into one room of %d users (%d rooms), then /search on %d worker(s) for %s (warm-up %s), prefix %q",
			c.Messages, c.Users, c.Rooms, c.Workers, c.Duration, c.Warmup, c.Prefix)
	}
	return c.Scenario
}

// integrityFailures counts what a scenario must never see: a key handed
// out twice or not the device's, a device left without a key, a download
// differing from its upload.
func (r *Report) integrityFailures() int {
	n := 0
	if c := r.Claim; c != nil {
		n += c.Duplicates + c.WrongKeys + c.MissingKeys
	}
	if m := r.Media; m != nil {
		n += m.Corrupt
	}
	return n
}

// windowSeconds is the length of the measured window, whatever the scenario.
func (r *Report) windowSeconds() float64 {
	switch {
	case r.Load != nil:
		return r.Load.WindowSeconds
	case r.Claim != nil:
		return r.Claim.WindowSeconds
	case r.Media != nil:
		return r.Media.WindowSeconds
	case r.Search != nil:
		return r.Search.WindowSeconds
	}
	return 0
}

// ltOpReport sums up one kind of request.
type ltOpReport struct {
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	Errors    map[string]int `json:"errors,omitempty"`
	Latency   ltSummary      `json:"latency"`
	PerSecond float64        `json:"per_second"`
}

func newOpStats() *ltSendStats { return &ltSendStats{errs: map[string]int{}} }

// opReport sums up the requests recorded in st over seconds.
func opReport(st *ltSendStats, seconds float64) ltOpReport {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := ltOpReport{OK: st.ok, Failed: st.failed, Latency: summarize(st.latency)}
	if len(st.errs) > 0 {
		r.Errors = make(map[string]int, len(st.errs))
		for k, v := range st.errs {
			r.Errors[k] = v
		}
	}
	if seconds > 0 {
		r.PerSecond = float64(st.ok) / seconds
	}
	return r
}

func fmtOp(r ltOpReport) string {
	s := fmt.Sprintf("%d OK (%.1f/s), %d failed; %s", r.OK, r.PerSecond, r.Failed, fmtSummary(r.Latency))
	if len(r.Errors) > 0 {
		s += "; errors: " + fmtCounts(r.Errors)
	}
	return s
}

// closedLoop runs fn on workers goroutines, each calling it again as soon
// as it returns, until d has passed, ctx ends or fn returns false. fn gets
// its worker number and a sequence number shared by all workers.
func closedLoop(ctx context.Context, workers int, d time.Duration, fn func(ctx context.Context, worker int, seq int64) bool) {
	end := time.Now().Add(d)
	var seq atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				if !fn(ctx, w, seq.Add(1)-1) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// measured runs fn as the measured window of a scenario without long-polls,
// with the server's and the machine's readings around it. fn returns what
// the server did, for the per-operation figures.
func (e *ltEnv) measured(ctx context.Context, rep *Report, fn func(ctx context.Context) ltWork) (window float64) {
	before, _ := e.probe.sample(ctx, true)
	watch := e.probe.watch(ctx, 500*time.Millisecond)
	w := e.beginWindow(ctx, nil)
	watch.mark(w.s0)
	profileDone := e.startCPUProfile(ctx, rep)
	work := fn(ctx)
	e.endWindow(ctx, w, nil, nil, rep)
	work.Window = w.end.Sub(w.start).Seconds()
	e.saveHeapProfile(ctx, rep)
	profileDone()
	peaks := watch.stop()
	rep.Server = e.serverReport(before, w, peaks, work, 0)
	e.machineOthers(rep, work)
	return work.Window
}

// serverCPU reads the server's CPU seconds so far (from /proc with --pid,
// else from /metrics).
func (e *ltEnv) serverCPU(ctx context.Context) (float64, bool) {
	if !e.probe.enabled() {
		return 0, false
	}
	s, _ := e.probe.sample(ctx, e.opts.PID == 0)
	return s.cpu()
}

// writeScenario prints the sections of the claim, media and search scenarios.
func (r *Report) writeScenario(p func(string, ...any)) {
	if c := r.Claim; c != nil {
		writeClaim(p, c)
	}
	if m := r.Media; m != nil {
		writeMedia(p, m)
	}
	if s := r.Search; s != nil {
		writeSearch(p, s)
	}
}
