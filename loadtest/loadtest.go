// Package loadtest is `haven loadtest`: it drives a running server with
// many users, rooms, /sync long-polls and messages (or one of the
// to-device, claim, media and search scenarios), and reports latencies,
// losses and what the server spent (CPU, DB queries, memory). See
// docs/benchmarks.md. It talks to the server over HTTP only, as a client
// would, and reads its metrics and /proc; it shares no code with it. The
// one exception is the backup benchmarks' filler (backupfill.go, command
// loadtest/benchfill), which writes message events straight into a stopped
// server's database through package storage.
package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"runtime"
	"time"
)

// Usage is the one-line description of the command.
const Usage = "load a running server: --hs URL --users N --rooms R --rate MSGS_PER_S --duration D [--shared-secret S] [--metrics URL] [--pid PID] [--sync sync|sliding] (see --help)"

// ltOptions are the flags of haven loadtest.
type ltOptions struct {
	HS                 string
	Users, Rooms       int
	Rate               float64
	Duration, Warmup   time.Duration
	Grace              time.Duration
	SharedSecret       string
	RegisterOpen       bool
	MetricsURL         string
	PID                int
	Prefix             string
	InitialSyncRooms   int
	InitialSyncRepeats int
	JSON               bool
	Concurrency        int
	MaxInFlight        int
	TimelineLimit      int
	SyncTimeout        time.Duration
	CPUProfile         string
	HeapProfile        string
	DBProcess          string
	// Sync is the long-poll each user holds: "sync" (/sync) or "sliding"
	// (sliding sync, sliding.go).
	Sync string

	// Scenario modes (loadtest_scenario*.go); "messages" is the default.
	Scenario   string
	Workers    int
	OTKs       int
	MediaBytes int
	Messages   int
}

var ltPrefixRE = regexp.MustCompile(`^[a-z0-9._=/-]{1,64}$`)

