package loadtest

// The load test's report: percentiles, the report's fields (also its JSON
// form) and the human-readable text.

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// ltSummary sums up a set of latencies, in milliseconds.
type ltSummary struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted samples: the smallest sample that at least p% of the samples are
// less than or equal to. It returns 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize sums up samples (which it does not modify).
func summarize(samples []time.Duration) ltSummary {
	if len(samples) == 0 {
		return ltSummary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return ltSummary{
		Count: len(s),
		Mean:  ms(total) / float64(len(s)),
		P50:   ms(percentile(s, 50)),
		P95:   ms(percentile(s, 95)),
		P99:   ms(percentile(s, 99)),
		Max:   ms(s[len(s)-1]),
	}
}

// Report is everything a run measured. Figures that were not measured
// are left out of the JSON.
type Report struct {
	RunID       string               `json:"run_id"`
	Started     time.Time            `json:"started"`
	Config      ltConfigReport       `json:"config"`
	Setup       ltSetupReport        `json:"setup"`
	Load        *ltLoadReport        `json:"load,omitempty"`
	Server      *ltServerReport      `json:"server,omitempty"`
	LoadGen     ltLoadGenReport      `json:"load_generator"`
	Machine     *ltMachineReport     `json:"machine,omitempty"`
	InitialSync *ltInitialSyncReport `json:"initial_sync,omitempty"`
	Claim       *ltClaimReport       `json:"claim,omitempty"`
	Media       *ltMediaReport       `json:"media,omitempty"`
	Search      *ltSearchReport      `json:"search,omitempty"`
	Notes       []string             `json:"notes,omitempty"`
	Error       string               `json:"error,omitempty"`

	noteSeen map[string]bool
}

type ltConfigReport struct {
	Scenario         string  `json:"scenario"`
	Homeserver       string  `json:"homeserver"`
	Users            int     `json:"users"`
	Rooms            int     `json:"rooms"`
	Rate             float64 `json:"rate_msgs_per_s"`
	Duration         string  `json:"duration"`
	Warmup           string  `json:"warmup"`
	Grace            string  `json:"grace"`
	Registration     string  `json:"registration"`
	Prefix           string  `json:"prefix"`
	TimelineLimit    int     `json:"timeline_limit"`
	Sync             string  `json:"sync,omitempty"` // "sliding": sliding sync instead of /sync
	SyncTimeoutMS    int64   `json:"sync_timeout_ms"`
	MaxInFlight      int     `json:"max_inflight_sends"`
	InitialSyncRooms int     `json:"initial_sync_rooms,omitempty"`
	Workers          int     `json:"workers,omitempty"`
	OTKs             int     `json:"otks_per_round,omitempty"`
	MediaBytes       int     `json:"media_bytes,omitempty"`
	Messages         int     `json:"messages,omitempty"`
}

type ltSetupReport struct {
	Layout             string   `json:"layout"`
	Registered         int      `json:"accounts_registered"`
	LoggedIn           int      `json:"accounts_logged_in"`
	AccountsSeconds    float64  `json:"accounts_seconds"`
	RoomsCreated       int      `json:"rooms_created"`
	RoomsReused        int      `json:"rooms_reused"`
	RoomSizeMin        int      `json:"room_size_min"`
	RoomSizeMax        int      `json:"room_size_max"`
	RoomsSeconds       float64  `json:"rooms_seconds"`
	InitialSyncSeconds float64  `json:"initial_syncs_seconds,omitempty"`
	LongPollsOpen      int64    `json:"long_polls_open,omitempty"`
	ServerSyncWaiters  *float64 `json:"server_sync_waiters,omitempty"`
}

type ltLoadReport struct {
	Mode              string         `json:"mode"` // "messages", "idle" or "todevice"
	WindowSeconds     float64        `json:"window_seconds"`
	SendSeconds       float64        `json:"send_seconds,omitempty"`
	SettleSeconds     float64        `json:"settle_seconds,omitempty"`
	TargetRate        float64        `json:"target_rate_msgs_per_s"`
	Scheduled         int            `json:"scheduled"`
	Sent              int            `json:"sent_ok"`
	SendFailed        int            `json:"send_failed"`
	Skipped           int            `json:"skipped_inflight_cap"`
	Late              int            `json:"late_sends"`
	AchievedRate      float64        `json:"achieved_rate_msgs_per_s"`
	SendErrors        map[string]int `json:"send_errors,omitempty"`
	SendLatency       ltSummary      `json:"send_latency"`
	ScheduleLag       ltSummary      `json:"schedule_lag"`
	DeliveriesWanted  int            `json:"deliveries_expected"`
	DeliveriesSeen    int            `json:"deliveries_seen"`
	DeliveryLatency   ltSummary      `json:"delivery_latency"`
	LostMessages      int            `json:"lost_messages"`
	MissingDeliveries int            `json:"missing_deliveries"`
	LostExamples      []int64        `json:"lost_examples,omitempty"`
	Duplicates        int            `json:"duplicate_deliveries"`
	AfterFailure      int            `json:"delivered_after_send_error"`
	UnknownEvents     int            `json:"unknown_events"`
	Syncs             int64          `json:"syncs_completed"`
	SyncsEmpty        int64          `json:"syncs_without_events"`
	LimitedTimelines  int64          `json:"limited_timelines"`
	SyncErrors        map[string]int `json:"sync_errors,omitempty"`
	LongPollsAtEnd    int64          `json:"long_polls_open_at_end"`
	// todevice: the devices of each fan-out, and the latency until the
	// last of them had it (one sample per fan-out delivered to all).
	Targets      int        `json:"targets,omitempty"`
	AllDelivered *ltSummary `json:"all_delivered_latency,omitempty"`

	scheduleSeconds float64 // the schedule's length (--duration)
}

type ltServerReport struct {
	Sources             string   `json:"sources"`
	CPUSeconds          *float64 `json:"cpu_seconds,omitempty"`
	CPUPercent          *float64 `json:"cpu_percent_of_one_core,omitempty"`
	CPUMsPerMessage     *float64 `json:"cpu_ms_per_message,omitempty"`
	CPUMsPerDelivery    *float64 `json:"cpu_ms_per_delivery,omitempty"`
	DBQueries           *float64 `json:"db_queries,omitempty"`
	DBQueriesPerMessage *float64 `json:"db_queries_per_message,omitempty"`
	DBQueriesPerSync    *float64 `json:"db_queries_per_sync,omitempty"`
	RSSBeforeMiB        *float64 `json:"rss_before_mib,omitempty"`
	RSSPeakMiB          *float64 `json:"rss_peak_mib,omitempty"`
	RSSWindowPeakMiB    *float64 `json:"rss_window_peak_mib,omitempty"`
	RSSAfterMiB         *float64 `json:"rss_after_mib,omitempty"`
	RSSPerLongPollKiB   *float64 `json:"rss_per_long_poll_kib,omitempty"`
	VmHWMMiB            *float64 `json:"vm_hwm_mib,omitempty"`
	SyncWaitersPeak     *float64 `json:"sync_waiters_peak,omitempty"`
	Goroutines          *float64 `json:"goroutines_after,omitempty"`
	HeapInuseMiB        *float64 `json:"go_heap_inuse_mib_after,omitempty"`
	StackInuseMiB       *float64 `json:"go_stack_inuse_mib_after,omitempty"`
	HeapUnreturnedMiB   *float64 `json:"go_heap_idle_unreleased_mib_after,omitempty"`
	// Scenarios other than room messages: figures per operation (Unit).
	Unit           string   `json:"per_unit,omitempty"`
	CPUMsPerOp     *float64 `json:"cpu_ms_per_op,omitempty"`
	DBQueriesPerOp *float64 `json:"db_queries_per_op,omitempty"`
	Problems       []string `json:"problems,omitempty"`
}

type ltLoadGenReport struct {
	WindowCPUSeconds float64 `json:"window_cpu_seconds"`
	WindowCPUPercent float64 `json:"window_cpu_percent_of_one_core"`
	TotalCPUSeconds  float64 `json:"total_cpu_seconds"`
	TotalSeconds     float64 `json:"total_seconds"`
}

// ltMachineReport is the whole machine's CPU during the measured window.
type ltMachineReport struct {
	Cores         int      `json:"cores"`
	BusySeconds   float64  `json:"busy_cpu_seconds"`
	IOWaitSeconds float64  `json:"iowait_seconds"`
	OthersSeconds *float64 `json:"other_processes_cpu_seconds,omitempty"`
	// With --db-process: the database's processes (also left out of OthersSeconds).
	DBProcess      string   `json:"db_process,omitempty"`
	DBProcesses    int      `json:"db_processes,omitempty"`
	DBSeconds      *float64 `json:"db_cpu_seconds,omitempty"`
	DBMsPerMessage *float64 `json:"db_cpu_ms_per_message,omitempty"`
	Unit           string   `json:"per_unit,omitempty"`
	DBMsPerOp      *float64 `json:"db_cpu_ms_per_op,omitempty"`
}

type ltInitialSyncReport struct {
	User            string    `json:"user"`
	Rooms           int       `json:"rooms"`
	RoomsJoinedLoad int       `json:"rooms_shared_with_load_users"`
	RoomsOwn        int       `json:"rooms_of_its_own"`
	Filter          string    `json:"filter"`
	RoomsInResponse int       `json:"rooms_in_response"`
	FirstMS         float64   `json:"first_ms"`
	Repeats         int       `json:"repeats"`
	Latency         ltSummary `json:"latency"`
	SizeMinBytes    int       `json:"size_min_bytes"`
	SizeMaxBytes    int       `json:"size_max_bytes"`
}

func fp(v float64) *float64 { return &v }

// note adds a note once.
func (r *Report) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if r.noteSeen == nil {
		r.noteSeen = map[string]bool{}
	}
	if !r.noteSeen[s] {
		r.noteSeen[s] = true
		r.Notes = append(r.Notes, s)
	}
}

