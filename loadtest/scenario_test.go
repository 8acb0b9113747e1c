package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestScenarioFlags(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--scenario", "nope"}, 2, "--scenario \"nope\""},
		{[]string{"--scenario", "todevice", "--rate", "0"}, 2, "needs --rate above 0"},
		{[]string{"--scenario", "claim", "--otks", "1001"}, 2, "--otks must be between 1 and 1000"},
		{[]string{"--scenario", "claim", "--duration", "0"}, 2, "needs --duration and --users above 0"},
		{[]string{"--scenario", "media", "--media-bytes", "0"}, 2, "--media-bytes"},
		{[]string{"--scenario", "search", "--messages", "0"}, 2, "--messages"},
		{[]string{"--scenario", "search", "--workers", "0"}, 2, "--workers"},
		{[]string{"--scenario", "search", "--rooms", "0"}, 2, "needs --users and --rooms"},
		{[]string{"--scenario", "media", "--initial-sync-rooms", "3"}, 2, "--initial-sync-rooms goes with --scenario messages only"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		_, code := parseLoadtestFlags(tt.args, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
	for _, args := range [][]string{
		nil,
		{"--scenario", "todevice", "--users", "100", "--rooms", "1", "--rate", "5"},
		{"--scenario", "claim", "--users", "100", "--rooms", "0"},
		{"--scenario", "media", "--workers", "4", "--rooms", "0"},
		{"--scenario", "search", "--messages", "100000"},
	} {
		o, code := parseLoadtestFlags(args, &bytes.Buffer{})
		if code != -1 {
			t.Errorf("%v: code %d", args, code)
		}
		if args == nil && (o.Scenario != "messages" || o.Workers != 1 || o.OTKs != 50 || o.MediaBytes != 1<<20 || o.Messages != 100000) {
			t.Errorf("defaults: %+v", o)
		}
	}
}

func testUsers(n int) []*ltUser {
	users := make([]*ltUser, n)
	for i := range users {
		users[i] = &ltUser{Index: i, mxSession: mxSession{UserID: fmt.Sprintf("@lt-u%d:example.org", i), DeviceID: fmt.Sprintf("DEV%d", i)}}
	}
	return users
}

func TestFanoutTracksEveryDevice(t *testing.T) {
	users := testUsers(3)
	f := newFanout(&ltUser{Index: 3, mxSession: mxSession{UserID: "@lt-sender:example.org", DeviceID: "S"}}, users)

	var body struct {
		Messages map[string]map[string]struct {
			Run string `json:"lt_run"`
			Seq int64  `json:"lt_seq"`
			Pad string `json:"ciphertext"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(f.body("run1", 42, 1), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Messages) != 3 {
		t.Fatalf("messages for %d users", len(body.Messages))
	}
	for _, u := range users {
		m, ok := body.Messages[u.UserID][u.DeviceID]
		if !ok || m.Run != "run1" || m.Seq != 42 || len(m.Pad) != ltToDevicePad {
			t.Errorf("message for %s/%s: %+v (present %v)", u.UserID, u.DeviceID, m, ok)
		}
	}

	// The syncers hand this run's to-device messages to the fan-out tracker.
	sy := &ltSyncers{runID: "run1", toDevice: f.tr}
	start := f.tr.begin(1, 0, f.sender.Index, true)
	f.tr.sent(1, true)
	resp := func(run string, seq int64, typ string) *ltSyncResponse {
		var r ltSyncResponse
		ev := ltEvent{Type: typ}
		ev.Content.Run, ev.Content.Seq = run, seq
		r.ToDevice.Events = []ltEvent{ev}
		return &r
	}
	if !sy.handle(0, resp("run1", 1, ltToDeviceType), start.Add(2*time.Millisecond)) {
		t.Error("a to-device event does not count as an event")
	}
	sy.handle(1, resp("run1", 1, ltToDeviceType), start.Add(4*time.Millisecond))
	sy.handle(1, resp("other-run", 1, ltToDeviceType), start.Add(5*time.Millisecond))
	sy.handle(2, resp("run1", 1, "m.room.encrypted"), start.Add(5*time.Millisecond))
	if f.tr.settled() {
		t.Error("settled with device 2 still waiting")
	}
	sy.handle(2, resp("run1", 1, ltToDeviceType), start.Add(9*time.Millisecond))
	if !f.tr.settled() {
		t.Error("not settled after all three devices")
	}
	s2 := f.tr.begin(2, 0, f.sender.Index, true)
	f.tr.sent(2, true)
	sy.handle(0, resp("run1", 2, ltToDeviceType), s2.Add(time.Millisecond))

	r := f.tr.result()
	if r.Expected != 6 || r.Seen != 4 || r.Lost != 1 || r.Missing != 2 || r.Duplicates != 0 || r.Unknown != 0 {
		t.Errorf("result = %+v", r)
	}
	if d := summarize(r.Latencies); d.Count != 4 || d.Max != 9 {
		t.Errorf("delivery latencies %+v", d)
	}
	// One sample per fan-out delivered to all: until its last device.
	if c := summarize(r.Completions); c.Count != 1 || c.Max != 9 {
		t.Errorf("completions %+v", c)
	}
}

func TestClaimCheck(t *testing.T) {
	users := testUsers(2)
	up := keysUploadBody(users[1], "run1", 3, 5, true)
	otks := up["one_time_keys"].(map[string]any)
	if len(otks) != 5 {
		t.Fatalf("%d one-time keys", len(otks))
	}
	dk := up["device_keys"].(map[string]any)
	if dk["user_id"] != users[1].UserID || dk["device_id"] != users[1].DeviceID || dk["signatures"] == nil {
		t.Errorf("device keys %v", dk)
	}
	if _, ok := keysUploadBody(users[0], "run1", 4, 1, false)["device_keys"]; ok {
		t.Error("device keys in a refill")
	}
	values := map[string]bool{}
	for _, u := range users {
		for r := 0; r < 3; r++ {
			for i := 0; i < 4; i++ {
				v := otkValue(u.Index, otkID("run1", r, i))
				if values[v] || len(v) < 43 {
					t.Errorf("key value %q repeated or short", v)
				}
				values[v] = true
			}
		}
	}

	key := func(u *ltUser, id string) map[string]json.RawMessage {
		raw, _ := json.Marshal(map[string]string{"key": otkValue(u.Index, id)})
		return map[string]json.RawMessage{id: raw}
	}
	answer := func(keys0, keys1 map[string]json.RawMessage) *ltClaimAnswer {
		a := &ltClaimAnswer{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
		if keys0 != nil {
			a.OneTimeKeys[users[0].UserID] = map[string]map[string]json.RawMessage{users[0].DeviceID: keys0}
		}
		if keys1 != nil {
			a.OneTimeKeys[users[1].UserID] = map[string]map[string]json.RawMessage{users[1].DeviceID: keys1}
		}
		return a
	}
	c := newClaimCheck(users)
	id0, id1 := otkID("run1", 0, 0), otkID("run1", 0, 1)
	c.check(users, answer(key(users[0], id0), key(users[1], id0)))
	c.check(users, answer(key(users[0], id1), nil))                // user 1 got no key
	c.check(users, answer(key(users[0], id1), key(users[0], id1))) // twice; and user 0's key for user 1
	var r ltClaimReport
	c.fill(&r)
	if r.KeysClaimed != 5 || r.DistinctKeys != 3 || r.MissingKeys != 1 || r.Duplicates != 2 || r.WrongKeys != 1 {
		t.Errorf("claim check %+v", r)
	}

	want := claimBody(users)["one_time_keys"].(map[string]map[string]string)
	if len(want) != 2 || want[users[1].UserID][users[1].DeviceID] != ltOTKAlg {
		t.Errorf("claim body %v", want)
	}
}

func TestMediaHelpers(t *testing.T) {
	base := bytes.Repeat([]byte{0xAB}, 1000)
	a, b := mediaContent(base, 1, "run1"), mediaContent(base, 2, "run1")
	if bytes.Equal(a, b) || !bytes.Equal(a, mediaContent(base, 1, "run1")) || len(a) != 1000 || !bytes.Equal(a[16:], base[16:]) {
		t.Error("files must differ by number, be reproducible and keep the base after 16 bytes")
	}
	if base[0] != 0xAB {
		t.Error("mediaContent changed the base")
	}
	if got := mediaContent([]byte{1, 2, 3}, 5, "run1"); len(got) != 3 {
		t.Errorf("tiny file grew to %d bytes", len(got))
	}
	for _, tt := range []struct {
		uri, server, id string
		ok              bool
	}{
		{"mxc://localhost/abcDEF123", "localhost", "abcDEF123", true},
		{"mxc://example.org:8448/x", "example.org:8448", "x", true},
		{"https://localhost/x", "", "", false},
		{"mxc://localhost/", "", "", false},
		{"mxc://localhost/a/b", "", "", false},
	} {
		s, id, ok := parseMXC(tt.uri)
		if ok != tt.ok || (ok && (s != tt.server || id != tt.id)) {
			t.Errorf("parseMXC(%q) = %q, %q, %v", tt.uri, s, id, ok)
		}
	}
}

func TestSearchFill(t *testing.T) {
	rare, common := searchTerms("0a9f12cd")
	if rare != "zraregqpvhist" || common != "zcommongqpvhist" {
		t.Errorf("terms %q, %q", rare, common)
	}
	for _, term := range []string{rare, common} {
		if strings.ContainsAny(strings.TrimLeft(term, "abcdefghijklmnopqrstuvwxyz"), "0123456789-") {
			t.Errorf("term %q has more than letters", term)
		}
	}
	if letterTag("0a9f") != "gqpv" {
		t.Errorf("letterTag = %q", letterTag("0a9f"))
	}
	const n = 12345
	var rareN, commonN int
	freq := map[string]int{}
	for seq := 0; seq < n; seq++ {
		body := fillBody("0a9f12cd", seq)
		words := strings.Fields(body)
		for _, w := range words {
			switch w {
			case rare:
				rareN++
			case common:
				commonN++
			default:
				freq[w]++
			}
		}
		if body != fillBody("0a9f12cd", seq) {
			t.Fatal("fillBody is not reproducible")
		}
	}
	if rareN != termCount(n, ltRareEvery, 7) || rareN != 13 {
		t.Errorf("rare term in %d messages, termCount %d", rareN, termCount(n, ltRareEvery, 7))
	}
	if commonN != termCount(n, ltCommonEvery, 3) || commonN != 1235 {
		t.Errorf("common term in %d messages, termCount %d", commonN, termCount(n, ltCommonEvery, 3))
	}
	if termCount(7, 1000, 7) != 0 || termCount(8, 1000, 7) != 1 {
		t.Error("termCount at the edge")
	}
	// Zipf-like: the first word is far more frequent than a late one, and the vocabulary is wide.
	if freq[vocabWord(0)] < 10*freq[vocabWord(1500)] || len(freq) < 1000 {
		t.Errorf("word 0 ×%d, word 1500 ×%d, %d distinct words", freq[vocabWord(0)], freq[vocabWord(1500)], len(freq))
	}
	if vocabWord(0) == vocabWord(400) || vocabWord(1999) == vocabWord(0) {
		t.Error("vocabulary words repeat")
	}
	b, _ := json.Marshal(searchBody(rare, "recent", "!r:example.org"))
	for _, want := range []string{`"search_term":"` + rare + `"`, `"order_by":"recent"`, `"rooms":["!r:example.org"]`, `"before_limit":1`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("search body %s lacks %s", b, want)
		}
	}
}

func TestClosedLoop(t *testing.T) {
	var calls atomic.Int64
	seen := make([]atomic.Bool, 1000)
	closedLoop(t.Context(), 4, time.Hour, func(ctx context.Context, w int, seq int64) bool {
		if seq >= 100 {
			return false
		}
		if seen[seq].Swap(true) {
			t.Errorf("sequence number %d twice", seq)
		}
		calls.Add(1)
		return true
	})
	if calls.Load() != 100 {
		t.Errorf("%d calls before every worker stopped", calls.Load())
	}
	start := time.Now()
	closedLoop(t.Context(), 2, 30*time.Millisecond, func(ctx context.Context, w int, seq int64) bool {
		time.Sleep(time.Millisecond)
		return true
	})
	if d := time.Since(start); d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("a 30 ms loop took %s", d)
	}
}

func TestOpReport(t *testing.T) {
	st := newOpStats()
	st.record(2*time.Millisecond, nil)
	st.record(4*time.Millisecond, nil)
	st.record(time.Millisecond, &mxError{Status: 404, ErrCode: "M_UNRECOGNIZED"})
	r := opReport(st, 2)
	if r.OK != 2 || r.Failed != 1 || r.PerSecond != 1 || r.Latency.P50 != 2 || r.Errors["404 M_UNRECOGNIZED"] != 1 {
		t.Errorf("opReport = %+v", r)
	}
	if s := fmtOp(r); !strings.Contains(s, "2 OK (1.0/s), 1 failed") || !strings.Contains(s, "errors: 404 M_UNRECOGNIZED ×1") {
		t.Errorf("fmtOp = %q", s)
	}
}

func TestServerReportPerOperation(t *testing.T) {
	e := &ltEnv{probe: newProbe("", 4242)}
	w := &ltWindow{s0: ltServerSample{HasProc: true, ProcCPU: 10}, s1: ltServerSample{HasProc: true, ProcCPU: 12}}
	sv := e.serverReport(ltServerSample{}, w, ltPeaks{}, ltWork{Window: 4, Ops: 100, Unit: "message", Deliveries: 900}, 10)
	if sv.CPUMsPerMessage == nil || *sv.CPUMsPerMessage != 20 || sv.CPUMsPerOp != nil || sv.Unit != "" || *sv.CPUPercent != 50 {
		t.Errorf("messages: %+v", sv)
	}
	sv = e.serverReport(ltServerSample{}, w, ltPeaks{}, ltWork{Window: 4, Ops: 50, Unit: "search"}, 0)
	if sv.CPUMsPerOp == nil || *sv.CPUMsPerOp != 40 || sv.Unit != "search" || sv.CPUMsPerMessage != nil {
		t.Errorf("search: %+v", sv)
	}
	var b bytes.Buffer
	writeServer(func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }, sv)
	if !strings.Contains(b.String(), "40.000 ms per search") {
		t.Errorf("server text: %s", b.String())
	}
}

func TestScenarioReports(t *testing.T) {
	rep := newReport(ltOptions{HS: "http://127.0.0.1:8008", Users: 100, Rooms: 1, Rate: 5, Duration: 20 * time.Second,
		Scenario: "todevice", Prefix: "lt"}, time.Unix(0, 0))
	all := summarize(durations(10, 20, 30))
	rep.Load = &ltLoadReport{Mode: "todevice", Targets: 100, WindowSeconds: 20, Sent: 100, DeliveriesWanted: 10000, DeliveriesSeen: 10000,
		DeliveryLatency: summarize(durations(5, 6, 7)), AllDelivered: &all}
	var b bytes.Buffer
	rep.writeText(&b)
	for _, want := range []string{"scenario todevice: 100 users (one device each) in 1 rooms, 5 fan-outs/s",
		"To-device fan-out to 100 devices", "until all 100 had it", "p99 30.00 ms", "FAN-OUTS NOT DELIVERED TO ALL 0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("todevice text lacks %q:\n%s", want, b.String())
		}
	}

	rep = newReport(ltOptions{HS: "http://127.0.0.1:8008", Users: 100, Duration: 20 * time.Second, Scenario: "claim", Workers: 2, OTKs: 50, Prefix: "lt"}, time.Unix(0, 0))
	rep.Claim = &ltClaimReport{Devices: 100, Workers: 2, OTKsPerRound: 50, WindowSeconds: 20, Duplicates: 1, KeysClaimed: 100}
	rep.Media = &ltMediaReport{Bytes: 1 << 20, Workers: 2, Upload: ltMediaPhase{Seconds: 10, MiBPerSecond: 50.5}}
	rep.Search = &ltSearchReport{Cases: []ltSearchCase{{Name: "rare term, recent", Term: "zrarex", Expected: 100, Count: 100, Results: 10}}}
	if rep.integrityFailures() != 1 || rep.windowSeconds() != 20 {
		t.Errorf("integrity failures %d, window %v", rep.integrityFailures(), rep.windowSeconds())
	}
	b.Reset()
	rep.writeText(&b)
	for _, want := range []string{"scenario claim: /keys/claim of 100 devices at once, 50 one-time keys", "HANDED OUT TWICE 1",
		"upload   10.0 s: 50.5 MiB/s", `rare term, recent    "zrarex" in 100 messages; count 100, 10 results`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"scenario":"claim"`, `"duplicate_keys":1`, `"mib_per_s":50.5`, `"messages_with_term":100`} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("JSON lacks %s", want)
		}
	}
	// The messages report has none of the scenario sections.
	data, _ = json.Marshal(sampleReport())
	for _, absent := range []string{`"claim"`, `"media"`, `"search"`, `"all_delivered_latency"`, `"cpu_ms_per_op"`} {
		if bytes.Contains(data, []byte(absent)) {
			t.Errorf("messages JSON has %s", absent)
		}
	}
}