// parseLoadtestFlags parses and checks the flags; code >= 0 means exit with it.
func parseLoadtestFlags(args []string, stderr io.Writer) (ltOptions, int) {
	var o ltOptions
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.HS, "hs", "http://127.0.0.1:8008", "base URL of the server's client API")
	fs.IntVar(&o.Users, "users", 10, "number of users (each holds one /sync long-poll)")
	fs.IntVar(&o.Rooms, "rooms", 2, "number of rooms the users are spread over")
	fs.Float64Var(&o.Rate, "rate", 10, "messages per second, in total over all users (0: idle long-polls only)")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "length of the measured window (0: setup and --initial-sync-rooms only)")
	fs.DurationVar(&o.Warmup, "warmup", 0, "load before the measured window, not counted")
	fs.DurationVar(&o.Grace, "grace", 10*time.Second, "how long after the last send a message may take to reach every member before it counts as lost")
	fs.StringVar(&o.SharedSecret, "shared-secret", "", "registration.shared_secret of the server: register through /_synapse/admin/v1/register")
	fs.BoolVar(&o.RegisterOpen, "register-open", false, "register through /register with m.login.dummy (the default without --shared-secret)")
	fs.StringVar(&o.MetricsURL, "metrics", "", "the server's metrics listener, e.g. http://127.0.0.1:9100 (for CPU, DB queries, memory)")
	fs.IntVar(&o.PID, "pid", 0, "process ID of a server on this machine: read its CPU and memory from /proc")
	fs.StringVar(&o.Prefix, "prefix", "lt", "prefix of the account names and room aliases (a new prefix gives new accounts and rooms)")
	fs.IntVar(&o.InitialSyncRooms, "initial-sync-rooms", 0, "after the load: one more user joins this many rooms; measure its initial /sync")
	fs.IntVar(&o.InitialSyncRepeats, "initial-sync-repeats", 20, "how many warm initial syncs to time")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON on stdout (the text report then goes to stderr)")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "parallel requests during setup")
	fs.IntVar(&o.MaxInFlight, "max-inflight", 2000, "most message PUTs in flight at once; a send beyond it is skipped and counted")
	fs.IntVar(&o.TimelineLimit, "timeline-limit", 20, "timeline limit of the users' /sync filter (with --sync sliding: of the list)")
	fs.DurationVar(&o.SyncTimeout, "sync-timeout", 30*time.Second, "long-poll timeout of each /sync")
	fs.StringVar(&o.Sync, "sync", "sync", "the long-poll each user holds: sync (/sync) or sliding (sliding sync, MSC4186: one list of the first 20 rooms with timeline_limit --timeline-limit, an Element X-like required_state, the to_device and e2ee extensions; Element X's room list asks timeline_limit 1: a message then counts as lost when another of its room follows it before the next answer)")
	fs.StringVar(&o.DBProcess, "db-process", "", "command name of the database's processes on this machine (e.g. postgres): report their CPU too")
	fs.StringVar(&o.CPUProfile, "cpu-profile", "", "with --metrics: save the server's CPU profile of the measured window to this file")
	fs.StringVar(&o.HeapProfile, "heap-profile", "", "with --metrics: save the server's heap profile (after a GC) at the end of the measured window to this file")
	fs.StringVar(&o.Scenario, "scenario", "messages", "what to load: messages (room messages, or idle with --rate 0), todevice (--rate fan-outs/s of /sendToDevice from one sender to every user's device), claim (/keys/claim of every user's device at once), media (upload then download --media-bytes files), search (fill a room with --messages messages, then time /search)")
	fs.IntVar(&o.Workers, "workers", 1, "claim, media, search: requests in flight at once in the measured window (closed loop)")
	fs.IntVar(&o.OTKs, "otks", 50, "claim: one-time keys each device uploads per round (a round is that many claims; then every device uploads as many again)")
	fs.IntVar(&o.MediaBytes, "media-bytes", 1<<20, "media: size of each uploaded file in bytes")
	fs.IntVar(&o.Messages, "messages", 100000, "search: messages sent into the first room before the searches")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: haven loadtest --hs URL --users N --rooms R --rate MSGS_PER_S --duration D [--shared-secret S | --register-open] [--metrics URL] [--pid PID] [--sync sync|sliding] [flags]")
		fmt.Fprintln(stderr, "       haven loadtest --scenario todevice|claim|media|search ... (see docs/benchmarks.md, \"Issue 3 benchmarks\")")
		fmt.Fprintln(stderr, "Run the server with HAVEN_RATE_LIMITS_ENABLED=false, or the sends meet 429s. Exit codes: 0 done, 1 error, 2 bad flags,")
		fmt.Fprintln(stderr, "3 messages lost (todevice: fan-outs not delivered to every device; claim: a key handed out twice or wrong; media: a download differing from its upload).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0
		}
		return o, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "haven loadtest: unexpected argument %q\n", fs.Arg(0))
		return o, 2
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(stderr, "haven loadtest:", err)
		return o, 2
	}
	return o, -1
}