// writeText prints the report for a person.
func (r *Report) writeText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	c := r.Config
	p("Haven load test %s — %s, started %s", r.RunID, c.Homeserver, r.Started.Format(time.RFC3339))
	if c.Scenario == "" || c.Scenario == "messages" {
		p("  %d users, %d rooms, %s msg/s for %s (warm-up %s, grace %s), %s registration, prefix %q",
			c.Users, c.Rooms, trimFloat(c.Rate), c.Duration, c.Warmup, c.Grace, c.Registration, c.Prefix)
		if c.Sync == "sliding" {
			p("  each user holds a sliding sync long-poll (one list, ranges [[0,19]], timeline_limit %d), not /sync", c.TimelineLimit)
		}
	} else {
		p("  scenario %s: %s", c.Scenario, c.scenarioLine())
	}
	s := r.Setup
	p("Setup")
	p("  accounts    %d registered, %d logged in again, in %.2f s", s.Registered, s.LoggedIn, s.AccountsSeconds)
	if c.Rooms > 0 && c.Users > 0 && s.Layout != "" {
		p("  rooms       %d created, %d reused (found by alias), %d-%d members, in %.2f s", s.RoomsCreated, s.RoomsReused, s.RoomSizeMin, s.RoomSizeMax, s.RoomsSeconds)
		p("  layout      %s", s.Layout)
	}
	if s.InitialSyncSeconds > 0 {
		line := fmt.Sprintf("  long-polls  %d initial syncs in %.2f s; %d long-polls open", c.Users, s.InitialSyncSeconds, s.LongPollsOpen)
		if s.ServerSyncWaiters != nil {
			line += fmt.Sprintf(" (server haven_sync_waiters: %s)", trimFloat(*s.ServerSyncWaiters))
		}
		p("%s", line)
	}
	if l := r.Load; l != nil {
		r.writeLoad(p, l)
	}
	r.writeScenario(p)
	if sv := r.Server; sv != nil {
		writeServer(p, sv)
	}
	g := r.LoadGen
	p("Load generator (shares the machine with the server)")
	p("  CPU %.2f s in the window (%.0f%% of one core); %.2f s over the whole run of %.1f s",
		g.WindowCPUSeconds, g.WindowCPUPercent, g.TotalCPUSeconds, g.TotalSeconds)
	if m, win := r.Machine, r.windowSeconds(); m != nil && win > 0 {
		line := fmt.Sprintf("Machine (%d cores) in the window: busy %.2f CPU-s (%.0f%% of all cores), iowait %.2f s",
			m.Cores, m.BusySeconds, 100*m.BusySeconds/(float64(m.Cores)*win), m.IOWaitSeconds)
		if m.OthersSeconds != nil {
			line += fmt.Sprintf("; other processes %.2f CPU-s", *m.OthersSeconds)
		}
		p("%s", line)
		if m.DBSeconds != nil {
			line := fmt.Sprintf("  database (%d %q processes): %.2f CPU-s", m.DBProcesses, m.DBProcess, *m.DBSeconds)
			if m.DBMsPerMessage != nil {
				line += fmt.Sprintf(", %.3f ms per message", *m.DBMsPerMessage)
			}
			if m.DBMsPerOp != nil {
				line += fmt.Sprintf(", %.3f ms per %s", *m.DBMsPerOp, m.Unit)
			}
			p("%s", line)
		}
	}
	if is := r.InitialSync; is != nil {
		p("Initial /sync of %s in %d rooms (%d shared with load users, %d of its own), filter %s", is.User, is.Rooms, is.RoomsJoinedLoad, is.RoomsOwn, is.Filter)
		p("  first %.1f ms; then %d warm: %s", is.FirstMS, is.Repeats, fmtSummary(is.Latency))
		p("  response %d-%d bytes, %d rooms in it", is.SizeMinBytes, is.SizeMaxBytes, is.RoomsInResponse)
	}
	if len(r.Notes) > 0 {
		p("Notes")
		for _, n := range r.Notes {
			p("  - %s", n)
		}
	}
	if r.Error != "" {
		p("ERROR: %s", r.Error)
	}
}

