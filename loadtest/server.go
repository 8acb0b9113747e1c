package loadtest

// Server-side figures of a load test: the server's /metrics (CPU seconds,
// DB queries, resident memory, /sync waiters) and, for a server on this
// machine, /proc/PID/stat and /proc/PID/status.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Metric names read from the server.
const (
	mCPU      = "process_cpu_seconds_total"
	mRSS      = "process_resident_memory_bytes"
	mQueries  = "haven_db_queries_total"
	mWaiters  = "haven_sync_waiters"
	mRoutines = "go_goroutines"
	mHeap     = "go_memstats_heap_inuse_bytes"
	mStack    = "go_memstats_stack_inuse_bytes"
	mIdle     = "go_memstats_heap_idle_bytes"
	mReleased = "go_memstats_heap_released_bytes"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ltProbe reads the server's figures.
type ltProbe struct {
	hc         *http.Client
	metricsURL string // "" when not given
	pid        int    // 0 when not given
}

func newProbe(metricsURL string, pid int) *ltProbe {
	if metricsURL != "" && !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(metricsURL, "http://"), "https://"), "/") {
		metricsURL += "/metrics"
	}
	return &ltProbe{hc: &http.Client{Timeout: 10 * time.Second}, metricsURL: metricsURL, pid: pid}
}

func (p *ltProbe) enabled() bool { return p.metricsURL != "" || p.pid != 0 }

func (p *ltProbe) sources() string {
	var s []string
	if p.metricsURL != "" {
		s = append(s, "metrics "+p.metricsURL)
	}
	if p.pid != 0 {
		s = append(s, fmt.Sprintf("/proc/%d", p.pid))
	}
	return strings.Join(s, " and ")
}

// ltServerSample is one reading; a figure that could not be read is absent
// from the map.
type ltServerSample struct {
	At      time.Time
	Metrics map[string]float64 // from /metrics
	ProcCPU float64            // seconds, from /proc/PID/stat
	VmRSS   int64              // bytes
	VmHWM   int64              // bytes
	HasProc bool
}

func (s ltServerSample) metric(name string) (float64, bool) {
	v, ok := s.Metrics[name]
	return v, ok
}

// cpu is the server's CPU seconds so far: /proc when read, else /metrics.
func (s ltServerSample) cpu() (float64, bool) {
	if s.HasProc {
		return s.ProcCPU, true
	}
	return s.metric(mCPU)
}

// rss is the server's resident memory: /proc when read, else /metrics.
func (s ltServerSample) rss() (float64, bool) {
	if s.HasProc {
		return float64(s.VmRSS), true
	}
	return s.metric(mRSS)
}