func (o ltOptions) check() error {
	var errs []error
	u, err := url.Parse(o.HS)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--hs %q: give the server's base URL, e.g. http://127.0.0.1:8008", o.HS))
	}
	if o.Users < 0 || o.Rooms < 0 || o.Rate < 0 || o.Duration < 0 || o.Warmup < 0 || o.Grace < 0 || o.InitialSyncRooms < 0 {
		errs = append(errs, errors.New("--users, --rooms, --rate, --duration, --warmup, --grace and --initial-sync-rooms must not be negative"))
	}
	if o.Duration > 0 && (o.Users == 0 || o.Rooms == 0) && (o.Scenario == "messages" || o.Scenario == "todevice" || o.Scenario == "search") {
		errs = append(errs, errors.New("a load phase (--duration > 0) needs --users and --rooms above 0; use --duration 0 for --initial-sync-rooms alone"))
	}
	errs = append(errs, o.checkScenario()...)
	if o.SharedSecret != "" && o.RegisterOpen {
		errs = append(errs, errors.New("give either --shared-secret or --register-open, not both"))
	}
	if !ltPrefixRE.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("--prefix %q: use lower-case letters, digits and ._=/- only", o.Prefix))
	}
	if o.Concurrency < 1 || o.MaxInFlight < 1 || o.TimelineLimit < 1 || o.InitialSyncRepeats < 1 {
		errs = append(errs, errors.New("--concurrency, --max-inflight, --timeline-limit and --initial-sync-repeats must be at least 1"))
	}
	if (o.CPUProfile != "" || o.HeapProfile != "") && o.MetricsURL == "" {
		errs = append(errs, errors.New("--cpu-profile and --heap-profile need --metrics (the profiles are served on the metrics listener)"))
	}
	switch {
	case o.Sync != "sync" && o.Sync != "sliding":
		errs = append(errs, fmt.Errorf("--sync %q: use sync or sliding", o.Sync))
	case o.Sync == "sliding" && o.Scenario != "messages":
		errs = append(errs, errors.New("--sync sliding goes with --scenario messages only"))
	}
	if o.SyncTimeout < time.Second {
		errs = append(errs, errors.New("--sync-timeout must be at least 1s"))
	}
	return errors.Join(errs...)
}

// Run runs `haven loadtest` with its arguments and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, code := parseLoadtestFlags(args, stderr)
	if code >= 0 {
		return code
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	rep, err := loadtest(ctx, opts, logf)
	if err != nil {
		rep.Error = err.Error()
	}
	text := stdout
	if opts.JSON {
		text = stderr
	}
	rep.writeText(text)
	if opts.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			fmt.Fprintln(stderr, "haven loadtest: JSON:", jerr)
			return 1
		}
	}
	switch {
	case err != nil:
		return 1
	case rep.Load != nil && rep.Load.LostMessages > 0:
		return 3
	case rep.integrityFailures() > 0:
		return 3
	}
	return 0
}