func (r *Report) writeLoad(p func(string, ...any), l *ltLoadReport) {
	switch l.Mode {
	case "idle":
		p("Idle window: %.1f s, no messages", l.WindowSeconds)
	case "todevice":
		writeToDevice(p, l)
	default:
		p("Messages: measured window %.1f s (sending %.1f s, then %.2f s until delivered or grace)", l.WindowSeconds, l.SendSeconds, l.SettleSeconds)
		p("  scheduled %d at %s msg/s; sent OK %d (%.1f msg/s), failed %d, late %d, skipped (in-flight cap) %d",
			l.Scheduled, trimFloat(l.TargetRate), l.Sent, l.AchievedRate, l.SendFailed, l.Late, l.Skipped)
		p("  send latency      %s", fmtSummary(l.SendLatency))
		p("  delivery latency  %s", fmtSummary(l.DeliveryLatency))
		p("  schedule lag      %s", fmtSummary(l.ScheduleLag))
		p("  deliveries expected %d, seen %d; LOST MESSAGES %d (missing deliveries %d)", l.DeliveriesWanted, l.DeliveriesSeen, l.LostMessages, l.MissingDeliveries)
		if l.Duplicates+l.AfterFailure+l.UnknownEvents > 0 {
			p("  duplicate deliveries %d, delivered despite a send error %d, unknown events %d", l.Duplicates, l.AfterFailure, l.UnknownEvents)
		}
		if len(l.SendErrors) > 0 {
			p("  send errors: %s", fmtCounts(l.SendErrors))
		}
	}
	p("  /sync: %d answers in the window (%d without room events), %d limited timelines, %d long-polls open at the end",
		l.Syncs, l.SyncsEmpty, l.LimitedTimelines, l.LongPollsAtEnd)
	if len(l.SyncErrors) > 0 {
		p("  sync errors: %s", fmtCounts(l.SyncErrors))
	}
}

