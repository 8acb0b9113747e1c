package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/userapi"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", durations(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p95 of 1..100", hundred, 95, 95 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, 1 * time.Millisecond},
		{"p50 of four rounds up the rank", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four", durations(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p99 of ten is the max", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	if s := summarize(nil); s != (ltSummary{}) {
		t.Errorf("summarize(nil) = %+v", s)
	}
	in := durations(40, 10, 30, 20)
	s := summarize(in)
	want := ltSummary{Count: 4, Mean: 25, P50: 20, P95: 40, P99: 40, Max: 40}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if in[0] != 40*time.Millisecond {
		t.Error("summarize sorted its input")
	}
}

func TestPlanRooms(t *testing.T) {
	tests := []struct {
		users, rooms   int
		sizes          []int
		roomsPerUser   int // 0: not the same for everyone
		layoutContains string
	}{
		{500, 50, repeat(10, 50), 1, "rooms have 10 members"},
		{10, 3, []int{4, 3, 3}, 1, "rooms have 3 or 4 members"},
		{4, 4, []int{1, 1, 1, 1}, 1, "exactly one room"},
		{3, 6, repeat(2, 6), 4, "fewer users than rooms"},
		{1, 2, []int{1, 1}, 2, "1 member(s) each"},
	}
	for _, tt := range tests {
		plan, layout := planRooms(tt.users, tt.rooms)
		if !strings.Contains(layout, tt.layoutContains) {
			t.Errorf("%d/%d: layout %q lacks %q", tt.users, tt.rooms, layout, tt.layoutContains)
		}
		if len(plan) != tt.rooms {
			t.Fatalf("%d/%d: %d rooms planned", tt.users, tt.rooms, len(plan))
		}
		per := make([]int, tt.users)
		for r, members := range plan {
			if len(members) != tt.sizes[r] {
				t.Errorf("%d/%d: room %d has %d members, want %d", tt.users, tt.rooms, r, len(members), tt.sizes[r])
			}
			seen := map[int]bool{}
			for _, u := range members {
				if seen[u] {
					t.Errorf("%d/%d: user %d twice in room %d", tt.users, tt.rooms, u, r)
				}
				seen[u] = true
				per[u]++
			}
		}
		for u, n := range per {
			if n != tt.roomsPerUser {
				t.Errorf("%d/%d: user %d is in %d rooms, want %d", tt.users, tt.rooms, u, n, tt.roomsPerUser)
			}
		}
	}
	if plan, _ := planRooms(0, 5); plan != nil {
		t.Errorf("no users: plan %v", plan)
	}
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
haven_db_queries_total 1.234e+06
haven_sync_waiters 500
haven_db_queries_total_other 7
haven_http_requests_total{route="/sync",method="GET",code="200"} 3
haven_http_requests_total{route="/send",method="PUT",code="200"} 4
process_resident_memory_bytes 1.048576e+08 1700000000000
`
	m := parseMetrics([]byte(text), mCPU, mQueries, mWaiters, mRSS, "haven_http_requests_total", "absent")
	want := map[string]float64{mCPU: 12.5, mQueries: 1234000, mWaiters: 500, mRSS: 104857600, "haven_http_requests_total": 7}
	if len(m) != len(want) {
		t.Errorf("parsed %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("4242 (haven (a) b) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 1000000 2000 18446744073709551615\n")
	cpu, err := parseProcStat(stat)
	if err != nil || cpu != 3.25 {
		t.Errorf("parseProcStat = %v, %v; want 3.25 s", cpu, err)
	}
	if _, err := parseProcStat([]byte("4242 (haven) S 1")); err == nil {
		t.Error("short stat: no error")
	}
	status := []byte("Name:\thaven\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n")
	rss, hwm := parseProcStatus(status)
	if rss != 100<<20 || hwm != 200<<20 {
		t.Errorf("parseProcStatus = %d, %d", rss, hwm)
	}
}

func TestTrackerCountsLossesAndLatencies(t *testing.T) {
	plan, _ := planRooms(6, 2) // room 0: users 0, 2, 4; room 1: users 1, 3, 5
	rooms := make([]*ltRoom, len(plan))
	for r, members := range plan {
		rooms[r] = &ltRoom{Index: r, Members: members, pos: map[int]int{}}
		for p, u := range members {
			rooms[r].pos[u] = p
		}
	}
	tr := newTracker(rooms)
	start := tr.begin(1, 0, 0, true)
	tr.deliver(1, 0, 2, start.Add(5*time.Millisecond)) // before the PUT answers
	tr.sent(1, true)
	if tr.settled() {
		t.Error("settled with user 4 still waiting")
	}
	tr.deliver(1, 0, 0, start.Add(time.Millisecond)) // the sender's echo
	tr.deliver(1, 0, 4, start.Add(7*time.Millisecond))
	tr.deliver(1, 0, 4, start.Add(8*time.Millisecond)) // duplicate
	if !tr.settled() {
		t.Error("not settled after every delivery")
	}

	s2 := tr.begin(2, 1, 1, true)
	tr.sent(2, true)
	tr.deliver(2, 1, 3, s2.Add(3*time.Millisecond)) // user 5 never gets it

	tr.begin(3, 1, 3, true)
	tr.sent(3, false) // failed: expected by nobody

	w := tr.begin(4, 0, 2, false) // warm-up: delivered, not measured
	tr.sent(4, true)
	tr.deliver(4, 0, 0, w.Add(time.Millisecond))
	tr.deliver(4, 0, 4, w.Add(time.Millisecond))

	tr.deliver(99, 0, 2, time.Now()) // never sent
	tr.deliver(2, 0, 2, time.Now())  // wrong room

	r := tr.result()
	if r.Expected != 4 || r.Seen != 3 || r.Lost != 1 || r.Missing != 1 || r.LostExamples[0] != 2 {
		t.Errorf("result = %+v", r)
	}
	if r.Duplicates != 1 || r.Unknown != 2 || r.AfterFailure != 0 {
		t.Errorf("duplicates %d, unknown %d, after failure %d", r.Duplicates, r.Unknown, r.AfterFailure)
	}
	got := summarize(r.Latencies)
	if got.Count != 3 || got.P50 != 5 || got.Max != 7 {
		t.Errorf("latencies %+v", got)
	}
	if tr.settled() {
		t.Error("settled with a message lost")
	}
}

func TestForEachStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	const workers = 4
	var mu sync.Mutex
	started := 0
	err := forEach(t.Context(), 100, workers, func(ctx context.Context, i int) error {
		mu.Lock()
		started++
		mu.Unlock()
		switch {
		case i == 10:
			return boom
		case i > 10:
			<-ctx.Done() // work after the failing item waits for the cancellation
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("forEach = %v", err)
	}
	// Items 0-10, those the other workers held, and at most one more that
	// the feeder handed out as the cancellation arrived.
	if started > 11+workers {
		t.Errorf("%d items started; work went on being handed out after the error", started)
	}
	if err := forEach(t.Context(), 0, 4, nil); err != nil {
		t.Errorf("no work: %v", err)
	}
}

func sampleReport() *Report {
	rep := newReport(ltOptions{HS: "http://127.0.0.1:8008", Users: 500, Rooms: 50, Rate: 100, Duration: time.Minute,
		Grace: 10 * time.Second, SharedSecret: "s", Prefix: "lt", TimelineLimit: 20, SyncTimeout: 30 * time.Second}, time.Unix(0, 0))
	rep.Setup = ltSetupReport{Layout: "each user joins exactly one room", Registered: 500, RoomsCreated: 50, RoomSizeMin: 10, RoomSizeMax: 10,
		InitialSyncSeconds: 1, LongPollsOpen: 500, ServerSyncWaiters: fp(500)}
	rep.Load = &ltLoadReport{Mode: "messages", WindowSeconds: 60.5, SendSeconds: 60, TargetRate: 100, Scheduled: 6000, Sent: 5990,
		SendFailed: 10, SendErrors: map[string]int{"429 M_LIMIT_EXCEEDED": 7, "500 M_UNKNOWN": 3},
		SendLatency: summarize(durations(1, 2, 3)), DeliveryLatency: summarize(durations(2, 4, 6)),
		DeliveriesWanted: 53910, DeliveriesSeen: 53900, LostMessages: 2, MissingDeliveries: 10}
	rep.Server = &ltServerReport{Sources: "metrics", CPUSeconds: fp(18), CPUPercent: fp(30), CPUMsPerMessage: fp(3.005), DBQueries: fp(12000),
		DBQueriesPerMessage: fp(2.003), RSSPeakMiB: fp(120)}
	rep.note("sends were rate-limited")
	rep.note("sends were rate-limited")
	return rep
}

func TestReportText(t *testing.T) {
	var b bytes.Buffer
	sampleReport().writeText(&b)
	out := b.String()
	for _, want := range []string{
		"500 users, 50 rooms, 100 msg/s for 1m0s",
		"500 long-polls open (server haven_sync_waiters: 500)",
		"sent OK 5990",
		"send latency      p50 2.00 ms, p95 3.00 ms, p99 3.00 ms, max 3.00 ms, mean 2.00 ms (n=3)",
		"delivery latency  p50 4.00 ms",
		"deliveries expected 53910, seen 53900; LOST MESSAGES 2 (missing deliveries 10)",
		"send errors: 429 M_LIMIT_EXCEEDED ×7, 500 M_UNKNOWN ×3",
		"CPU 18.00 s (30% of one core); 3.005 ms per message",
		"DB queries 12000; 2.00 per message",
		"RSS peak (from the initial syncs on) 120.0 MiB",
		"  - sends were rate-limited\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "sends were rate-limited") != 1 {
		t.Errorf("note printed twice:\n%s", out)
	}
}

func TestReportJSON(t *testing.T) {
	data, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Load struct {
			Lost     int            `json:"lost_messages"`
			Errors   map[string]int `json:"send_errors"`
			Delivery struct {
				P99 float64 `json:"p99_ms"`
			} `json:"delivery_latency"`
		} `json:"load"`
		Server      map[string]any `json:"server"`
		InitialSync any            `json:"initial_sync"`
	}
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Load.Lost != 2 || back.Load.Errors["429 M_LIMIT_EXCEEDED"] != 7 || back.Load.Delivery.P99 != 6 {
		t.Errorf("JSON load section: %+v", back.Load)
	}
	if back.Server["cpu_ms_per_message"] != 3.005 {
		t.Errorf("JSON server section: %v", back.Server)
	}
	if _, ok := back.Server["rss_before_mib"]; ok {
		t.Error("a figure not measured is in the JSON")
	}
	if back.InitialSync != nil {
		t.Error("initial_sync present though not measured")
	}
}

func TestLoadtestFlags(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--hs", "127.0.0.1:8008"}, 2, "--hs"},
		{[]string{"--shared-secret", "x", "--register-open"}, 2, "not both"},
		{[]string{"--prefix", "Bad Prefix"}, 2, "--prefix"},
		{[]string{"--rate", "-1"}, 2, "must not be negative"},
		{[]string{"--users", "0", "--duration", "10s"}, 2, "needs --users and --rooms"},
		{[]string{"--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"extra"}, 2, "unexpected argument"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		_, code := parseLoadtestFlags(tt.args, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
	o, code := parseLoadtestFlags([]string{"--users", "500", "--rooms", "50", "--rate", "0", "--duration", "1m"}, &bytes.Buffer{})
	if code != -1 || o.Users != 500 || o.Rate != 0 || o.Duration != time.Minute {
		t.Errorf("good flags: %d %+v", code, o)
	}
}

func TestLoadtestSyncFlag(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		sync   string
		stderr string
	}{
		{nil, -1, "sync", ""},
		{[]string{"--sync", "sliding"}, -1, "sliding", ""},
		{[]string{"--sync", "sliding", "--timeline-limit", "1", "--rate", "0"}, -1, "sliding", ""},
		{[]string{"--sync", "sync"}, -1, "sync", ""},
		{[]string{"--sync", "v5"}, 2, "", `--sync "v5": use sync or sliding`},
		{[]string{"--sync", ""}, 2, "", `--sync "": use sync or sliding`},
		{[]string{"--sync", "sliding", "--scenario", "claim"}, 2, "", "--sync sliding goes with --scenario messages only"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		o, code := parseLoadtestFlags(tt.args, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
			continue
		}
		if code == -1 && o.Sync != tt.sync {
			t.Errorf("%v: sync %q, want %q", tt.args, o.Sync, tt.sync)
		}
	}
	var stderr bytes.Buffer
	parseLoadtestFlags([]string{"--help"}, &stderr)
	if !strings.Contains(stderr.String(), "--sync sync|sliding") || !strings.Contains(stderr.String(), "sliding sync, MSC4186") {
		t.Errorf("usage lacks --sync:\n%s", stderr.String())
	}
	if rep := newReport(ltOptions{Sync: "sliding", TimelineLimit: 3}, time.Unix(0, 0)); rep.Config.Sync != "sliding" || rep.Config.TimelineLimit != 3 {
		t.Errorf("report config: %+v", rep.Config)
	}
}

// TestSlidingBodyAndHandling: the sliding sync request asks for one list
// of the first 20 rooms; its answers' timelines go to the tracker as
// /sync's do.
func TestSlidingBodyAndHandling(t *testing.T) {
	b := slidingBody(1, "")
	raw, _ := json.Marshal(b)
	for _, want := range []string{`"ranges":[[0,19]]`, `"timeline_limit":1`, `["m.room.member","$ME"]`, `"to_device":{"enabled":true}`, `"e2ee":{"enabled":true}`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("request %s lacks %s", raw, want)
		}
	}
	if raw, _ := json.Marshal(slidingBody(1, "7")); !strings.Contains(string(raw), `"since":"7"`) {
		t.Errorf("to-device since not passed: %s", raw)
	}
	if p := slidingPath("12", 30*time.Second); p != ltSlidingPath+"?pos=12&timeout=30000" {
		t.Errorf("path %s", p)
	}

	rooms := []*ltRoom{{ID: "!a:x", Index: 0, Members: []int{0, 1}, pos: map[int]int{0: 0, 1: 1}}}
	tr := newTracker(rooms)
	s := newSyncers(nil, []*ltUser{{}, {}}, rooms, tr, "run1", time.Second)
	tr.begin(1, 0, 0, true)
	tr.sent(1, true)
	var resp ltSlidingResponse
	if err := json.Unmarshal([]byte(`{"pos":"3","rooms":{"!a:x":{"limited":true,"timeline":[
		{"type":"m.room.message","content":{"lt_run":"run1","lt_seq":1}},
		{"type":"m.room.message","content":{"lt_run":"other","lt_seq":1}}]},
		"!b:x":{"timeline":[]}}}`), &resp); err != nil {
		t.Fatal(err)
	}
	if !s.handleSliding(1, &resp, time.Now()) {
		t.Error("answer with events counted as empty")
	}
	if s.limited.Load() != 1 {
		t.Errorf("limited %d, want 1", s.limited.Load())
	}
	tr.mu.Lock()
	delivered, outstanding := len(tr.delivery), tr.outstanding
	tr.mu.Unlock()
	if delivered != 1 || outstanding != 0 {
		t.Errorf("delivered %d, outstanding %d; want 1, 0", delivered, outstanding)
	}
	if s.handleSliding(1, &ltSlidingResponse{}, time.Now()) {
		t.Error("answer without events counted as having some")
	}
}

func TestSharedSecretMAC(t *testing.T) {
	// HMAC-SHA1("secret", "abc\x00alice\x00pw\x00notadmin"), computed with
	// Python: hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", "sha1").hexdigest()
	const want = "42e32623fe124933c326f9d2d67ff7c617915a10"
	if got := sharedSecretMAC("secret", "abc", "alice", "pw"); got != want {
		t.Errorf("MAC = %s, want %s", got, want)
	}
	if server := userapi.SharedSecretMAC("secret", "abc", "alice", "pw", false, nil); server != want {
		t.Errorf("the server computes %s", server)
	}
}

func TestErrKey(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&mxError{Status: 429, ErrCode: "M_LIMIT_EXCEEDED"}, "429 M_LIMIT_EXCEEDED"},
		{&mxError{Status: 502}, "502"},
		{&mxError{Op: "send", Msg: "dial tcp: connect: connection refused"}, "connection refused"},
		{context.DeadlineExceeded, "timeout"},
		{errors.New("odd"), "transport error"},
	}
	for _, tt := range tests {
		if got := errKey(tt.err); got != tt.want {
			t.Errorf("errKey(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestParseMachineCPU(t *testing.T) {
	m := parseMachineCPU([]byte("cpu  1000 10 500 9000 200 5 15 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if !m.OK || m.Busy != 15.3 || m.IOWait != 2 {
		t.Errorf("parseMachineCPU = %+v", m)
	}
	if parseMachineCPU([]byte("intr 1 2 3")).OK {
		t.Error("not a cpu line: OK")
	}
}