// ltEnv is what the phases of a run share.
type ltEnv struct {
	opts  ltOptions
	c     *mxClient
	probe *ltProbe
	setup *ltSetup
	runID string
	logf  func(string, ...any)

	fanout *ltFanout // --scenario todevice: the sender and its targets
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loadtest runs the whole test. The report is returned even on error, with
// what was measured until then.
func loadtest(ctx context.Context, opts ltOptions, logf func(string, ...any)) (*Report, error) {
	start := time.Now()
	cpu0, _ := selfCPU()
	rep := newReport(opts, start)
	env := &ltEnv{opts: opts, c: newMXClient(opts.HS, opts.Users+opts.MaxInFlight+64), probe: newProbe(opts.MetricsURL, opts.PID),
		runID: rep.RunID, logf: logf}
	env.setup = &ltSetup{c: env.c, opts: opts, logf: logf, workers: opts.Concurrency}
	defer env.c.close()
	defer func() {
		cpu1, _ := selfCPU()
		rep.LoadGen.TotalCPUSeconds = (cpu1 - cpu0).Seconds()
		rep.LoadGen.TotalSeconds = time.Since(start).Seconds()
	}()
	if err := env.run(ctx, rep); err != nil {
		return rep, err
	}
	return rep, nil
}

func newReport(o ltOptions, start time.Time) *Report {
	reg := "open (m.login.dummy)"
	if o.SharedSecret != "" {
		reg = "shared secret"
	}
	rep := &Report{RunID: newRunID(), Started: start, Config: ltConfigReport{
		Homeserver: o.HS, Users: o.Users, Rooms: o.Rooms, Rate: o.Rate, Duration: o.Duration.String(), Warmup: o.Warmup.String(),
		Grace: o.Grace.String(), Registration: reg, Prefix: o.Prefix, TimelineLimit: o.TimelineLimit,
		SyncTimeoutMS: o.SyncTimeout.Milliseconds(), MaxInFlight: o.MaxInFlight, InitialSyncRooms: o.InitialSyncRooms,
	}}
	c := &rep.Config
	c.Scenario = o.Scenario
	if o.Sync == "sliding" {
		c.Sync = o.Sync
	}
	switch o.Scenario {
	case "claim":
		c.Workers, c.OTKs = o.Workers, o.OTKs
	case "media":
		c.Workers, c.MediaBytes = o.Workers, o.MediaBytes
	case "search":
		c.Workers, c.Messages = o.Workers, o.Messages
	}
	return rep
}

func (e *ltEnv) run(ctx context.Context, rep *Report) error {
	if _, err := e.c.do(ctx, "versions", "GET", "/_matrix/client/versions", "", nil, nil); err != nil {
		return fmt.Errorf("server not reachable at %s: %w", e.opts.HS, err)
	}
	e.logf("run %s: %d accounts (prefix %q)", e.runID, e.opts.Users, e.opts.Prefix)
	users, err := e.setup.users(ctx, &rep.Setup)
	if err != nil {
		e.noteErrors(rep, err)
		return err
	}
	switch e.opts.Scenario {
	case "claim":
		return e.claimScenario(ctx, users, rep)
	case "media":
		return e.mediaScenario(ctx, users, rep)
	}
	plan, layout := planRooms(e.opts.Users, e.opts.Rooms)
	rep.Setup.Layout = layout
	e.logf("%d rooms: %s", len(plan), layout)
	rooms, err := e.setup.rooms(ctx, users, plan, &rep.Setup)
	if err != nil {
		e.noteErrors(rep, err)
		return err
	}
	if e.opts.Scenario == "search" {
		return e.searchScenario(ctx, users, rooms, rep)
	}
	if e.opts.Scenario == "todevice" {
		if e.fanout, err = e.toDeviceSetup(ctx, users, rooms); err != nil {
			e.noteErrors(rep, err)
			return err
		}
	}
	if e.opts.Duration > 0 {
		if err := e.loadPhase(ctx, users, rooms, rep); err != nil {
			return err
		}
	}
	if e.opts.InitialSyncRooms > 0 {
		is, err := e.initialSync(ctx, users, rooms)
		rep.InitialSync = is
		if err != nil {
			e.noteErrors(rep, err)
			return fmt.Errorf("initial sync measurement: %w", err)
		}
	}
	return nil
}

// noteErrors adds the advice an error calls for.
func (e *ltEnv) noteErrors(rep *Report, err error) {
	if hasErrCode(err, "M_LIMIT_EXCEEDED") {
		rep.note("the server rate-limited the load test (429 M_LIMIT_EXCEEDED): run it with HAVEN_RATE_LIMITS_ENABLED=false")
	}
	if errKey(err) == "too many open files" {
		rep.note("out of file descriptors: raise `ulimit -n` for the server and the load test")
	}
}

// loadPhase holds the long-polls open, sends (or idles) through warm-up and
// the measured window, and fills rep.Load and rep.Server.
func (e *ltEnv) loadPhase(ctx context.Context, users []*ltUser, rooms []*ltRoom, rep *Report) error {
	tr := newTracker(rooms)
	syncCtx, stopSyncs := context.WithCancel(ctx)
	defer stopSyncs()
	sy := newSyncers(e.c, users, rooms, tr, e.runID, e.opts.SyncTimeout)
	sy.sliding, sy.timelineLimit = e.opts.Sync == "sliding", e.opts.TimelineLimit
	// dtr follows what is sent: room messages, or to-device fan-outs.
	dtr := tr
	if e.fanout != nil {
		dtr = e.fanout.tr
		sy.toDevice = dtr
	}
	before, _ := e.probe.sample(ctx, true)
	watch := e.probe.watch(ctx, 500*time.Millisecond)
	t0 := time.Now()
	e.logf("%d initial syncs", len(users))
	if err := sy.initial(ctx, e.opts.Concurrency, e.logf); err != nil {
		watch.stop()
		e.noteErrors(rep, err)
		return err
	}
	rep.Setup.InitialSyncSeconds = time.Since(t0).Seconds()
	sy.start(syncCtx)
	rep.Setup.LongPollsOpen, rep.Setup.ServerSyncWaiters = e.waitLongPolls(ctx, sy, int64(len(users)))
	e.logf("%d long-polls open", rep.Setup.LongPollsOpen)

	snd := &ltSender{c: e.c, users: users, rooms: rooms, tr: dtr, runID: e.runID, maxInFlight: int64(e.opts.MaxInFlight), sendTimeout: 30 * time.Second,
		fanout: e.fanout}
	if e.opts.Warmup > 0 {
		e.logf("warm-up %s", e.opts.Warmup)
		if e.opts.Rate > 0 {
			snd.run(ctx, e.opts.Rate, e.opts.Warmup, false)
		} else {
			sleepCtx(ctx, e.opts.Warmup)
		}
	}

	w := e.beginWindow(ctx, sy)
	watch.mark(w.s0)
	profileDone := e.startCPUProfile(ctx, rep)
	load := &ltLoadReport{Mode: "idle", TargetRate: e.opts.Rate}
	if e.opts.Rate > 0 {
		unit := "msg"
		load.Mode = "messages"
		if e.fanout != nil {
			load.Mode, unit = "todevice", "fan-outs"
		}
		e.logf("sending %s %s/s for %s", trimFloat(e.opts.Rate), unit, e.opts.Duration)
		sendStart := time.Now()
		st := snd.run(ctx, e.opts.Rate, e.opts.Duration, true)
		load.SendSeconds = time.Since(sendStart).Seconds()
		load.scheduleSeconds = e.opts.Duration.Seconds()
		snd.waitSends()
		settleStart := time.Now()
		waitSettled(ctx, dtr, e.opts.Grace)
		load.SettleSeconds = time.Since(settleStart).Seconds()
		fillSends(load, st)
		res := dtr.result()
		fillDeliveries(load, res)
		if e.fanout != nil {
			all := summarize(res.Completions)
			load.AllDelivered = &all
			load.Targets = len(e.fanout.targets)
		}
	} else {
		e.logf("idle for %s", e.opts.Duration)
		sleepCtx(ctx, e.opts.Duration)
	}
	e.endWindow(ctx, w, sy, load, rep)
	e.saveHeapProfile(ctx, rep)
	profileDone()
	peaks := watch.stop()
	stopSyncs()
	sy.wait()
	rep.Load = load
	work := ltWork{Window: load.WindowSeconds, Ops: load.Sent, Unit: "message", Deliveries: load.DeliveriesSeen, Syncs: load.Syncs}
	if e.fanout != nil {
		work.Unit = "fan-out"
	}
	rep.Server = e.serverReport(before, w, peaks, work, len(users))
	e.machineOthers(rep, work)
	e.addNotes(rep)
	return ctx.Err()
}

// ltWindow holds the readings at the start and end of the measured window.
type ltWindow struct {
	start, end         time.Time
	s0, s1             ltServerSample
	cpu0, cpu1         time.Duration
	syncs0, empty0     int64
	m0, m1             ltMachineCPU
	db0, db1           float64
	dbProcs            int
	err0, err1         error
	haveCPU0, haveCPU1 bool
}

// beginWindow takes the readings at the start of the window; sy is nil in
// the scenarios without long-polls.
func (e *ltEnv) beginWindow(ctx context.Context, sy *ltSyncers) *ltWindow {
	w := &ltWindow{}
	w.s0, w.err0 = e.probe.sample(ctx, true)
	w.cpu0, w.haveCPU0 = selfCPU()
	w.m0 = readMachineCPU()
	if e.opts.DBProcess != "" {
		w.db0, _ = processesCPU(e.opts.DBProcess)
	}
	if sy != nil {
		w.syncs0, w.empty0 = sy.completed.Load(), sy.empty.Load()
	}
	w.start = time.Now()
	return w
}

// endWindow takes the readings at the end of the window; sy and load are
// nil in the scenarios without long-polls.
func (e *ltEnv) endWindow(ctx context.Context, w *ltWindow, sy *ltSyncers, load *ltLoadReport, rep *Report) {
	w.end = time.Now()
	w.cpu1, w.haveCPU1 = selfCPU()
	w.m1 = readMachineCPU()
	if e.opts.DBProcess != "" {
		w.db1, w.dbProcs = processesCPU(e.opts.DBProcess)
	}
	w.s1, w.err1 = e.probe.sample(ctx, true)
	window := w.end.Sub(w.start).Seconds()
	if load != nil && sy != nil {
		load.WindowSeconds = window
		load.Syncs = sy.completed.Load() - w.syncs0
		load.SyncsEmpty = sy.empty.Load() - w.empty0
		load.LimitedTimelines = sy.limited.Load()
		load.SyncErrors = sy.errors()
		load.LongPollsAtEnd = sy.open.Load()
	}
	if w.haveCPU0 && w.haveCPU1 {
		rep.LoadGen.WindowCPUSeconds = (w.cpu1 - w.cpu0).Seconds()
		rep.LoadGen.WindowCPUPercent = 100 * rep.LoadGen.WindowCPUSeconds / window
	}
	if w.m0.OK && w.m1.OK {
		rep.Machine = &ltMachineReport{Cores: runtime.NumCPU(), BusySeconds: w.m1.Busy - w.m0.Busy, IOWaitSeconds: w.m1.IOWait - w.m0.IOWait}
		if e.opts.DBProcess != "" {
			rep.Machine.DBProcess, rep.Machine.DBProcesses, rep.Machine.DBSeconds = e.opts.DBProcess, w.dbProcs, fp(w.db1-w.db0)
		}
	}
}

// waitLongPolls waits (up to a minute) until every user's long-poll is in
// flight and, with --metrics, the server counts them as waiting.
func (e *ltEnv) waitLongPolls(ctx context.Context, sy *ltSyncers, n int64) (int64, *float64) {
	deadline := time.Now().Add(time.Minute)
	var waiters *float64
	for {
		open := sy.open.Load()
		serverOK := true
		if e.opts.MetricsURL != "" {
			s, err := e.probe.sample(ctx, true)
			v, ok := s.metric(mWaiters)
			if ok {
				waiters = fp(v)
			}
			serverOK = err == nil && ok && int64(v) >= n
		}
		if (open >= n && serverOK) || time.Now().After(deadline) || ctx.Err() != nil {
			return open, waiters
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// waitSettled waits until every message has reached every member, or grace.
func waitSettled(ctx context.Context, tr *ltTracker, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for !tr.settled() && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func fillSends(l *ltLoadReport, st *ltSendStats) {
	st.mu.Lock()
	defer st.mu.Unlock()
	l.Scheduled, l.Sent, l.SendFailed, l.Late, l.Skipped = st.scheduled, st.ok, st.failed, st.late, st.skipped
	if span := max(l.SendSeconds, l.scheduleSeconds); span > 0 {
		l.AchievedRate = float64(st.ok) / span
	}
	if len(st.errs) > 0 {
		l.SendErrors = st.errs
	}
	l.SendLatency = summarize(st.latency)
	l.ScheduleLag = summarize(st.lag)
}

func fillDeliveries(l *ltLoadReport, r ltDeliveryResult) {
	l.DeliveriesWanted, l.DeliveriesSeen = r.Expected, r.Seen
	l.LostMessages, l.MissingDeliveries, l.LostExamples = r.Lost, r.Missing, r.LostExamples
	l.Duplicates, l.AfterFailure, l.UnknownEvents = r.Duplicates, r.AfterFailure, r.Unknown
	l.DeliveryLatency = summarize(r.Latencies)
}

// ltWork is what the server did in the measured window: Ops operations of
// one kind (Unit: "message" for room messages, else "fan-out", "claim", ...).
type ltWork struct {
	Window     float64
	Ops        int
	Unit       string
	Deliveries int
	Syncs      int64
}

// serverReport turns the readings into per-operation and per-sync figures;
// room messages keep their own fields (cpu_ms_per_message, ...).
func (e *ltEnv) serverReport(before ltServerSample, w *ltWindow, peaks ltPeaks, work ltWork, users int) *ltServerReport {
	if !e.probe.enabled() {
		return nil
	}
	sv := &ltServerReport{Sources: e.probe.sources()}
	for _, err := range []error{w.err0, w.err1} {
		if err != nil {
			sv.Problems = append(sv.Problems, err.Error())
		}
	}
	if c0, ok0 := w.s0.cpu(); ok0 {
		if c1, ok1 := w.s1.cpu(); ok1 {
			cpu := c1 - c0
			sv.CPUSeconds = fp(cpu)
			sv.CPUPercent = fp(100 * cpu / work.Window)
			if work.Ops > 0 {
				if work.Unit == "message" {
					sv.CPUMsPerMessage = fp(1000 * cpu / float64(work.Ops))
				} else {
					sv.Unit, sv.CPUMsPerOp = work.Unit, fp(1000*cpu/float64(work.Ops))
				}
			}
			if work.Deliveries > 0 {
				sv.CPUMsPerDelivery = fp(1000 * cpu / float64(work.Deliveries))
			}
		}
	}
	if q0, ok0 := w.s0.metric(mQueries); ok0 {
		if q1, ok1 := w.s1.metric(mQueries); ok1 {
			q := q1 - q0
			sv.DBQueries = fp(q)
			if work.Ops > 0 {
				if work.Unit == "message" {
					sv.DBQueriesPerMessage = fp(q / float64(work.Ops))
				} else {
					sv.Unit, sv.DBQueriesPerOp = work.Unit, fp(q/float64(work.Ops))
				}
			}
			if work.Syncs > 0 {
				sv.DBQueriesPerSync = fp(q / float64(work.Syncs))
			}
		}
	}
	const mib = 1 << 20
	if v, ok := before.rss(); ok {
		sv.RSSBeforeMiB = fp(v / mib)
	}
	if v, ok := w.s1.rss(); ok {
		sv.RSSAfterMiB = fp(v / mib)
	}
	if peaks.HasRSS {
		sv.RSSPeakMiB = fp(peaks.RSS / mib)
		sv.RSSWindowPeakMiB = fp(peaks.WindowRSS / mib)
		if v, ok := before.rss(); ok && users > 0 {
			sv.RSSPerLongPollKiB = fp((peaks.RSS - v) / 1024 / float64(users))
		}
	}
	if w.s1.HasProc {
		sv.VmHWMMiB = fp(float64(w.s1.VmHWM) / mib)
	}
	if peaks.HasWaiter {
		sv.SyncWaitersPeak = fp(peaks.Waiters)
	} else if v, ok := w.s1.metric(mWaiters); ok {
		sv.SyncWaitersPeak = fp(v)
	}
	if v, ok := w.s1.metric(mRoutines); ok {
		sv.Goroutines = fp(v)
	}
	heap, ok1 := w.s1.metric(mHeap)
	stack, ok2 := w.s1.metric(mStack)
	idle, ok3 := w.s1.metric(mIdle)
	released, ok4 := w.s1.metric(mReleased)
	if ok1 && ok2 && ok3 && ok4 {
		sv.HeapInuseMiB, sv.StackInuseMiB, sv.HeapUnreturnedMiB = fp(heap/mib), fp(stack/mib), fp((idle-released)/mib)
	}
	return sv
}

// machineOthers sets the CPU of the machine's other processes (and the
// database's per operation) once the server's CPU is known.
func (e *ltEnv) machineOthers(rep *Report, work ltWork) {
	if rep.Machine == nil || rep.Server == nil || rep.Server.CPUSeconds == nil {
		return
	}
	others := rep.Machine.BusySeconds - *rep.Server.CPUSeconds - rep.LoadGen.WindowCPUSeconds
	if m := rep.Machine; m.DBSeconds != nil {
		others -= *m.DBSeconds
		if work.Ops > 0 {
			if work.Unit == "message" {
				m.DBMsPerMessage = fp(1000 * *m.DBSeconds / float64(work.Ops))
			} else {
				m.Unit, m.DBMsPerOp = work.Unit, fp(1000**m.DBSeconds/float64(work.Ops))
			}
		}
	}
	rep.Machine.OthersSeconds = fp(others)
}

// addNotes explains what the figures mean when something went wrong.
func (e *ltEnv) addNotes(rep *Report) {
	l := rep.Load
	for k := range l.SendErrors {
		if k == "429 M_LIMIT_EXCEEDED" {
			rep.note("sends were rate-limited (429 M_LIMIT_EXCEEDED): run the server with HAVEN_RATE_LIMITS_ENABLED=false")
		}
		if k == "too many open files" {
			rep.note("out of file descriptors: raise `ulimit -n` for the server and the load test")
		}
	}
	if l.LostMessages > 0 {
		rep.note("%d message(s) did not reach every member within the grace period (%s); examples (sequence numbers): %v",
			l.LostMessages, e.opts.Grace, l.LostExamples)
	}
	switch {
	case l.LimitedTimelines > 0 && e.opts.Sync == "sliding":
		rep.note("%d rooms in sliding sync answers had a limited timeline (more new events than timeline_limit %d, --timeline-limit): those events count as not delivered",
			l.LimitedTimelines, e.opts.TimelineLimit)
	case l.LimitedTimelines > 0:
		rep.note("%d /sync answers had a limited timeline (more new events than --timeline-limit %d): those events count as not delivered",
			l.LimitedTimelines, e.opts.TimelineLimit)
	}
	if l.Late > 0 {
		rep.note("%d send(s) were dispatched more than one interval after they were due: the load generator could not keep the schedule (it shares the CPU with the server); latencies are measured from the actual send", l.Late)
	}
	if l.Skipped > 0 {
		rep.note("%d send(s) were skipped because %d PUTs were already in flight: the server did not keep up", l.Skipped, e.opts.MaxInFlight)
	}
	if l.LongPollsAtEnd < int64(rep.Config.Users) {
		rep.note("only %d of %d long-polls were open at the end of the window", l.LongPollsAtEnd, rep.Config.Users)
	}
	if rep.Setup.LongPollsOpen < int64(rep.Config.Users) {
		rep.note("only %d of %d long-polls were open when the window started", rep.Setup.LongPollsOpen, rep.Config.Users)
	}
}

// startCPUProfile starts a server CPU profile as long as the measured window
// (when --cpu-profile is given); the returned func waits for it.
func (e *ltEnv) startCPUProfile(ctx context.Context, rep *Report) (wait func()) {
	if e.opts.CPUProfile == "" {
		return func() {}
	}
	secs := int(e.opts.Duration.Round(time.Second).Seconds())
	secs = max(secs, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.probe.saveProfile(ctx, fmt.Sprintf("profile?seconds=%d", secs), e.opts.CPUProfile)
	}()
	return func() {
		if err := <-done; err != nil {
			rep.note("CPU profile not saved: %v", err)
			return
		}
		e.logf("server CPU profile of %d s saved to %s", secs, e.opts.CPUProfile)
	}
}

// saveHeapProfile saves the server's heap profile (when --heap-profile is given).
func (e *ltEnv) saveHeapProfile(ctx context.Context, rep *Report) {
	if e.opts.HeapProfile == "" {
		return
	}
	if err := e.probe.saveProfile(ctx, "heap?gc=1", e.opts.HeapProfile); err != nil {
		rep.note("heap profile not saved: %v", err)
		return
	}
	e.logf("server heap profile saved to %s", e.opts.HeapProfile)
}