// sample reads everything available.
func (p *ltProbe) sample(ctx context.Context, withMetrics bool) (ltServerSample, error) {
	s := ltServerSample{At: time.Now()}
	var errs []string
	if p.pid != 0 {
		if err := readProc(p.pid, &s); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if p.metricsURL != "" && withMetrics {
		m, err := p.scrape(ctx)
		if err != nil {
			errs = append(errs, err.Error())
		}
		s.Metrics = m
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return s, nil
}

func (p *ltProbe) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", p.metricsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics %s: status %d", p.metricsURL, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return parseMetrics(body, mCPU, mRSS, mQueries, mWaiters, mRoutines, mHeap, mStack, mIdle, mReleased), nil
}

// parseMetrics reads the named metrics from the Prometheus text format,
// adding up the samples of a metric that has several label sets.
func parseMetrics(text []byte, names ...string) map[string]float64 {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !want[name] {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// readProc reads CPU time from /proc/PID/stat and VmRSS and VmHWM from
// /proc/PID/status.
func readProc(pid int, s *ltServerSample) error {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	cpu, err := parseProcStat(stat)
	if err != nil {
		return fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	rss, hwm := parseProcStatus(status)
	s.ProcCPU, s.VmRSS, s.VmHWM, s.HasProc = cpu, rss, hwm, true
	return nil
}

// parseProcStat returns utime+stime in seconds. The command name (field 2)
// may hold spaces and parentheses, so fields are counted after the last ')'.
func parseProcStat(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime %q %q", f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// parseProcStatus returns VmRSS and VmHWM in bytes (0 if absent).
func parseProcStatus(status []byte) (rss, hwm int64) {
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		if k == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
	}
	return rss, hwm
}

// ltPeaks are the highest figures seen by a memory watch: over the whole
// watch, and since mark was called (the measured window).
type ltPeaks struct {
	RSS, WindowRSS float64
	Waiters        float64
	HasRSS         bool
	HasWaiter      bool
	Samples        int
}

// ltWatch samples the server's memory in the background.
type ltWatch struct {
	mu     sync.Mutex
	peaks  ltPeaks
	marked bool
	cancel context.CancelFunc
	done   chan struct{}
}

// watch samples the server every interval until stop is called, keeping
// the peaks. With /proc available it reads only /proc, so that the watch
// adds no scrapes to the server's CPU figures.
func (p *ltProbe) watch(ctx context.Context, every time.Duration) *ltWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &ltWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s, _ := p.sample(ctx, p.pid == 0)
			w.add(s)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

func (w *ltWatch) add(s ltServerSample) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peaks.Samples++
	if v, ok := s.rss(); ok && v > 0 {
		w.peaks.RSS, w.peaks.HasRSS = max(w.peaks.RSS, v), true
		if w.marked {
			w.peaks.WindowRSS = max(w.peaks.WindowRSS, v)
		}
	}
	if v, ok := s.metric(mWaiters); ok {
		w.peaks.Waiters, w.peaks.HasWaiter = max(w.peaks.Waiters, v), true
	}
}

// mark starts the window peak, from the sample s taken at its start.
func (w *ltWatch) mark(s ltServerSample) {
	w.mu.Lock()
	w.marked = true
	w.mu.Unlock()
	w.add(s)
}

// stop ends the watch and returns the peaks.
func (w *ltWatch) stop() ltPeaks {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peaks
}

// profileURL is the address of one of the server's pprof profiles, served
// beside /metrics.
func (p *ltProbe) profileURL(name string) string {
	return strings.TrimSuffix(p.metricsURL, "/metrics") + "/debug/pprof/" + name
}

// saveProfile fetches a pprof profile from the server into a file.
func (p *ltProbe) saveProfile(ctx context.Context, name, file string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", p.profileURL(name), nil)
	if err != nil {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	hc := &http.Client{} // a CPU profile takes as long as it samples
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: status %d", name, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", name, err)
	}
	return f.Close()
}

// ltMachineCPU is the whole machine's CPU time from /proc/stat, in seconds
// summed over all cores.
type ltMachineCPU struct {
	Busy, IOWait float64
	OK           bool
}

// readMachineCPU reads the first line of /proc/stat.
func readMachineCPU() ltMachineCPU {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ltMachineCPU{}
	}
	return parseMachineCPU(data)
}

// parseMachineCPU reads "cpu user nice system idle iowait irq softirq steal ...".
func parseMachineCPU(stat []byte) ltMachineCPU {
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return ltMachineCPU{}
	}
	var v [8]float64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return ltMachineCPU{}
		}
		v[i] = float64(n) / clockTicks
	}
	// user nice system idle iowait irq softirq steal
	return ltMachineCPU{Busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], IOWait: v[4], OK: true}
}

// processesCPU adds up the CPU seconds of every process whose command name
// (/proc/PID/comm) is name, e.g. the "postgres" backends serving the
// server. Processes that exit between two readings are missed.
func processesCPU(name string) (float64, int) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0
	}
	total, n := 0.0, 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if cpu, err := parseProcStat(stat); err == nil {
			total += cpu
			n++
		}
	}
	return total, n
}