func writeServer(p func(string, ...any), sv *ltServerReport) {
	p("Server (%s)", sv.Sources)
	if sv.CPUSeconds != nil {
		line := fmt.Sprintf("  CPU %.2f s (%.0f%% of one core)", *sv.CPUSeconds, deref(sv.CPUPercent))
		if sv.CPUMsPerMessage != nil {
			line += fmt.Sprintf("; %.3f ms per message", *sv.CPUMsPerMessage)
		}
		if sv.CPUMsPerOp != nil {
			line += fmt.Sprintf("; %.3f ms per %s", *sv.CPUMsPerOp, sv.Unit)
		}
		if sv.CPUMsPerDelivery != nil {
			line += fmt.Sprintf(", %.3f ms per delivery", *sv.CPUMsPerDelivery)
		}
		p("%s", line)
	}
	if sv.DBQueries != nil {
		line := fmt.Sprintf("  DB queries %s", trimFloat(*sv.DBQueries))
		if sv.DBQueriesPerMessage != nil {
			line += fmt.Sprintf("; %.2f per message", *sv.DBQueriesPerMessage)
		}
		if sv.DBQueriesPerOp != nil {
			line += fmt.Sprintf("; %.2f per %s", *sv.DBQueriesPerOp, sv.Unit)
		}
		if sv.DBQueriesPerSync != nil {
			line += fmt.Sprintf("; %.3f per /sync answer", *sv.DBQueriesPerSync)
		}
		p("%s", line)
	}
	var mem []string
	for _, f := range []struct {
		name string
		v    *float64
		unit string
	}{{"before long-polls", sv.RSSBeforeMiB, "MiB"}, {"peak (from the initial syncs on)", sv.RSSPeakMiB, "MiB"},
		{"peak in the window", sv.RSSWindowPeakMiB, "MiB"}, {"after", sv.RSSAfterMiB, "MiB"},
		{"VmHWM (since start)", sv.VmHWMMiB, "MiB"}, {"per long-poll (peak-before)/N", sv.RSSPerLongPollKiB, "KiB"}} {
		if f.v != nil {
			mem = append(mem, fmt.Sprintf("%s %.1f %s", f.name, *f.v, f.unit))
		}
	}
	if len(mem) > 0 {
		p("  RSS %s", strings.Join(mem, ", "))
	}
	if sv.SyncWaitersPeak != nil || sv.Goroutines != nil {
		p("  sync waiters peak %s, goroutines after %s", trimFloat(deref(sv.SyncWaitersPeak)), trimFloat(deref(sv.Goroutines)))
	}
	if sv.HeapInuseMiB != nil && sv.StackInuseMiB != nil && sv.HeapUnreturnedMiB != nil {
		p("  Go memory after: heap in use %.1f MiB, stacks %.1f MiB, idle heap not yet returned to the OS %.1f MiB",
			*sv.HeapInuseMiB, *sv.StackInuseMiB, *sv.HeapUnreturnedMiB)
	}
	for _, pr := range sv.Problems {
		p("  (could not read: %s)", pr)
	}
}

func deref(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

func fmtSummary(s ltSummary) string {
	if s.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms (n=%d)", s.P50, s.P95, s.P99, s.Max, s.Mean, s.Count)
}

// fmtCounts prints error counts, the most frequent first.
func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func trimFloat(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
